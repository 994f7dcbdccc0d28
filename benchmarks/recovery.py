"""Training speed and peak memory of recovery fine-tuning, LoRA vs full, on a ~12M-parameter
Llama-style model (built locally from a config; its vocabulary is the tiny models' 1024),
pruned 2:4 by magnitude, trained on pre-tokenized windows of 256 tokens, batch 4, fp32 CPU.

Each method runs in its own process, so the peak resident memory (getrusage maxrss) is its
own. Printed per method: training tokens/s (median step time, the first step left out as
warm-up), the peak RSS, its ratio to the RSS of the loaded model alone (measured in a child
that only loads it), trainable parameters, and the pruned zeros kept. The machine is shared,
so absolute speeds vary between runs; the ratios of one run compare like with like.

    .venv/bin/python benchmarks/recovery.py [STEPS]
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEQLEN, BATCH, WINDOWS = 256, 4, 32


def build(root: Path) -> Path:
    """The pruned checkpoint and the token file, under ``root``."""
    import torch
    import transformers

    from harness.pruning import PruneSpec, prune_checkpoint
    from harness.tiny_models import tiny_model

    torch.manual_seed(0)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model("llama"))
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=384, intermediate_size=1024, num_hidden_layers=6,
        num_attention_heads=12, num_key_value_heads=12, max_position_embeddings=1024)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(root / "dense")
    tokenizer.save_pretrained(root / "dense")
    prune_checkpoint(root / "dense", PruneSpec("magnitude", structure="2:4"), root / "pruned")
    ids = torch.randint(8, len(tokenizer), (WINDOWS, SEQLEN), generator=torch.Generator().manual_seed(0))
    torch.save(ids, root / "ids.pt")
    return root / "pruned"


def run_case(method: str, root: Path, steps: int) -> dict:
    import resource

    from harness.pruning import CalibrationSpec
    from harness.recovery import RecoverySpec, recover

    if method == "load":
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(root / "pruned")
        return {"rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                "params": sum(p.numel() for p in model.parameters())}
    spec = RecoverySpec(method, steps=steps, lr=1e-4, batch_size=BATCH, save_every=steps,
                        data=CalibrationSpec(source=str(root / "ids.pt"), nsamples=WINDOWS, seqlen=SEQLEN))
    times, last = [], [time.perf_counter()]

    def tick(step, loss):
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    last[0] = time.perf_counter()
    report = recover(root / "pruned", spec, root / method, progress=False, on_step=tick)
    step_s = statistics.median(times[1:])
    return {"tokens_per_s": BATCH * SEQLEN / step_s, "step_s": step_s,
            "peak": report["timing"]["peak_memory_bytes"], "trainable": report["trainable_parameters"],
            "zeros": report["pruned_zeros"], "loss": [report["loss_before"], report["loss_after"]]}


def main() -> int:
    if len(sys.argv) == 4:
        print(json.dumps(run_case(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]))))
        return 0
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    with tempfile.TemporaryDirectory(prefix="bench-recovery-") as tmp:
        root = Path(tmp)
        build(root)
        load = _child("load", root, steps)
        mib = 2**20
        print(f"model: {load['params'] / 1e6:.1f}M params ({load['params'] * 4 / mib:.0f} MiB fp32), 2:4 magnitude; "
              f"RSS after loading it alone: {load['rss'] / mib:.0f} MiB")
        print(f"{'method':6} {'tokens/s':>9} {'step s':>7} {'peak RSS MiB':>12} {'x load':>7} {'trainable':>10} "
              f"{'zeros kept':>19} {'loss before->after':>19}")
        speeds = {}
        for method in ("lora", "full"):
            r = _child(method, root, steps)
            speeds[method] = r["tokens_per_s"]
            zeros = f"{r['zeros']['still_zero']}/{r['zeros']['pruned']}"
            print(f"{method:6} {r['tokens_per_s']:9.0f} {r['step_s']:7.2f} {r['peak'] / mib:12.0f} "
                  f"{r['peak'] / load['rss']:7.2f} {r['trainable']:10d} {zeros:>19} "
                  f"{r['loss'][0]:8.3f} -> {r['loss'][1]:.3f}", flush=True)
        print(f"LoRA trains at {speeds['lora'] / speeds['full']:.2f}x the tokens/s of full fine-tuning")
    return 0


def _child(method: str, root: Path, steps: int) -> dict:
    proc = subprocess.run([sys.executable, __file__, method, str(root), str(steps)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{method} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    sys.exit(main())
