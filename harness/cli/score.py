"""`prunescope score`: score one generations file against its task's documents (metric
choices from ``harness.scoring.registry``)."""

from harness.cli._types import config_field
from harness.config import ScoringConfig
from harness.scoring import registry


def register(sub) -> None:
    p = sub.add_parser("score", help="score a generations JSONL (HaRiM+, SummaC, ROUGE, "
                                     "overlap) into a parquet")
    p.add_argument("--generations", required=True, help="a generations JSONL (one GenerationRecord per line)")
    p.add_argument("--task", required=True, help="task name (its documents are the sources)")
    p.add_argument("--data", default=None, help="local data file for the task")
    every = ",".join(registry.names())
    p.add_argument("--metrics", default=every, help=f"comma-separated, of {every} (default: all)")
    p.add_argument("--out", required=True, help="parquet file to write")
    add_scorer_options(p)
    p.set_defaults(func=run)


def add_scorer_options(p) -> None:
    """The scorer-model options shared with `validate-metrics`."""
    p.add_argument("--harim-model", default=None, help="seq2seq scorer path or hub id")
    p.add_argument("--nli-model", default=None, help="NLI model path or hub id")
    p.add_argument("--conv-weights", default=None, help="SummaC-Conv checkpoint (.bin)")
    p.add_argument("--batch-size", type=config_field(ScoringConfig, "batch_size"), default=None)
    p.add_argument("--precision", default=None, choices=["fp32", "bf16", "fp16"])
    p.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--allow-downloads", action="store_true", help="let scorer models download from the hub")


def scoring_config(args):
    """A ScoringConfig from the parsed ``--metrics`` and scorer options."""
    from pydantic import ValidationError

    from harness.config import ScoringConfig
    from harness.scoring import ScoringError

    chosen = {"metrics": [m.strip() for m in args.metrics.split(",") if m.strip()],
              "harim_model": args.harim_model, "nli_model": args.nli_model,
              "summac_conv_weights": args.conv_weights, "batch_size": args.batch_size,
              "precision": args.precision, "device": args.device}
    try:
        config = ScoringConfig(**{k: v for k, v in chosen.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ScoringError(f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']}") from None
    return config


def run(args) -> int:
    from harness.scoring import Scorers, score_cell
    from tasks import load_task

    config = scoring_config(args)
    task = load_task(args.task, data=args.data)
    sources = {r.id: r.document for r in task.records}
    references = {r.id: r.reference for r in task.records}
    frame = score_cell(args.generations, sources, references,
                       Scorers(config, allow_downloads=args.allow_downloads), args.out,
                       facts={r.id: r.facts for r in task.records})
    print(f"scored {len(frame)} summaries -> {args.out}")
    return 0
