"""`prunescope demo`: the demo study end to end on built-in tiny models trained on the
synthetic facts task (``harness.runner.demo.run_demo``)."""

from harness.cli._types import at_least
from harness.runner import demo as _demo


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the demo study on built-in tiny models trained here "
                                    "(offline; about 3 minutes once the models are trained)")
    p.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo)")
    p.add_argument("--documents", type=at_least(1), default=_demo.DOCUMENTS,
                   help=f"facts documents per system (default: {_demo.DOCUMENTS})")
    p.add_argument("--family", choices=tuple(_demo.FAMILIES), default="llama",
                   help="the summarizer family (default: llama)")
    p.add_argument("--backend", choices=("hf", "vllm"), default="hf",
                   help="generation backend (default: hf, transformers in this process)")
    p.set_defaults(func=run)


def run(args) -> int:
    result = _demo.run_demo(args.out, args.documents, args.family, backend=args.backend)
    for outcome in result.failed:
        print(f"  {outcome.key} {outcome.stage} {outcome.status}: {outcome.details.get('error', '')}")
    if result.report is None:
        print(f"demo finished with failures; see {result.run_dir}/run.log and `prunescope status {result.run_dir}`")
        return 1
    print(f"demo report: {result.report}")
    print(f"             {result.report.with_name('report.md')}")
    return 0
