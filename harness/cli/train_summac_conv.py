"""`prunescope train-summac-conv`: train the SummaC-Conv head on labelled pairs."""

from harness.cli._types import at_least


def register(sub) -> None:
    p = sub.add_parser("train-summac-conv",
                       help="train SummaC-Conv weights from JSONL {source, summary, label 0/1}")
    p.add_argument("--pairs", required=True, help="JSONL of {source, summary, label} (1 = consistent)")
    p.add_argument("--nli-model", required=True, help="NLI model path or hub id")
    p.add_argument("--out", required=True, help="checkpoint to write (.bin); the report goes to <out>.json")
    p.add_argument("--epochs", type=at_least(1), default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def run(args) -> int:
    from harness.scoring.summac_conv import train_summac_conv

    train_summac_conv(args.pairs, args.nli_model, args.out, epochs=args.epochs, seed=args.seed,
                      device=args.device)
    return 0
