"""Generation throughput: output tokens/s of vLLM and transformers on the same prompts.

Both backends get the same token-id prompts (the demo task under prompt A, rendered once)
and generate greedily; each is timed after a warm-up call, best of ``--repeat``. On a GPU
transformers runs in bf16 (as does vLLM); where vLLM is not installed, or cannot start,
the benchmark says so and measures transformers alone.

    .venv/bin/python benchmarks/generation.py [--model DIR] [--docs 32] [--max-new-tokens 64]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def throughput(backend, prompts: list[list[int]], repeat: int) -> tuple[float, int]:
    """Best output tokens/s over ``repeat`` runs, and the tokens generated per run."""
    backend.generate(prompts[:2])  # warm-up: lazy initialisation, kernel selection
    best, tokens = 0.0, 0
    for _ in range(repeat):
        start = time.perf_counter()
        outputs = backend.generate(prompts)
        elapsed = time.perf_counter() - start
        tokens = sum(len(o.token_ids) for o in outputs)
        best = max(best, tokens / elapsed)
    return best, tokens


def main() -> None:
    import torch
    from transformers import AutoConfig, AutoTokenizer

    from harness.config import GenerationConfig
    from harness.generation.backends import HFBackend, VLLMBackend, start_vllm, stop_token_ids
    from harness.generation.prompts import prompt_template, resolve_layout
    from harness.generation.truncation import fit_prompt
    from harness.tiny_models import tiny_model
    from tasks import load_task

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint directory (default: the tiny llama)")
    parser.add_argument("--docs", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16, help="transformers batch size")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    gpu = torch.cuda.is_available()
    model = args.model or tiny_model("llama")
    dtype = "bfloat16" if gpu else "float32"
    config = GenerationConfig(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                              engine={"dtype": dtype, "enforce_eager": not gpu})
    tokenizer = AutoTokenizer.from_pretrained(model)
    layout = resolve_layout(tokenizer, AutoConfig.from_pretrained(model).model_type)
    stop_ids = stop_token_ids(model, tokenizer)
    hf = HFBackend(model, tokenizer, config, stop_ids)
    template = prompt_template("A")
    prompts = [fit_prompt(tokenizer, template, r.document, layout, hf.context_length,
                          args.max_new_tokens, r.id).ids
               for r in load_task("demo", limit=args.docs).records]
    print(f"model={model} device={'cuda' if gpu else 'cpu'} dtype={dtype} prompts={len(prompts)} "
          f"mean prompt tokens={sum(map(len, prompts)) / len(prompts):.0f} "
          f"max_new_tokens={args.max_new_tokens} best of {args.repeat}")

    hf_rate, hf_tokens = throughput(hf, prompts, args.repeat)
    print(f"transformers (batch {args.batch_size}): {hf_rate:8.1f} output tokens/s ({hf_tokens} tokens)")
    del hf
    if importlib.util.find_spec("vllm") is None:
        print("vLLM is not installed here: measured transformers alone")
        return
    try:
        vllm = VLLMBackend(start_vllm(model, config.engine, config.seed), config, stop_ids)
    except Exception as exc:  # noqa: BLE001 - e.g. a CPU-only vLLM build on a GPU machine
        print(f"vLLM could not start ({type(exc).__name__}: {exc}): measured transformers alone")
        return
    vllm_rate, vllm_tokens = throughput(vllm, prompts, args.repeat)
    print(f"vLLM (one call):          {vllm_rate:8.1f} output tokens/s ({vllm_tokens} tokens)")
    print(f"ratio vLLM / transformers: {vllm_rate / hf_rate:.2f}x")


if __name__ == "__main__":
    main()
