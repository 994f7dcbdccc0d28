"""`prunescope demo`: the demo study end to end on built-in tiny models."""

from harness.cli._types import at_least


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the demo study on tiny built-in models (offline, a few minutes)")
    p.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo)")
    p.add_argument("--documents", type=at_least(1), default=30, help="demo documents (default: 30)")
    p.add_argument("--backend", choices=("vllm", "hf"), default="vllm")
    p.set_defaults(func=run)


def run(args) -> int:
    from harness.runner.demo import run_demo

    result = run_demo(args.out, args.documents, args.backend)
    for outcome in result.failed:
        print(f"  {outcome.key} {outcome.stage} {outcome.status}: {outcome.details.get('error', '')}")
    if result.report is None:
        print(f"demo finished with failures; see {result.run_dir}/run.log and `prunescope status {result.run_dir}`")
        return 1
    print(f"demo report: {result.report}")
    print(f"             {result.report.with_name('report.md')}")
    return 0
