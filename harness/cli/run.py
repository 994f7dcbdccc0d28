"""`prunescope run`: run or resume a study."""

from harness.cli._types import config_field
from harness.config import TaskConfig
from harness.runner.stages import STAGES


def register(sub) -> None:
    p = sub.add_parser("run", help="run (or resume) a study: prune, generate, score, report")
    p.add_argument("study", help="study YAML file")
    p.add_argument("--out", help="run directory (default: the study's 'out' or runs/<name>)")
    p.add_argument("--limit", type=config_field(TaskConfig, "limit"), help="documents per task (smoke runs; at least 1)")
    p.add_argument("--stage", choices=STAGES, help="run one stage only")
    p.add_argument("--executor", choices=("local", "ray"), help="override the study's executor")
    p.add_argument("--add", action="store_true",
                   help="write into a run folder made for a study of another name (or a non-empty folder)")
    p.add_argument("--dry-run", action="store_true", help="print the cells, what is cached and a disk estimate")
    p.set_defaults(func=run)


def run(args) -> int:
    from harness.config import load_study

    study = load_study(args.study)
    if args.dry_run:
        from harness.runner.status import dry_run, format_rows

        rows, estimate = dry_run(study, args.out, args.limit)
        print(format_rows(rows))
        print(f"\n{len(rows)} cells; about {estimate / 1e9:.2f} GB still to write")
        return 0
    from harness.runner.study import run_study

    result = run_study(study, args.out, limit=args.limit, stage=args.stage, executor=args.executor,
                       add=args.add)
    done, cached = result.count("done"), result.count("cached")
    print(f"{result.run_dir}: {done} stage runs done, {cached} cached, {len(result.failed)} failed")
    for reason in result.repaired:
        print(f"  damaged, moved aside and recomputed: {reason}")
    for outcome in result.failed:
        print(f"  {outcome.key} {outcome.stage} {outcome.status}: {outcome.details.get('error', '')}")
    if result.report:
        print(f"report: {result.report}")
    return 1 if result.failed else 0
