"""Held-out perplexity of structured pruning (L0, Bonsai, the unit-norm baseline) beside Wanda
2:4 and the dense model, all at one share of prunable parameters, with each method's pruning
wall time measured in this one process (ratios side by side; the machine may be shared).

Calibration (and L0's gate training) uses the first half of a task's documents, perplexity the
second half. The structured methods all prune to the same standard shape (the same kept units
in every block); Wanda 2:4 zeros half of every block Linear's weights (same share, same shape).

    .venv/bin/python benchmarks/structured_quality.py [--model PATH] [--task demo | --documents FILE.jsonl]
        [--sparsity 0.5] [--out DIR]

The default model is the tiny Llama with random weights: its perplexities sit near the
vocabulary size, so only a trained model's numbers say anything about quality.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

SEQLEN, NSAMPLES = 128, 16


def specs(sparsity: float, calibration) -> dict:
    """The compared systems: name -> PruneSpec (None: the dense model)."""
    from harness.pruning.spec import PruneSpec
    from harness.pruning.structured.l0_spec import L0Spec
    from harness.pruning.structured.spec import StructuredSpec

    structured = StructuredSpec(samples=40, batch_size=8)  # Bonsai: fewer sub-models than the paper's 200
    return {
        "dense": None,
        "wanda 2:4": PruneSpec(method="wanda", structure="2:4", calibration=calibration),
        "unit-norm": PruneSpec(method="unit-norm", sparsity=sparsity, structured=structured, calibration=calibration),
        "bonsai": PruneSpec(method="bonsai", sparsity=sparsity, structured=structured, calibration=calibration),
        "l0": PruneSpec(method="l0", sparsity=sparsity, calibration=calibration,
                        structured=StructuredSpec(batch_size=8, l0=L0Spec())),
    }


def main() -> None:
    import torch

    from harness.pruning.checkpoint import prune_checkpoint
    from harness.pruning.perplexity import perplexity
    from harness.pruning.spec import CalibrationSpec
    from harness.tiny_models import tiny_model
    from tasks import load_task

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model folder (default: the tiny Llama)")
    parser.add_argument("--task", default="demo", help="task whose documents give calibration and evaluation text")
    parser.add_argument("--documents", default=None, help="instead of --task: JSONL records with a 'document' field")
    parser.add_argument("--out", default=None, help="keep the checkpoints here (default: a temporary folder)")
    parser.add_argument("--sparsity", type=float, default=0.5)
    args = parser.parse_args()
    torch.set_num_threads(1)  # small models: threads only add synchronisation on a shared machine
    model = Path(args.model) if args.model else tiny_model("llama")
    if args.documents:
        records = [json.loads(line) for line in Path(args.documents).read_text(encoding="utf-8").splitlines() if line.strip()]
        documents = list(dict.fromkeys(r["document"] for r in records))
    else:
        documents = list(dict.fromkeys(r.document for r in load_task(args.task).records))
    half = len(documents) // 2
    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="structured-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    calibration_file = work / "calibration.txt"
    calibration_file.write_text("\n\n".join(documents[:half]), encoding="utf-8")
    held_out = "\n\n".join(documents[half:])
    calibration = CalibrationSpec(source=str(calibration_file), nsamples=NSAMPLES, seqlen=SEQLEN)
    rows = []
    for name, spec in specs(args.sparsity, calibration).items():
        folder, report, seconds = model, {}, 0.0
        if spec is not None:
            folder = work / name.replace(" ", "-").replace(":", "of")
            started = time.perf_counter()
            report = prune_checkpoint(model, spec, folder, device="cpu")
            seconds = time.perf_counter() - started
        ppl = perplexity(folder, held_out, seqlen=SEQLEN, device="cpu")["perplexity"]
        params = report.get("parameters", {})
        rows.append({"system": name, "perplexity": round(ppl, 3),
                     "pruned_share": round(report.get("measured_sparsity", 0.0), 4),
                     "params_after": params.get("total_after"), "shape": report.get("shape", "dense"),
                     "prune_s": round(seconds, 1), "cost": {k: v for k, v in report.get("cost", {}).items()
                                                            if k not in ("history", "block_influence")}})
    dense = rows[0]["perplexity"]
    print(f"model {model} | text: {args.documents or args.task} documents, second half | sparsity {args.sparsity}")
    print(f"{'system':<12}{'ppl':>10}{'x dense':>9}{'pruned':>8}{'params':>10}{'shape':>10}{'prune s':>9}")
    for r in rows:
        print(f"{r['system']:<12}{r['perplexity']:>10.3f}{r['perplexity'] / dense:>9.3f}{r['pruned_share']:>8.3f}"
              f"{str(r['params_after'] or '-'):>10}{r['shape']:>10}{r['prune_s']:>9.1f}")
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
