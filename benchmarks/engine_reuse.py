"""Generation with one engine per cell versus one engine per model (checkpoints swapped in).

Prunes the study's checkpoints once (default: examples/demo-small.yaml), then runs its
generation stage twice on copies of that run, side by side in one process: with
``generation.engines: cell`` (a fresh engine and process per cell, as before engine reuse)
and with ``engines: model``. Prints each stage's wall-clock seconds and engine starts (the
manifest's engine log), the ratio (target >= 4x on a 2-core machine) and whether both
produced the same token ids.

    .venv/bin/python benchmarks/engine_reuse.py [--study YAML] [--docs N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TARGET = 4.0
REPO = Path(__file__).resolve().parents[1]


def token_ids(run_dir: Path) -> dict:
    from harness.store import RunStore

    store = RunStore(run_dir)
    return {key: [r.output_token_ids for r in store.read_generations(key)] for key in store.read_cells()}


def main() -> None:
    from harness.config import load_study
    from harness.runner.study import quiet_libraries, run_study
    from harness.store import RunStore

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default=str(REPO / "examples" / "demo-small.yaml"))
    parser.add_argument("--docs", type=int, default=None, help="cap documents per task")
    args = parser.parse_args()
    quiet_libraries()
    with tempfile.TemporaryDirectory() as tmp:
        pruned = Path(tmp) / "pruned"
        study = load_study(args.study)
        started = time.perf_counter()
        result = run_study(study, pruned, limit=args.docs, stage="prune", show_progress=False, report=False)
        assert not result.failed, result.failed
        print(f"study {study.name}: {len(RunStore(pruned).read_cells())} cells, pruned in "
              f"{time.perf_counter() - started:.1f} s")
        measured = {}
        for engines in ("cell", "model"):
            run_dir = Path(tmp) / engines
            shutil.copytree(pruned, run_dir)
            generation = study.generation.model_copy(update={"engines": engines})
            started = time.perf_counter()
            result = run_study(study.model_copy(update={"generation": generation}), run_dir, limit=args.docs,
                               stage="generate", show_progress=False, report=False)
            seconds = time.perf_counter() - started
            assert not result.failed, result.failed
            starts = len(RunStore(run_dir).read_manifest().get("engines", {}))
            measured[engines] = (seconds, starts, token_ids(run_dir))
            print(f"engines: {engines:<5} generation stage {seconds:7.1f} s, {starts} engine starts")
        (cell_s, cell_starts, cell_ids), (model_s, model_starts, model_ids) = measured["cell"], measured["model"]
        print(f"ratio per-cell / reuse: {cell_s / model_s:.1f}x generation seconds (target >= {TARGET:.0f}x), "
              f"{cell_starts / model_starts:.1f}x engine starts; same token ids: {cell_ids == model_ids}")


if __name__ == "__main__":
    main()
