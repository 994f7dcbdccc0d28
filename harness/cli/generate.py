"""`prunescope generate`: summaries of a task's documents from one checkpoint
(``harness.generation.generate_cell``)."""

from harness.cli._types import at_least, config_field
from harness.config import GenerationConfig, TaskConfig
from harness.generation.prompts import INSTRUCTIONS


def register(sub) -> None:
    p = sub.add_parser("generate", help="generate summaries of a task's documents with vLLM or transformers")
    p.add_argument("--model", required=True, help="checkpoint directory")
    p.add_argument("--task", required=True, help="task name")
    p.add_argument("--data", default=None, help="local data file for the task")
    p.add_argument("--limit", type=config_field(TaskConfig, "limit"), default=None, help="first N documents")
    p.add_argument("--backend", default=GenerationConfig().backend, choices=["vllm", "hf"])
    p.add_argument("--prompt", default="A", choices=sorted(INSTRUCTIONS), help="the reference study's prompt id")
    p.add_argument("--max-new-tokens", type=config_field(GenerationConfig, "max_new_tokens"), default=None)
    p.add_argument("--max-model-len", type=at_least(1), default=None, help="context length (default: the model's)")
    p.add_argument("--dtype", default=None, help="auto (default: the checkpoint's), float32, bfloat16, float16")
    p.add_argument("--chat-family", default="auto", choices=["auto", "chat", "llama", "opt-iml", "none"])
    p.add_argument("--out", required=True, help="JSONL file to write (a .meta.json goes next to it)")
    p.set_defaults(func=run)


def run(args) -> int:
    import os
    from pathlib import Path

    from harness.config import EngineOptions
    from harness.errors import PrunescopeError
    from harness.generation import generate_cell
    from harness.models import model_identity
    from tasks import load_task

    model = Path(args.model)
    if not (model / "config.json").is_file():
        raise PrunescopeError(f"{model}: not a checkpoint directory (no config.json)")
    engine = EngineOptions(**{k: v for k, v in {"max_model_len": args.max_model_len,
                                                "dtype": args.dtype}.items() if v is not None})
    config = GenerationConfig(backend=args.backend, engine=engine,
                              **({"max_new_tokens": args.max_new_tokens} if args.max_new_tokens else {}))
    out = Path(args.out)
    identity = model_identity(model.resolve().name, model,
                              os.path.relpath(model.resolve(), out.resolve().parent))
    task = load_task(args.task, data=args.data, limit=args.limit)
    records = generate_cell(model, [(r.id, r.document) for r in task.records], args.prompt, config,
                            identity, out, chat_family=args.chat_family)
    truncated = sum(r.truncated for r in records)
    print(f"generated {len(records)} summaries ({truncated} truncated) -> {out}")
    return 0
