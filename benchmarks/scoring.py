"""Throughput of the model metrics: pairs/s batched (sorted by length) vs one at a time.

HaRiM+ counts (source, summary) pairs; SummaC counts NLI (source sentence, summary sentence)
pairs. Defaults: the tiny local scorers on the demo task (CPU); pass real models with
--harim-model / --nli-model and --device cuda on a GPU.

    .venv/bin/python benchmarks/scoring.py [--docs 50] [--batch-size 16] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def best_time(fn, repeat: int) -> float:
    """The fastest of ``repeat`` runs: the least disturbed by other work on a shared machine."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    import torch

    from harness.scoring.harim import harim_scores
    from harness.scoring.loading import load_scorer
    from harness.scoring.nli import nli_images
    from harness.scoring.splitting import MAX_SOURCE_CHUNKS, chunks
    from harness.tiny_models import tiny_model
    from tasks import load_task

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--harim-model", default=None)
    parser.add_argument("--nli-model", default=None)
    args = parser.parse_args()
    torch.set_num_threads(min(torch.get_num_threads(), 2))

    records = load_task("demo", limit=args.docs).records
    sources = [r.document for r in records]
    summaries = [r.reference or "" for r in records]
    harim_model = load_scorer(args.harim_model or tiny_model("bart"), "seq2seq", device=args.device)
    nli_model = load_scorer(args.nli_model or tiny_model("nli"), "classifier", device=args.device)
    documents = [(chunks(s, MAX_SOURCE_CHUNKS), chunks(y)) for s, y in zip(sources, summaries)]
    nli_pairs = sum(len(a) * len(b) for a, b in documents)

    print(f"device={args.device} threads={torch.get_num_threads()} docs={len(records)} "
          f"batch={args.batch_size} best of {args.repeat}")
    for name, pairs, run in (
        ("harim", len(sources), lambda bs: harim_scores(harim_model, sources, summaries, batch_size=bs)),
        ("summac-nli", nli_pairs, lambda bs: nli_images(nli_model, documents, batch_size=bs)),
    ):
        run(args.batch_size)  # warm-up
        batched = pairs / best_time(lambda: run(args.batch_size), args.repeat)
        single = pairs / best_time(lambda: run(1), args.repeat)
        print(f"{name:11s} pairs={pairs:5d}  batched {batched:9.1f} pairs/s  "
              f"one-at-a-time {single:9.1f} pairs/s  ratio {batched / single:5.2f}x")


if __name__ == "__main__":
    main()
