"""Time and memory of each pruning method x structure on a ~100M-parameter Llama-style model
built locally from a config (no download), with 16 calibration samples of 256 tokens.

Each case runs in its own process, so its peak resident memory (getrusage maxrss) is its own.
For each it prints the wall time of ``prune``, its ratio to one plain forward pass over the
same calibration samples (measured in the same process, right before), and the peak memory.
Targets: Wanda <= 3x a forward pass; peak <= model + one block's working set + activations.

    .venv/bin/python benchmarks/pruning.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

CASES = [(m, s) for m in ("magnitude", "wanda", "sparsegpt") for s in ("unstructured", "2:4")] + [("wanda", "owl")]
NSAMPLES, SEQLEN, BATCH = 16, 256, 8


def build_model():
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=16000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
        num_attention_heads=12, num_key_value_heads=12, max_position_embeddings=1024,
        tie_word_embeddings=True)
    return transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


def run_case(method: str, structure: str) -> dict:
    import resource

    import torch

    from harness.pruning import OWLSpec, PruneSpec, prune

    model = build_model()
    ids = torch.randint(0, 16000, (NSAMPLES, SEQLEN), generator=torch.Generator().manual_seed(0))
    forward_s = min(_forward_time(model, ids) for _ in range(2))  # the machine is shared: take the quieter
    rss_after_forward = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result = {"params": sum(p.numel() for p in model.parameters()), "forward_s": forward_s,
              "rss_after_forward": rss_after_forward}
    if method != "forward":
        owl = OWLSpec() if structure == "owl" else None
        spec = PruneSpec(method=method, structure="unstructured" if owl else structure, owl=owl)
        report = prune(model, spec, ids, batch_size=BATCH)
        result.update(prune_s=report["wall_time_s"], peak=report["peak_memory_bytes"],
                      sparsity=report["measured_sparsity"])
    return result


def _forward_time(model, ids) -> float:
    import torch

    with torch.no_grad():
        start = time.perf_counter()
        for chunk in torch.split(ids, BATCH):
            model(input_ids=chunk, use_cache=False)
        return time.perf_counter() - start


def main() -> int:
    if len(sys.argv) == 3:
        print(json.dumps(run_case(sys.argv[1], sys.argv[2])))
        return 0
    print(f"{'method':10} {'structure':12} {'prune s':>8} {'forward s':>9} {'ratio':>6} {'peak RSS MiB':>12} {'sparsity':>8}")
    base = _child("forward", "-")
    print(f"{'(forward)':10} {'-':12} {'':>8} {base['forward_s']:9.2f} {'':>6} {base['rss_after_forward'] / 2**20:12.0f}"
          f"   model {base['params'] / 1e6:.1f}M params = {base['params'] * 4 / 2**20:.0f} MiB fp32")
    for method, structure in CASES:
        r = _child(method, structure)
        print(f"{method:10} {structure:12} {r['prune_s']:8.2f} {r['forward_s']:9.2f} {r['prune_s'] / r['forward_s']:6.2f}"
              f" {r['peak'] / 2**20:12.0f} {r['sparsity']:8.4f}", flush=True)
    return 0


def _child(method: str, structure: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, method, structure], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{method} {structure} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    sys.exit(main())
