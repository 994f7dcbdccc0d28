"""`prunescope perplexity`: perplexity of a checkpoint on a local text (``harness.pruning.perplexity``)."""

from harness.cli._types import config_field
from harness.config import PerplexityConfig


def register(sub) -> None:
    p = sub.add_parser("perplexity", help="perplexity of a checkpoint on a local text, non-overlapping windows")
    p.add_argument("--model", required=True, help="checkpoint directory")
    p.add_argument("--text", required=True, help="UTF-8 text file")
    p.add_argument("--seqlen", type=config_field(PerplexityConfig, "seqlen"), default=None,
                   help="window length (default: the model's context, at most 2048)")
    p.add_argument("--max-windows", type=config_field(PerplexityConfig, "max_windows"), default=None)
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from harness.errors import read_text
    from harness.pruning.checkpoint import check_model_dir
    from harness.pruning.perplexity import perplexity

    text = read_text(args.text)
    check_model_dir(args.model)
    seqlen = args.seqlen or _context_length(args.model)
    result = perplexity(args.model, text, seqlen=seqlen, max_windows=args.max_windows)
    print(json.dumps(result))
    return 0


def _context_length(model_dir) -> int:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir).get_text_config()
    return min(getattr(config, "max_position_embeddings", 2048) or 2048, 2048)
