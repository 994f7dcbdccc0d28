"""`prunescope report RUN_DIR`: tables, figures, the Markdown/HTML/LaTeX report of a run and
its summaries viewer (``analysis.report.write_context``)."""

from harness.cli._types import config_field
from harness.config import AnalysisConfig


def register(sub) -> None:
    p = sub.add_parser("report", help="write report/ (Markdown, HTML, summaries viewer, LaTeX, CSV, figures) for a run directory")
    p.add_argument("run_dir", help="the run directory")
    p.add_argument("--risk", default=None,
                   help="risk-ratio definition: mean_risk, mean_score or threshold (default: the study's analysis.risk)")
    p.add_argument("--threshold", type=config_field(AnalysisConfig, "risk_threshold"), default=None, help="risk threshold of the 'threshold' definition")
    p.add_argument("--bootstrap", type=config_field(AnalysisConfig, "bootstrap"), default=None, help="bootstrap resamples (default: the study's)")
    p.add_argument("--seed", type=int, default=None, help="bootstrap seed (default: the study's)")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    import sys

    from analysis.report import report_context, write_context
    from analysis.viewer import PAGE
    from harness.errors import PrunescopeError

    if not Path(args.run_dir).is_dir():
        raise PrunescopeError(f"{args.run_dir}: no such run directory")
    ctx = report_context(args.run_dir, args.risk, args.threshold, args.bootstrap, args.seed)
    path = write_context(ctx)
    print(path.parent / "report.md")
    print(path)
    print(path.parent / PAGE)
    if ctx.risk is None:
        print("nothing could be compared: no pruned cell has scores beside its dense baseline "
              "(the report's first section lists what is missing)", file=sys.stderr)
        return 1
    return 0
