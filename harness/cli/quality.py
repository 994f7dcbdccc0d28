"""`prunescope quality`: lm-eval tasks and standard-corpus perplexity of one checkpoint (a thin
layer over ``harness.quality.stage.evaluate_checkpoint``)."""

from harness.cli._types import config_field
from harness.config import QualityConfig


def register(sub) -> None:
    p = sub.add_parser("quality", help="zero-shot accuracy (lm-eval) and standard-corpus perplexity of a checkpoint")
    p.add_argument("--model", required=True, help="checkpoint directory")
    p.add_argument("--task", action="append", default=[],
                   help="an lm-eval task name (boolq, arc_easy, ...) or a local task YAML file; repeat")
    p.add_argument("--corpus", action="append", default=[], metavar="NAME[=PATH]",
                   help="wikitext2 or c4, from PATH (JSON/JSONL/parquet/save_to_disk folder) or the datasets cache; repeat")
    p.add_argument("--backend", default="hf", choices=("hf", "vllm"))
    p.add_argument("--dtype", default="auto", help="auto (bf16 on a GPU, the checkpoint's own on the CPU), float32, ...")
    p.add_argument("--batch-size", type=config_field(QualityConfig, "batch_size"), default=8)
    p.add_argument("--num-fewshot", type=config_field(QualityConfig, "num_fewshot"), default=None)
    p.add_argument("--limit", type=config_field(QualityConfig, "limit"), default=None, help="documents per task (smoke runs only)")
    p.add_argument("--seqlen", type=config_field(QualityConfig, "seqlen"), default=None, help="perplexity window (default: the model's context, at most 2048)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None, help="folder for quality.json (default: the checkpoint directory)")
    p.set_defaults(func=run)


def run(args) -> int:
    from harness.config import CorpusConfig, QualityConfig
    from harness.errors import PrunescopeError
    from harness.quality.corpora import CORPORA
    from harness.quality.stage import evaluate_checkpoint
    from harness.quality.zero_shot import LMEvalSettings

    corpora = []
    for name, _, path in (c.partition("=") for c in args.corpus):
        if name not in CORPORA:
            raise PrunescopeError(f"--corpus: unknown corpus {name!r}; choose from {', '.join(CORPORA)}")
        corpora.append(CorpusConfig(name=name, path=path or None))
    config = QualityConfig(tasks=args.task, corpora=corpora, seqlen=args.seqlen)
    settings = LMEvalSettings(backend=args.backend, dtype=args.dtype, batch_size=args.batch_size,
                              num_fewshot=args.num_fewshot, limit=args.limit, device=args.device)
    print(evaluate_checkpoint(args.model, config, settings, args.out).model_dump_json(indent=1))
    return 0
