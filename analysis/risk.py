"""Hallucination risk ratios of pruned models against their dense baselines.

Per document and metric a risk r in [0, 1]: HaRiM's mean token risk as is, 1 - SummaC-ZS,
1 - SummaC-Conv. A risk-ratio definition turns the paired risks of one comparison (a pruned
cell vs its dense cell on one metric, over the documents both have) into pruned / dense; the
reference study's code does not state its formula, so the definition is chosen by name and the
report states it. Uncertainty: a paired bootstrap over documents (percentile 95% CI), a
Wilcoxon signed-rank test on the per-document risk differences, Holm across a table.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.load import CELL_COLUMNS, RunData
from harness.errors import PrunescopeError



def risk_metrics() -> dict[str, tuple[str, bool]]:
    """Display name -> (score column, risk is 1 - score), from the metric registry's ``risk``."""
    from harness.scoring.registry import risk_columns

    return {label: (r.column, r.invert) for label, r in risk_columns().items()}

_MAX_DRAWS = 4_000_000  # resampled values held in memory at once


@dataclass(frozen=True)
class Definition:
    """A risk-ratio definition: ``parts`` maps paired risks [..., n] to (pruned, dense) along
    the last axis; the ratio is pruned / dense."""

    name: str
    description: str  # may name {threshold}
    parts: Callable[[np.ndarray, np.ndarray, float], tuple[np.ndarray, np.ndarray]]


DEFINITIONS = {d.name: d for d in (
    Definition("mean_risk", "mean risk of the pruned model / mean risk of the dense model over "
               "the same documents (below 1: the pruned model has lower hallucination risk)",
               lambda p, d, t: (p.mean(-1), d.mean(-1))),
    Definition("mean_score", "mean score of the pruned model / mean score of the dense model, "
               "where the score is 1 - risk (above 1: the pruned model scores better)",
               lambda p, d, t: ((1 - p).mean(-1), (1 - d).mean(-1))),
    Definition("threshold", "share of documents with risk above {threshold} for the pruned model / "
               "the same share for the dense model (a classic risk ratio)",
               lambda p, d, t: ((p > t).mean(-1), (d > t).mean(-1))),
)}


def get_definition(name: str) -> Definition:
    if name not in DEFINITIONS:
        raise PrunescopeError(f"analysis.risk: unknown risk-ratio definition {name!r}; "
                              f"choose one of {', '.join(DEFINITIONS)}")
    return DEFINITIONS[name]


def describe(name: str, threshold: float = 0.5) -> str:
    return get_definition(name).description.format(threshold=threshold)


@dataclass
class Comparison:
    n_docs: int
    pruned: float  # the definition's pruned-side statistic (e.g. mean risk)
    dense: float
    ratio: float
    ci_low: float
    ci_high: float
    p_value: float
    note: str  # why a value is NaN, or a caveat; "" when none


def compare(pruned: np.ndarray, dense: np.ndarray, definition: str = "mean_risk",
            threshold: float = 0.5, n_boot: int = 1000, rng: np.random.Generator | None = None,
            level: float = 0.95) -> Comparison:
    """One paired comparison of per-document risks (same documents, same order)."""
    from scipy.stats import wilcoxon

    parts = get_definition(definition).parts
    pruned, dense = np.asarray(pruned, float), np.asarray(dense, float)
    n = len(pruned)
    if n == 0:
        return Comparison(0, *[np.nan] * 6, "no documents scored on both sides")
    num, den = parts(pruned, dense, threshold)
    notes = []
    if den == 0:
        notes.append("dense statistic is 0, so the ratio is undefined")
        ratio = low = high = np.nan
    else:
        ratio = float(num / den)
        low, high, undefined = _bootstrap(pruned, dense, parts, threshold, n_boot,
                                          rng or np.random.default_rng(0), level)
        if undefined:
            notes.append(f"{undefined} of {n_boot} resamples had a dense statistic of 0 and were dropped")
    diff = pruned - dense
    if np.all(diff == 0):
        notes.append("all paired differences are zero, so the Wilcoxon test is undefined")
        p_value = np.nan
    else:
        p_value = float(wilcoxon(pruned, dense, zero_method="wilcox").pvalue)
    return Comparison(n, float(num), float(den), ratio, low, high, p_value, "; ".join(notes))


def _bootstrap(pruned, dense, parts, threshold, n_boot, rng, level):
    """Percentile CI of the ratio, resampling documents jointly on both sides."""
    n = len(pruned)
    chunk = max(1, _MAX_DRAWS // n)
    ratios = []
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
        num, den = parts(pruned[idx], dense[idx], threshold)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios.append(np.where(den > 0, num / np.where(den > 0, den, 1), np.nan))
    ratios = np.concatenate(ratios)
    finite = ratios[np.isfinite(ratios)]
    undefined = n_boot - len(finite)
    if len(finite) == 0:
        return np.nan, np.nan, undefined
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high), undefined


def holm(p_values) -> np.ndarray:
    """Holm-adjusted p-values; NaN entries stay NaN and do not count as comparisons."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p_values, float)
    out = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return out


def risk_values(paired: pd.DataFrame) -> pd.DataFrame:
    """The paired rows of the risk metrics, with scores turned into risks and the metric
    column holding the display name (HaRiM, SummaC-ZS, SummaC-Conv)."""
    frames = []
    for name, (column, invert) in risk_metrics().items():
        rows = paired[paired["metric"] == column]
        if invert:
            rows = rows.assign(pruned=1 - rows["pruned"], dense=1 - rows["dense"])
        frames.append(rows.assign(metric=name))
    return pd.concat(frames, ignore_index=True) if frames else paired.iloc[:0]


def risk_table(run: RunData, definition: str = "mean_risk", threshold: float = 0.5,
               n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """A row per comparison (pruned cell x risk metric) with ratio, CI, p and Holm-adjusted p.

    Each comparison's bootstrap stream is seeded from ``seed`` and the comparison's identity,
    so a number does not change when other cells are added to the run."""
    get_definition(definition)
    rows = []
    values = risk_values(run.paired)
    for (cell, metric), group in values.groupby(["cell", "metric"], sort=False):
        rng = np.random.default_rng([seed, zlib.crc32(f"{cell}/{metric}".encode())])
        result = compare(group["pruned"].to_numpy(), group["dense"].to_numpy(), definition,
                         threshold, n_boot, rng)
        ident = group.iloc[0][CELL_COLUMNS + ["baseline"]].to_dict()
        rows.append({**ident, "metric": metric, **vars(result)})
    columns = CELL_COLUMNS + ["baseline", "metric", "n_docs", "pruned", "dense", "ratio",
                              "ci_low", "ci_high", "p_value", "note"]
    table = pd.DataFrame(rows, columns=columns)
    table.insert(columns.index("p_value") + 1, "p_holm", holm(table["p_value"]))
    table["definition"] = definition
    order = table["metric"].map(list(risk_metrics()).index)
    return (table.assign(_order=order)
            .sort_values(["task", "prompt", "_order", "model", "method", "sparsity", "structure"])
            .drop(columns="_order").reset_index(drop=True))


def risk_pivot(table: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """The reference study's shape: rows dataset x metric (x prompt when a study has several),
    columns model x method x sparsity; each entry 'ratio [low, high]', starred where the
    Holm-adjusted p is below ``alpha``."""
    rows = ["task", "prompt", "metric"] if table["prompt"].nunique() > 1 else ["task", "metric"]
    if table.empty:
        return pd.DataFrame(columns=rows)
    # Specs that differ only in what CellInfo does not record (e.g. calibration) share a
    # label; the cell key keeps their columns apart.
    clash = table.duplicated(rows + ["system"], keep=False)
    column = table["system"].where(~clash, table["system"] + " (" + table["cell"] + ")")
    entries = table.assign(column=column, entry=table.apply(lambda r: format_ratio(r, alpha), axis=1))
    wide = entries.pivot(index=rows, columns="column", values="entry")
    systems = list(dict.fromkeys(entries.sort_values(["model", "method", "sparsity", "structure", "owl"])["column"]))
    row_order = list(dict.fromkeys(map(tuple, table[rows].to_numpy())))  # risk_table's order
    return wide.reindex(index=row_order, columns=systems).fillna("").reset_index().rename_axis(columns=None)


def format_ratio(row, alpha: float) -> str:
    """A comparison row as 'ratio [low, high]', starred where the Holm-adjusted p < ``alpha``."""
    if not np.isfinite(row["ratio"]):
        return "n/a"
    star = "*" if np.isfinite(row["p_holm"]) and row["p_holm"] < alpha else ""
    return f"{row['ratio']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]{star}"
