"""Training time of the demo's built-in trained models (summarizer-llama, bart, nli,
summac-conv) on this machine, from an empty cache, one after another as ``make demo`` does.

Prints per model: wall seconds, CPU seconds (the honest figure on a shared machine: wall
time there grows with the load), the 1-minute load average when it started, its held-out
accuracy and whether it learned; then the totals against the 4-minute budget.
Usage: python benchmarks/trained_models.py [cache folder, default: a temporary one]
"""

from __future__ import annotations

import os
import sys
import tempfile

DEMO_MODELS = ("summarizer-llama", "bart", "nli", "summac-conv")
BUDGET_SECONDS = 240


def main(cache: str) -> None:
    os.environ["PRUNESCOPE_CACHE"] = cache
    from harness.trained_models import trained_model, training_report

    print(f"{'model':<18} {'seconds':>8} {'cpu s':>7} {'load':>5} {'accuracy':>9} {'learned':>8}")
    wall = cpu = 0.0
    for name in DEMO_MODELS:
        report = training_report(trained_model(name))
        wall, cpu = wall + report["seconds"], cpu + report["cpu_seconds"]
        print(f"{name:<18} {report['seconds']:>8.1f} {report['cpu_seconds']:>7.1f} "
              f"{report['load_average']:>5.2f} {report['accuracy']:>9.3f} "
              f"{str(report['learned']):>8}")
    print(f"{'total':<18} {wall:>8.1f} {cpu:>7.1f}   (budget {BUDGET_SECONDS} s: "
          f"{'met' if wall <= BUDGET_SECONDS else 'exceeded'} in wall time, "
          f"{'met' if cpu <= BUDGET_SECONDS else 'exceeded'} in CPU time)")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(tmp)
