"""Time the demo study end to end (target: <= 5 minutes on a 2-core CPU machine).

Runs `prunescope demo` in a fresh process into a temporary run directory (tiny models
already built are reused; they take seconds otherwise) and prints the wall time and the
seconds each stage spent, summed over cells, from the run's manifest.

    .venv/bin/python benchmarks/demo.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from harness.store import RunStore

TARGET_SECONDS = 300


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "demo"
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "harness.cli.main", "demo", "--out", str(out)],
                              capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
            return proc.returncode
        stages = defaultdict(float)
        for cell in RunStore(out).read_manifest()["cells"].values():
            for stage, info in cell.items():
                stages[stage] += float(info.get("seconds", 0))
    print(f"demo wall time: {wall:.1f} s (target {TARGET_SECONDS} s, ratio {wall / TARGET_SECONDS:.2f})")
    for stage, seconds in stages.items():
        print(f"  {stage:<9} {seconds:7.1f} s summed over cells")
    return 0


if __name__ == "__main__":
    sys.exit(main())
