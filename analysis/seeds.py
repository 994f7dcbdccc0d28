"""Ratios aggregated over calibration seeds, with a CI that includes the between-seed spread.

Systems that differ only in their calibration seed (``PruneSpecInfo.setting`` equal) are
pooled: the point estimate is mean over seeds of the pruned statistic / mean over seeds of
the dense statistic on the same documents (for ``mean_risk``: the mean risk of all seeds'
summaries / the dense mean risk). The CI is a two-level percentile bootstrap: each resample
draws the seeds with replacement, then within each drawn seed the documents with
replacement (pruned and dense paired), and recomputes the pooled ratio.
"""

from __future__ import annotations

import numpy as np


def pooled_ratio(pruned: list[np.ndarray], dense: list[np.ndarray]) -> float:
    """mean over seeds of mean(pruned) / mean over seeds of mean(dense) (one array per seed,
    each paired document by document with its dense array)."""
    num = np.mean([np.mean(p) for p in pruned])
    den = np.mean([np.mean(d) for d in dense])
    return float(num / den) if den > 0 else float("nan")


def seed_bootstrap(pruned: list[np.ndarray], dense: list[np.ndarray], n_boot: int = 1000,
                   rng: np.random.Generator | None = None, level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of :func:`pooled_ratio`: resample seeds, then documents within seeds."""
    rng = rng or np.random.default_rng(0)
    k, ratios = len(pruned), []
    for _ in range(n_boot):
        nums, dens = [], []
        for s in rng.integers(0, k, size=k):
            idx = rng.integers(0, len(pruned[s]), size=len(pruned[s]))
            nums.append(pruned[s][idx].mean())
            dens.append(dense[s][idx].mean())
        if np.mean(dens) > 0:
            ratios.append(np.mean(nums) / np.mean(dens))
    if not ratios:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return float(low), float(high)


def seed_table(paired, metric: str, n_boot: int = 1000, seed: int = 0):
    """A row per (model, setting, task, prompt) of ``paired`` rows of one metric (columns
    ``setting``, ``seed``, ``doc_id``, ``pruned``, ``dense``): seeds, pooled ratio, CI."""
    import pandas as pd

    rows = []
    rows_of = paired[paired["metric"] == metric]
    for key, group in rows_of.groupby(["model", "setting", "task", "prompt"], sort=False):
        by_seed = [g.sort_values("doc_id") for _, g in group.groupby("seed", dropna=False)]
        p = [g["pruned"].to_numpy(float) for g in by_seed]
        d = [g["dense"].to_numpy(float) for g in by_seed]
        low, high = seed_bootstrap(p, d, n_boot, np.random.default_rng([seed, len(rows)]))
        rows.append({**dict(zip(["model", "setting", "task", "prompt"], key)), "metric": metric,
                     "seeds": len(by_seed), "ratio": pooled_ratio(p, d), "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows)
