"""Structured vs unstructured pruning at 50% of the prunable parameters, side by side.

1. Quality: perplexity of dense, Bonsai, the two baselines (unit-norm ranking, block-influence)
   and Wanda 2:4 / unstructured on a small model: the demo's trained summarizer when
   ``harness.trained_models`` exists in this tree, else the tiny random-weight Llama (then the
   perplexities only show that each system runs, not which is better). Calibration: the first
   half of the task's documents; perplexity: the second half (held out). Prints the rounds,
   sub-models and forward passes Bonsai spent.
2. Speed: CPU generation tokens/s, through ``prunescope bench model``'s function and the
   report's cost table, of the same systems built from a larger random-weight Llama (only its
   speed counts; Bonsai runs there with 2 sub-models per round, since speed depends only on
   the kept shape, which the target fixes).

    .venv/bin/python benchmarks/structured.py [--model DIR --task NAME] [--samples 40] [--hidden 1024 --layers 16]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

SHARE = 0.5


def systems(samples: int, prune_frac: float, calibration):
    from harness.pruning import PruneSpec
    from harness.pruning.structured.spec import StructuredSpec

    def structured(method, **settings):
        return PruneSpec(method, sparsity=SHARE, calibration=calibration, structured=StructuredSpec(**settings))

    return [
        structured("bonsai", samples=samples, prune_frac=prune_frac),
        structured("unit-norm", prior="activation"),
        structured("unit-norm", prior="wanda", allocation="global"),
        structured("block-influence"),
        PruneSpec("wanda", structure="2:4", calibration=calibration),
        PruneSpec("wanda", sparsity=SHARE, calibration=calibration),
    ]


def build_checkpoints(model_dir: Path, root: Path, specs) -> dict:
    """The dense model and each spec's checkpoint in a run directory at ``root`` (model "m");
    returns the reports by key."""
    from harness.pruning import prune_checkpoint
    from harness.store import RunStore

    store = RunStore(root)
    shutil.copytree(model_dir, store.checkpoint_dir("m", "dense"))
    reports = {}
    for spec in specs:
        started = time.perf_counter()
        reports[spec.key] = prune_checkpoint(model_dir, spec, store.checkpoint_dir("m", spec.key), device="cpu")
        reports[spec.key]["bench_prune_s"] = time.perf_counter() - started
        print(f"  pruned {spec.key} in {reports[spec.key]['bench_prune_s']:.1f} s", flush=True)
    return reports


def quality(args, work: Path) -> None:
    import torch

    from harness.pruning import CalibrationSpec
    from harness.pruning.perplexity import perplexity
    from harness.store import RunStore
    from harness.tiny_models import tiny_model
    from tasks import load_task

    if args.model:
        model_dir, source = Path(args.model), args.model
    else:
        try:
            from harness.trained_models import trained_model  # the demo's trained models, once on main

            model_dir, source = trained_model("summarizer-llama"), "the demo's trained summarizer-llama"
        except ImportError:
            model_dir, source = tiny_model("llama"), "the tiny Llama (random weights: no trained model on this tree)"
    if Path(args.task).is_file():  # a JSONL file of {"document": ...} records
        documents = [json.loads(line)["document"] for line in Path(args.task).read_text().splitlines() if line.strip()]
    else:
        documents = [r.document for r in load_task(args.task).records]
    half = len(documents) // 2
    (work / "calibration.txt").write_text("\n\n".join(documents[:half]))
    heldout = "\n\n".join(documents[half:])
    calibration = CalibrationSpec(source=str(work / "calibration.txt"), nsamples=args.nsamples, seqlen=args.seqlen)
    print(f"== quality at {SHARE:.0%} of prunable parameters: {source}; task {args.task!r}, "
          f"calibration {args.nsamples} x {args.seqlen} tokens", flush=True)
    torch.manual_seed(0)
    reports = build_checkpoints(model_dir, work / "quality", systems(args.samples, args.prune_frac, calibration))
    store = RunStore(work / "quality")
    print(f"{'system':26} {'shape':8} {'pruned share':>12} {'stored':>8} {'nonzero':>8} {'perplexity':>10} {'fwd passes':>10}")
    for key in ["dense", *reports]:
        report = reports.get(key, {})
        ppl = perplexity(store.checkpoint_dir("m", key), heldout, seqlen=args.seqlen, max_windows=32, device="cpu")["perplexity"]
        params, nonzero = _parameters(store.checkpoint_dir("m", key))
        share = report.get("measured_sparsity", 0.0)
        shape = report.get("shape", "zeros" if report else "dense")
        passes = report.get("cost", {}).get("forward_passes", "")
        print(f"{key:26} {shape:8} {share:12.3f} {params / 1e3:7.0f}k {nonzero / 1e3:7.0f}k {ppl:10.2f} {passes!s:>10}")
    bonsai = next(r for k, r in reports.items() if k.startswith("bonsai"))
    cost = bonsai["cost"]
    print(f"Bonsai spent {cost['rounds']} rounds x {args.samples} sub-models = {cost['submodels']} sub-model "
          f"evaluations + {cost['forward_passes'] - cost['submodels']} prior passes = {cost['forward_passes']} "
          f"forward passes over the {args.nsamples} calibration samples (prune_frac {args.prune_frac})")


def speed(args, work: Path) -> None:
    import torch
    import transformers

    from analysis.cost import cost_table
    from harness.efficiency.bench import bench_model
    from harness.pruning import CalibrationSpec
    from harness.tiny_models import build_tokenizer

    config = transformers.LlamaConfig(vocab_size=8192, hidden_size=args.hidden, intermediate_size=args.ffn,
                                      num_hidden_layers=args.layers, num_attention_heads=args.hidden // 64,
                                      num_key_value_heads=args.hidden // 64, head_dim=64,
                                      max_position_embeddings=1024, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    base = work / "large"
    model.save_pretrained(base)
    build_tokenizer("causal").save_pretrained(base)
    params = sum(p.numel() for p in model.parameters())
    del model
    text = work / "calibration.txt"
    calibration = CalibrationSpec(source=str(text), nsamples=4, seqlen=64)
    print(f"\n== speed: random-weight Llama, {params / 1e6:.0f}M parameters (hidden {args.hidden}, "
          f"{args.layers} blocks, FFN {args.ffn}), CPU, {torch.get_num_threads()} threads", flush=True)
    build_checkpoints(base, work / "speed", systems(2, 0.25, calibration))
    bench = bench_model(work / "speed", max_new_tokens=args.new_tokens, trials=1)
    table = cost_table(bench)
    dense = next(e for e in bench["checkpoints"] if e["method"] == "dense")
    print(f"dense: {dense['tokens_per_s']:.1f} tokens/s, {dense['nonzero'] / 1e6:.0f}M parameters")
    entries = {e["checkpoint"]: e for e in bench["checkpoints"]}
    print(f"{'system':26} {'tokens/s':>9} {'speed ratio':>11} {'param ratio':>11} {'size ratio':>10}")
    for row in table.itertuples():
        key = next(k for k, e in entries.items() if e["method"] == row.method and e["structure"] == row.structure
                   and e["sparsity"] == row.sparsity)
        print(f"{key:26} {entries[key]['tokens_per_s']:9.1f} {row.speed_ratio:11.2f} {row.parameter_ratio:11.3f}"
              f" {row.size_ratio:10.3f}")
    print(f"({bench['note']}; {args.new_tokens} new tokens x {len(bench['prompts'])} prompts, shared machine: "
          f"compare ratios, not absolute rates)")


def _parameters(folder) -> tuple[int, int]:
    """Stored and nonzero parameters of a checkpoint folder."""
    from harness.efficiency.storage import load_tensors, nonzero_mask

    tensors = load_tensors(folder).values()
    return sum(t.numel() for t in tensors), sum(int(nonzero_mask(t).sum()) for t in tensors)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="quality model folder (default: trained demo, else tiny)")
    parser.add_argument("--task", default="demo", help="task (or JSONL file of documents) that calibrates and measures perplexity")
    parser.add_argument("--samples", type=int, default=40, help="Bonsai sub-models per round (paper: 200)")
    parser.add_argument("--prune-frac", type=float, default=0.05, help="Bonsai share per round (paper: 0.05)")
    parser.add_argument("--nsamples", type=int, default=16)
    parser.add_argument("--seqlen", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--ffn", type=int, default=2816)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-structured-"))
    try:
        quality(args, work)
        if not args.skip_speed:
            speed(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
