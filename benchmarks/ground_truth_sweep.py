"""Ground-truth hallucination and fact recall of the trained tiny Llama-style summarizer,
dense and pruned (magnitude, Wanda, SparseGPT; 50-80% unstructured, 2:4, 4:8), on the facts
task's first N held-out documents with greedy transformers generation.

Prints one line per system: hallucination rate with a 95% Wilson interval and mean fact
recall. Usage: python benchmarks/ground_truth_sweep.py [N] [seeds, e.g. 0,1,2]
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from pathlib import Path

from harness.pruning import CalibrationSpec, PruneSpec, prune_checkpoint
from harness.trained_models import summarizer_quality, trained_model


def wilson(rate: float, n: int, z: float = 1.96) -> tuple[float, float]:
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def main(n: int = 60, seeds: tuple[int, ...] = (0,)) -> None:
    dense = trained_model("summarizer-llama")
    specs = [PruneSpec(method="magnitude", sparsity=s) for s in (0.5, 0.6, 0.7, 0.8)]
    specs += [PruneSpec(method="magnitude", structure=st) for st in ("2:4", "4:8")]
    for method in ("wanda", "sparsegpt"):
        for seed in seeds:
            calibration = CalibrationSpec(source="task:facts", nsamples=16, seqlen=128, seed=seed)
            specs += [PruneSpec(method=method, sparsity=s, calibration=calibration) for s in (0.5, 0.6, 0.7, 0.8)]
            specs += [PruneSpec(method=method, structure=st, calibration=calibration) for st in ("2:4", "4:8")]
    print(f"{'system':<22} {'halluc':>7} {'95% CI':>15} {'recall':>7} {'seconds':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for spec in [None, *specs]:
            started = time.perf_counter()
            path = dense
            if spec is not None:
                path = Path(tmp) / spec.key
                prune_checkpoint(dense, spec, path, device="cpu")
            q = summarizer_quality(path, n=n)
            low, high = wilson(q["hallucination"], n)
            name = "dense" if spec is None else spec.key
            print(f"{name:<22} {q['hallucination']:7.3f} [{low:.3f}, {high:.3f}] {q['fact_recall']:7.3f} "
                  f"{time.perf_counter() - started:8.1f}", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 60,
         tuple(int(s) for s in sys.argv[2].split(",")) if len(sys.argv) > 2 else (0,))
