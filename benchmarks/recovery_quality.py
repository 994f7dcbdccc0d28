"""Does recovery fine-tuning close the gap pruning opened? Perplexity of dense, 2:4 Wanda,
2:4 + LoRA and 2:4 + full fine-tuning, on held-out documents of a task.

The task's documents are split: the last ``--heldout`` are the perplexity text, the others
the training data (a JSONL file) of both recoveries, and the pruning calibration. Printed per
system: perplexity, its ratio to dense, and the share of the pruning gap it closes
((ppl pruned - ppl system) / (ppl pruned - ppl dense)), plus the measured sparsity.

    .venv/bin/python benchmarks/recovery_quality.py [--model DIR] [--task demo] [--steps 80]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="dense checkpoint (default: the tiny Llama)")
    parser.add_argument("--task", default="demo")
    parser.add_argument("--heldout", type=int, default=10, help="documents kept for perplexity")
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--seqlen", type=int, default=128)
    args = parser.parse_args()

    from harness.pruning import CalibrationSpec, PruneSpec, prune_checkpoint
    from harness.pruning.perplexity import perplexity
    from harness.recovery import LoRASpec, RecoverySpec, recover
    from harness.tiny_models import tiny_model
    from tasks import load_task

    dense = Path(args.model) if args.model else tiny_model("llama")
    documents = [r.document for r in load_task(args.task).records]
    train, heldout = documents[: -args.heldout], "\n\n".join(documents[-args.heldout:])
    with tempfile.TemporaryDirectory(prefix="recovery-quality-") as tmp:
        root = Path(tmp)
        data = root / "train.jsonl"
        data.write_text("".join(json.dumps({"text": t}) + "\n" for t in train))
        windows = CalibrationSpec(source=str(data), nsamples=64, seqlen=args.seqlen, seed=0)
        prune_checkpoint(dense, PruneSpec("wanda", structure="2:4", calibration=windows), root / "pruned")
        common = {"steps": args.steps, "batch_size": 4, "data": windows, "save_every": args.steps}
        lora = recover(root / "pruned", RecoverySpec("lora", lr=2e-3, lora=LoRASpec(rank=8, alpha=16), **common),
                       root / "lora", progress=False)
        full = recover(root / "pruned", RecoverySpec("full", lr=2e-4, **common), root / "full", progress=False)

        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(dense)
        with_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(root / "pruned"), root / "lora")
        models = {"dense": dense, "wanda 2:4": root / "pruned", "2:4 + LoRA": with_adapter, "2:4 + full": root / "full"}
        ppl = {name: perplexity(model, heldout, seqlen=args.seqlen, tokenizer=tokenizer)["perplexity"]
               for name, model in models.items()}
        sparsity = {"dense": None, "wanda 2:4": json.loads((root / "pruned" / "sparsity.json").read_text())["measured_sparsity"],
                    "2:4 + LoRA": lora["measured_sparsity"], "2:4 + full": full["measured_sparsity"]}
    gap = ppl["wanda 2:4"] - ppl["dense"]
    print(f"model {dense.name}, task {args.task}: {len(train)} training documents, {args.heldout} held out; "
          f"{args.steps} steps x 4 windows x {args.seqlen} tokens")
    print(f"{'system':12} {'perplexity':>10} {'x dense':>8} {'gap closed':>10} {'sparsity':>9}")
    for name, value in ppl.items():
        closed = "" if name in ("dense", "wanda 2:4") else f"{(ppl['wanda 2:4'] - value) / gap:10.0%}"
        share = "" if sparsity[name] is None else f"{sparsity[name]:9.4f}"
        print(f"{name:12} {value:10.2f} {value / ppl['dense']:8.3f} {closed:>10} {share:>9}")
    print("(LoRA: the sparsity is the served base's; the unmerged adapter adds a dense low-rank term)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
