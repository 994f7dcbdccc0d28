"""`prunescope tiny-models`: build the tiny local test models."""


def register(sub) -> None:
    p = sub.add_parser("tiny-models", help="build tiny local models (causal LMs, BART, NLI) without any download")
    p.add_argument("--out", required=True, help="folder to write one subfolder per model into")
    p.add_argument("--only", default=None, help="comma-separated names (default: all)")
    p.set_defaults(func=run)


def run(args) -> int:
    from harness.tiny_models import NAMES, build_all

    names = tuple(args.only.split(",")) if args.only else NAMES
    for name, path in build_all(args.out, names).items():
        print(f"{name}\t{path}")
    return 0
