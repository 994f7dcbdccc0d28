"""Time the demo (target: <= 180 s on a 2-core CPU machine once the trained models are built).

1. Side by side: one cell's generation (the dense summarizer on the demo's documents) with
   torch at 1 and at 2 CPU threads, the choice behind ``harness.runner.demo.THREADS``.
2. `prunescope demo` in a fresh process into a temporary run directory (trained models come
   from the cache; they are trained first when missing, which this does not time): the wall
   time, the seconds each stage spent summed over checkpoints and cells (the manifest), and
   the rest (start-up, simulated annotation, report).

    .venv/bin/python benchmarks/demo.py [DOCUMENTS]
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from harness.runner import demo
from harness.store import RunStore

TARGET_SECONDS = 180


def generation_seconds(documents: int, threads: int) -> float:
    import torch

    from harness.config import GenerationConfig
    from harness.generation import generate_cell
    from harness.records import ModelIdentity
    from tasks import load_task

    model = demo.demo_models()["summarizer"]
    identity = ModelIdentity(name="summarizer", source=str(model), checkpoint_hash="benchmark")
    records = load_task("facts", limit=documents).records
    config = GenerationConfig(backend="hf", max_new_tokens=demo.MAX_NEW_TOKENS, batch_size=documents)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            generate_cell(model, [(r.id, r.document) for r in records], "A", config, identity,
                          Path(tmp) / "g.jsonl", chat_family="chat")
            return time.perf_counter() - start
    finally:
        torch.set_num_threads(before)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(documents: int = demo.DOCUMENTS) -> int:
    one, two = generation_seconds(documents, 1), generation_seconds(documents, 2)
    print(f"one cell's generation ({documents} documents): 1 thread {one:.1f} s, 2 threads {two:.1f} s "
          f"(2 threads / 1 thread = {two / one:.2f})")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "demo"
        start = time.perf_counter()
        cpu_before = _children_cpu()
        proc = subprocess.run([sys.executable, "-m", "harness.cli.main", "demo", "--out", str(out),
                               "--documents", str(documents)], capture_output=True, text=True)
        wall = time.perf_counter() - start
        cpu = _children_cpu() - cpu_before
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
            return proc.returncode
        stages = defaultdict(float)  # the demo has one cell per checkpoint
        for cell in RunStore(out).read_manifest()["cells"].values():
            for stage, info in cell.items():
                stages[stage] += float(info.get("seconds", 0))
    print(f"demo wall time: {wall:.1f} s (target {TARGET_SECONDS} s, ratio {wall / TARGET_SECONDS:.2f}); "
          f"CPU time {cpu:.1f} s (the demo computes on one thread: its wall time on an idle machine)")
    for stage, seconds in stages.items():
        print(f"  {stage:<9} {seconds:7.1f} s summed")
    print(f"  rest      {wall - sum(stages.values()):7.1f} s (start-up, simulated annotation, report)")
    return 0


if __name__ == "__main__":
    sys.exit(main(*(int(a) for a in sys.argv[1:2])))
