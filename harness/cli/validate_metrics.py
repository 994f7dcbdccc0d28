"""`prunescope validate-metrics`: how well each hallucination metric detects the inconsistent
claims of a labelled file (``harness.runner.validate.validate_metrics``)."""

from harness.cli._types import at_least, config_field
from harness.cli.score import add_scorer_options
from harness.config import AnalysisConfig

METRICS = "harim,summac_zs"


def register(sub) -> None:
    p = sub.add_parser("validate-metrics",
                       help="score labelled (document, claim, label) records and report each "
                            "metric's AUC and balanced accuracy for detecting inconsistent claims")
    p.add_argument("--task", required=True, help="task whose definition reads the file (e.g. factcc)")
    p.add_argument("--data", required=True,
                   help="claim file: records with document, claim, label (\"1\" consistent, "
                        "\"0\" inconsistent) and optionally cut (val/test)")
    p.add_argument("--limit", type=at_least(1), default=None, help="read only the first N records")
    p.add_argument("--out", default=None, help="folder to write (default: validate-metrics-<task>)")
    p.add_argument("--metrics", default=None,
                   help=f"comma-separated among harim, summac_zs, summac_conv (default: {METRICS}, "
                        "plus summac_conv when --conv-weights is given)")
    p.add_argument("--hallucinated-label", default="0", choices=["0", "1"],
                   help="the label value of an inconsistent claim (default: 0, as in FactCC)")
    p.add_argument("--bootstrap", type=config_field(AnalysisConfig, "bootstrap"), default=1000, help="bootstrap resamples for the CIs")
    p.add_argument("--seed", type=int, default=0)
    add_scorer_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from harness.cli.score import scoring_config
    from harness.runner.validate import describe, validate_metrics

    if args.metrics is None:
        args.metrics = METRICS + (",summac_conv" if args.conv_weights else "")
    result = validate_metrics(args.task, args.data, scoring_config(args),
                              args.out or f"validate-metrics-{args.task}", limit=args.limit,
                              hallucinated_label=args.hallucinated_label, n_boot=args.bootstrap,
                              seed=args.seed, allow_downloads=args.allow_downloads)
    print(describe(result))
    return 0
