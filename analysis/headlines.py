"""Headline findings of a report, written from its risk-ratio table alone.

A comparison is a finding when its 95% CI excludes 1; findings that survive the Holm
correction come first, then those on a metric whose validity is not flagged, each group ranked
by the size of the effect (|log ratio|); each states its ratio, CI, Holm-adjusted p and the metric's validity
(pooled AUC, or FLAGGED, from ``analysis.validity_section.attach_flags``). When no CI excludes
1 the report has exactly one headline, "No difference detected", listing every CI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

MAX_FINDINGS = 5


@dataclass
class Headline:
    text: str  # plain prose; the renderer escapes it
    details: list[str] = field(default_factory=list)  # one line per comparison it rests on
    effect: bool = False  # True: a CI that excludes 1


def sig3(value: float) -> str:
    """A number to 3 significant digits, without exponent notation for large values."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if value == 0:
        return "0"
    digits = 3 - int(math.floor(math.log10(abs(value)))) - 1
    return f"{round(value, digits):.{max(digits, 0)}f}"


def interval(row) -> str:
    """'ratio [95% CI low, high]' with the decimals that give the smallest of the three 3
    significant digits, more where a bound would otherwise round onto or across 1."""
    values = (row.ratio, row.ci_low, row.ci_high)
    if not all(math.isfinite(v) for v in values):
        return f"{sig3(row.ratio)} [95% CI {sig3(row.ci_low)}, {sig3(row.ci_high)}]"
    smallest = min(abs(v) for v in values) or 1
    first = max(2 - math.floor(math.log10(smallest)), 0)  # 3 significant digits of the smallest
    digits = next((d for d in range(first, first + 5) if all(_same_side(v, d) for v in values[1:])), first + 4)
    ratio, low, high = (f"{v:.{digits}f}" for v in values)
    return f"{ratio} [95% CI {low}, {high}]"


def _same_side(value: float, digits: int) -> bool:
    """``value`` rounded to ``digits`` decimals lies on the same side of 1 as ``value``."""
    return np.sign(round(value, digits) - 1) == np.sign(value - 1)


def excludes_one(risk: pd.DataFrame) -> pd.Series:
    """Rows whose CI lies wholly above or wholly below 1."""
    return np.isfinite(risk["ratio"]) & ((risk["ci_low"] > 1) | (risk["ci_high"] < 1))


def headlines(risk: pd.DataFrame | None, limit: int = MAX_FINDINGS) -> list[Headline]:
    """At most ``limit`` headlines: the largest effects whose CI excludes 1 and, when some
    comparisons are left, a last one summing them up ("no difference detected" for those
    whose CI includes 1). Empty when nothing was compared."""
    if risk is None or risk.empty:
        return []
    definition = risk.attrs.get("definition", "mean_risk")
    hits = risk[excludes_one(risk)]
    rest = risk[~excludes_one(risk)]
    if hits.empty:
        return [Headline(f"No difference detected: all {len(risk)} risk-ratio 95% CIs include 1 "
                         f"(pruned vs dense, {definition}).", [_line(r) for r in rest.itertuples()])]
    more = len(hits) > limit or not rest.empty
    flagged = hits["validity_flag"].astype(bool) if "validity_flag" in hits else False
    order = np.lexsort((-np.abs(np.log(hits["ratio"].to_numpy(float))),
                        np.broadcast_to(np.asarray(flagged, bool), len(hits)),
                        ~(hits["p_holm"].to_numpy(float) < 0.05)))
    shown = hits.iloc[order[:limit - 1 if more else limit]]
    found = [_finding(row, definition) for row in shown.itertuples()]
    if more:
        found.append(_remainder(len(hits) - len(shown), rest))
    return found


def _remainder(extra: int, rest: pd.DataFrame) -> Headline:
    """The last headline: findings left out, and the comparisons without a difference."""
    parts = [f"{extra} further comparison(s) have a CI excluding 1 (see the risk-ratio table)"] if extra else []
    if not rest.empty:
        parts.append(f"no difference detected in the other {len(rest)} comparison(s): their 95% "
                     "CIs include 1")
    text = "; ".join(parts) + "."
    return Headline(text[0].upper() + text[1:], [_line(r) for r in rest.itertuples()])


def _finding(row, definition: str) -> Headline:
    worse = row.ratio > 1 if definition != "mean_score" else row.ratio < 1
    direction = "more" if worse else "less"
    quantity = {"mean_score": "mean score", "threshold": "share of risky summaries"}.get(definition, "mean risk")
    holm = "" if row.p_holm < 0.05 else " (not significant after the Holm correction)"
    text = (f"{row.system} shows {direction} hallucination risk than its dense model on "
            f"{row.task} by {row.metric}: {quantity} ratio {interval(row)}, Holm p {_p(row.p_holm)}"
            f"{holm}, {row.n_docs} documents. {_validity(row)}")
    return Headline(text, [_line(row)], effect=True)


def _validity(row) -> str:
    flag = getattr(row, "validity_flag", "")
    shown = getattr(row, "validity", None)
    if shown is None:
        return "Metric validity: not measured (no ground truth in this run)."
    if flag:
        return f"Metric validity FLAGGED ({shown}): {flag}."
    return f"Metric validity: {shown}."


def _line(row) -> str:
    return f"{row.system} on {row.task}, {row.metric}: {interval(row)}"


def _p(p: float) -> str:
    if not np.isfinite(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else sig3(p)
