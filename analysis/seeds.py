"""Ratios and means aggregated over calibration seeds, with a CI that includes the
between-seed spread.

Systems that differ only in their calibration seed (``PruneSpecInfo.setting`` equal) are
pooled: the point estimate is mean over seeds of the pruned statistic / mean over seeds of
the dense statistic on the same documents (for ``mean_risk``: the mean risk of all seeds'
summaries / the dense mean risk); a mean (e.g. the ground-truth hallucination rate) is the
mean over seeds of each seed's mean. The CI is a two-level percentile bootstrap: each
resample draws the seeds with replacement, then within each drawn seed the documents with
replacement (pruned and dense paired), and recomputes the pooled value. A setting with one
seed (dense, magnitude) gets the ordinary bootstrap over documents.
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

METHOD_TEXT = ("two-level percentile bootstrap: seeds resampled with replacement, then "
               "documents within each drawn seed (pruned and dense paired)")
GROUP = ["model", "setting", "task", "prompt"]


def pooled_ratio(pruned: list[np.ndarray], dense: list[np.ndarray]) -> float:
    """mean over seeds of mean(pruned) / mean over seeds of mean(dense) (one array per seed,
    each paired document by document with its dense array)."""
    return _ratio(np.array([[np.mean(p), np.mean(d)] for p, d in zip(pruned, dense)]))


def _ratio(means: np.ndarray) -> float:
    """Pooled ratio from per-seed (pruned mean, dense mean) rows."""
    den = means[:, 1].mean()
    return float(means[:, 0].mean() / den) if den > 0 else float("nan")


def _mean(means: np.ndarray) -> float:
    return float(means[:, 0].mean())


def two_level_ci(per_seed: list[tuple[np.ndarray, ...]], statistic, n_boot: int = 1000,
                 rng: np.random.Generator | None = None, level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of ``statistic(means)``, where ``means[s]`` holds the means of seed s's
    aligned arrays: resample seeds, then documents within seeds. Undefined resamples (NaN)
    are dropped; NaN bounds when none is defined."""
    rng = rng or np.random.default_rng(0)
    k, values = len(per_seed), []
    for _ in range(n_boot):
        means = []
        for s in rng.integers(0, k, size=k):
            arrays = per_seed[s]
            idx = rng.integers(0, len(arrays[0]), size=len(arrays[0]))
            means.append([a[idx].mean() for a in arrays])
        value = statistic(np.array(means))
        if np.isfinite(value):
            values.append(value)
    if not values:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def seed_bootstrap(pruned: list[np.ndarray], dense: list[np.ndarray], n_boot: int = 1000,
                   rng: np.random.Generator | None = None, level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of :func:`pooled_ratio`: resample seeds, then documents within seeds."""
    return two_level_ci(list(zip(pruned, dense)), _ratio, n_boot, rng, level)


def with_settings(frame: pd.DataFrame, cells: dict) -> pd.DataFrame:
    """``frame`` (with a ``cell`` column) plus each cell's ``setting`` and calibration ``seed``."""
    return frame.assign(setting=frame["cell"].map({k: c.prune.setting for k, c in cells.items()}),
                        seed=frame["cell"].map({k: c.prune.seed for k, c in cells.items()}))


def _per_seed(group: pd.DataFrame, columns: list[str]) -> list[tuple[np.ndarray, ...]]:
    by_seed = [g.sort_values("doc_id") for _, g in group.groupby("seed", dropna=False)]
    return [tuple(g[c].to_numpy(float) for c in columns) for g in by_seed]


def _stream(seed: int, key) -> np.random.Generator:
    """A bootstrap stream per group, so a number does not change when others are added."""
    return np.random.default_rng([seed, zlib.crc32("/".join(map(str, key)).encode())])


def seed_table(paired: pd.DataFrame, metric: str, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """A row per (model, setting, task, prompt) of ``paired`` rows of one metric (columns
    ``setting``, ``seed``, ``doc_id``, ``pruned``, ``dense``): seeds, pooled ratio, CI."""
    rows = []
    for key, group in paired[paired["metric"] == metric].groupby(GROUP, sort=False):
        per_seed = _per_seed(group, ["pruned", "dense"])
        low, high = two_level_ci(per_seed, _ratio, n_boot, _stream(seed, (*key, metric)))
        rows.append({**dict(zip(GROUP, key)), "metric": metric, "seeds": len(per_seed),
                     "ratio": _ratio(np.array([[p.mean(), d.mean()] for p, d in per_seed])),
                     "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows, columns=[*GROUP, "metric", "seeds", "ratio", "ci_low", "ci_high"])


def seed_means(tidy: pd.DataFrame, metric: str, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """A row per (model, setting, task, prompt) of ``tidy`` rows of one score column (with
    ``setting`` and ``seed``): seeds, documents per seed, mean over seeds, CI."""
    rows = []
    for key, group in tidy[tidy["metric"] == metric].groupby(GROUP, sort=False):
        per_seed = _per_seed(group, ["value"])
        low, high = two_level_ci(per_seed, _mean, n_boot, _stream(seed, (*key, metric)))
        rows.append({**dict(zip(GROUP, key)), "metric": metric, "seeds": len(per_seed),
                     "documents": len(per_seed[0][0]), "mean": float(np.mean([v.mean() for v, in per_seed])),
                     "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows, columns=[*GROUP, "metric", "seeds", "documents", "mean", "ci_low", "ci_high"])


def seed_ratios(run, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """:func:`seed_table` of every registered risk metric (display names) over a run's pairs."""
    from analysis.risk import risk_metrics, risk_values

    values = risk_values(run.paired)
    if values.empty:
        return seed_table(values.assign(setting=[], seed=[]), "")
    values = with_settings(values, run.cells)
    return pd.concat([seed_table(values, m, n_boot, seed) for m in risk_metrics()
                      if m in set(values["metric"])], ignore_index=True)
