"""Metric validity: how well each hallucination metric's risk detects a hallucinated summary.

Input is a table with a row per scored summary: a risk column per metric (higher = more likely
hallucinated), a 0/1 label (1 = hallucinated) and a group (the document: rows of one document
are resampled and cross-validated together). Per metric:

- ROC-AUC of the risk for the label (ties count one half; 0.5 is chance);
- balanced accuracy of "risk > threshold", the threshold chosen to maximise balanced accuracy
  on held-out data only: on the ``val`` cut and evaluated on the ``test`` cut where the data
  has both, else by k-fold cross-validation over groups (each fold is predicted with the
  threshold chosen on the other folds). AUC is measured on the evaluated cut (all rows under
  cross-validation);
- percentile bootstrap CIs over groups (resampling the evaluated rows; the chosen thresholds
  are held fixed, so the balanced-accuracy CI leaves out the threshold's own variance);
  resamples holding one class only are dropped and counted in the note.

On a run (``run_validity``) the label is the ground-truth column ``gt_hallucination``; each
metric is measured pooled over a task's summaries (all systems) and per system where each
class has at least ``MIN_PER_CLASS`` documents. ``ratio_correlation`` relates each metric's
risk ratios to the ground-truth hallucination difference (pruned - dense) across systems.
``validity_flags`` names the metrics whose AUC CI includes 0.5 (or lies below it, or could
not be measured): their risk ratios are not shown to track hallucination.
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from harness.errors import PrunescopeError

MIN_PER_CLASS = 10  # per-system validity needs this many documents of each class
FOLDS = 5
GT_LABEL = "gt_hallucination"
_MAX_DRAWS = 4_000_000  # bootstrap weights held in memory at once


class ValidityError(PrunescopeError):
    """Labels or cuts that cannot be used to measure validity."""


@dataclass(frozen=True)
class Validity:
    n: int
    n_hallucinated: int
    n_consistent: int
    auc: float
    auc_low: float
    auc_high: float
    balanced_accuracy: float
    ba_low: float
    ba_high: float
    threshold: float  # on val (cut protocol) or on all rows (CV; the folds use their own)
    protocol: str  # "val -> test" or "k-fold CV"
    note: str  # why a value is NaN, or a caveat; "" when none


# --- the statistics, on weighted rows (bootstrap replicates are rows of weights) -------------

def weighted_auc(labels: np.ndarray, risk: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """ROC-AUC of ``risk`` for ``labels`` (1 = positive) under row ``weights`` of shape (n,) or
    (B, n); ties count one half. Weights of one replicate with no positive or no negative
    weight give NaN."""
    labels, risk = np.asarray(labels, bool), np.asarray(risk, float)
    w = np.ones((1, len(risk))) if weights is None else np.atleast_2d(np.asarray(weights, float))
    order = np.argsort(risk, kind="stable")
    sorted_risk, pos = risk[order], labels[order]
    w = w[:, order]
    starts = np.flatnonzero(np.r_[True, sorted_risk[1:] != sorted_risk[:-1]])  # tie blocks
    neg_block = np.add.reduceat(w * ~pos, starts, axis=1)
    pos_block = np.add.reduceat(w * pos, starts, axis=1)
    neg_below = np.cumsum(neg_block, axis=1) - neg_block
    total_pos, total_neg = pos_block.sum(axis=1), neg_block.sum(axis=1)
    wins = (pos_block * (neg_below + 0.5 * neg_block)).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = np.where((total_pos > 0) & (total_neg > 0), wins / (total_pos * total_neg), np.nan)
    return auc if weights is not None and np.ndim(weights) == 2 else auc[0]


def weighted_balanced_accuracy(labels: np.ndarray, predicted: np.ndarray,
                               weights: np.ndarray | None = None) -> np.ndarray:
    """Mean of the true-positive and true-negative rates under row weights ((n,) or (B, n))."""
    labels, predicted = np.asarray(labels, bool), np.asarray(predicted, bool)
    w = np.ones((1, len(labels))) if weights is None else np.atleast_2d(np.asarray(weights, float))
    pos, neg = (w * labels).sum(axis=1), (w * ~labels).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        tpr = (w * (labels & predicted)).sum(axis=1) / pos
        tnr = (w * (~labels & ~predicted)).sum(axis=1) / neg
        ba = np.where((pos > 0) & (neg > 0), (tpr + tnr) / 2, np.nan)
    return ba if weights is not None and np.ndim(weights) == 2 else ba[0]


def best_threshold(labels: np.ndarray, risk: np.ndarray) -> float:
    """The threshold t maximising the balanced accuracy of ``risk > t`` on these rows: one of
    the midpoints between consecutive distinct risks, or just below the lowest / at the highest
    (predict all / none); the lowest such t wins a tie."""
    labels, risk = np.asarray(labels, bool), np.asarray(risk, float)
    if labels.all() or not labels.any():
        raise ValidityError("choosing a threshold needs both classes")
    values = np.unique(risk)
    candidates = np.r_[values[0] - 1.0, (values[:-1] + values[1:]) / 2, values[-1]]
    pos, neg = np.sort(risk[labels]), np.sort(risk[~labels])
    tpr = 1 - np.searchsorted(pos, candidates, side="right") / len(pos)
    tnr = np.searchsorted(neg, candidates, side="right") / len(neg)
    return float(candidates[np.argmax((tpr + tnr) / 2)])


# --- protocols ----------------------------------------------------------------------------

def fold_of_groups(labels: np.ndarray, groups: np.ndarray, k: int, seed: int) -> np.ndarray:
    """A fold index per row. Groups (documents) are shuffled with ``seed`` within three strata
    (hallucinated rows only, both kinds, consistent rows only) and dealt round-robin to ``k``
    folds in that order with one running count, so the groups holding each class form one run
    of the deal: with at least ``k`` such groups per class (k >= 2) every fold's complement
    holds both classes."""
    labels, groups = np.asarray(labels, bool), np.asarray(groups)
    names, index = np.unique(groups, return_inverse=True)
    has_pos, has_neg = np.zeros(len(names), bool), np.zeros(len(names), bool)
    np.logical_or.at(has_pos, index, labels)
    np.logical_or.at(has_neg, index, ~labels)
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(np.flatnonzero(stratum)) for stratum in
                            (has_pos & ~has_neg, has_pos & has_neg, ~has_pos & has_neg)])
    fold = np.empty(len(names), int)
    fold[order] = np.arange(len(order)) % k
    return fold[index]


def cross_validated_predictions(labels, risk, groups, k: int = FOLDS, seed: int = 0):
    """(predicted, fold per row, threshold per fold): each fold predicted with the threshold
    chosen on the other folds only."""
    labels, risk = np.asarray(labels, bool), np.asarray(risk, float)
    fold = fold_of_groups(labels, groups, k, seed)
    predicted = np.zeros(len(labels), bool)
    thresholds = []
    for f in range(k):
        held = fold == f
        t = best_threshold(labels[~held], risk[~held])
        predicted[held] = risk[held] > t
        thresholds.append(t)
    return predicted, fold, thresholds


def evaluate(labels, risk, groups=None, cut=None, n_boot: int = 1000, seed: int = 0,
             level: float = 0.95, folds: int = FOLDS) -> Validity:
    """Validity of one metric's ``risk`` for ``labels`` (1 = hallucinated).

    ``cut`` (optional, per row "val" / "test"): choose the threshold on val, measure on test.
    Without it, ``folds``-fold cross-validation over ``groups`` (default: each row its own)."""
    labels, risk = np.asarray(labels, bool), np.asarray(risk, float)
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    if not np.isfinite(risk).all():
        keep = np.isfinite(risk)
        labels, risk, groups = labels[keep], risk[keep], groups[keep]
        cut = None if cut is None else np.asarray(cut)[keep]
    notes = []
    if cut is not None:
        cut = np.asarray(cut)
        val, test = cut == "val", cut == "test"
        protocol = "val -> test"
        for name, rows in (("val", val), ("test", test)):
            if labels[rows].all() or not labels[rows].any():
                return _undefined(labels[test], protocol, f"the {name} cut does not hold both classes")
        threshold = best_threshold(labels[val], risk[val])
        labels, risk, groups = labels[test], risk[test], groups[test]
        predicted = risk > threshold
    else:
        n_pos_groups = len(np.unique(groups[labels]))
        n_neg_groups = len(np.unique(groups[~labels]))
        k = min(folds, n_pos_groups, n_neg_groups)
        protocol = f"{k}-fold CV"
        if k < 2:
            return _undefined(labels, protocol, "fewer than 2 documents of a class: cannot cross-validate")
        predicted, _, _ = cross_validated_predictions(labels, risk, groups, k, seed)
        threshold = best_threshold(labels, risk)
    auc = float(weighted_auc(labels, risk))
    ba = float(weighted_balanced_accuracy(labels, predicted))
    (auc_lo, auc_hi), (ba_lo, ba_hi), dropped = _bootstrap(labels, risk, predicted, groups,
                                                          n_boot, seed, level)
    if dropped:
        notes.append(f"{dropped} of {n_boot} resamples held one class only and were dropped")
    return Validity(len(labels), int(labels.sum()), int((~labels).sum()), auc, auc_lo, auc_hi,
                    ba, ba_lo, ba_hi, threshold, protocol, "; ".join(notes))


def _undefined(labels, protocol: str, note: str) -> Validity:
    labels = np.asarray(labels, bool)
    return Validity(len(labels), int(labels.sum()), int((~labels).sum()), *[np.nan] * 7,
                    protocol, note)


def _bootstrap(labels, risk, predicted, groups, n_boot, seed, level):
    """Percentile CIs of AUC and balanced accuracy, resampling groups with replacement."""
    names, index = np.unique(groups, return_inverse=True)
    rng = np.random.default_rng(seed)
    chunk = max(1, _MAX_DRAWS // len(labels))
    aucs, bas = [], []
    for start in range(0, n_boot, chunk):
        draws = rng.multinomial(len(names), np.full(len(names), 1 / len(names)),
                                size=min(chunk, n_boot - start))
        weights = draws[:, index]
        aucs.append(weighted_auc(labels, risk, weights))
        bas.append(weighted_balanced_accuracy(labels, predicted, weights))
    aucs, bas = np.concatenate(aucs), np.concatenate(bas)
    ok = np.isfinite(aucs)
    tail = (1 - level) / 2 * 100
    if not ok.any():
        return (np.nan, np.nan), (np.nan, np.nan), n_boot
    interval = lambda values: tuple(float(v) for v in np.percentile(values[ok], [tail, 100 - tail]))  # noqa: E731
    return interval(aucs), interval(bas), int((~ok).sum())


# --- on a table of scored summaries ------------------------------------------------------

def validity_table(frame: pd.DataFrame, metrics: list[str], label: str = GT_LABEL,
                   by: list[str] | None = None, group: str | None = "doc_id",
                   cut: str | None = None, min_per_class: int = 0, n_boot: int = 1000,
                   seed: int = 0) -> pd.DataFrame:
    """A row per (``by`` values, metric) with the fields of :class:`Validity`.

    ``frame`` has a risk column per name in ``metrics``, a 0/1 ``label`` column (1 =
    hallucinated; NaN rows are left out), an optional ``group`` and ``cut`` column. A slice
    with fewer than ``min_per_class`` documents in a class gets NaN values and a note.
    Each slice's bootstrap is seeded from ``seed`` and the slice's identity."""
    by = by or []
    rows = []
    data = frame.dropna(subset=[label])
    check_labels(data[label], label)
    slices = data.groupby(by, sort=False) if by else [((), data)]
    for key, part in slices:
        key = key if isinstance(key, tuple) else (key,)
        ident = dict(zip(by, key))
        for metric in metrics:
            y = part[label].to_numpy().astype(bool)
            counts = [len(np.unique(part[group][y == c])) if group else int((y == c).sum())
                      for c in (True, False)]
            if min(counts) < min_per_class:
                result = _undefined(y, "", f"n/a: fewer than {min_per_class} documents per class "
                                    f"({counts[0]} hallucinated, {counts[1]} consistent)")
            else:
                rng_seed = zlib.crc32(f"{seed}/{key}/{metric}".encode())
                result = evaluate(y, part[metric].to_numpy(), None if group is None else part[group].to_numpy(),
                                  None if cut is None else part[cut].to_numpy(), n_boot, rng_seed)
            rows.append({**ident, "metric": metric, **asdict(result)})
    columns = by + ["metric", *Validity.__dataclass_fields__]
    return pd.DataFrame(rows, columns=columns)


def check_labels(values: pd.Series, label: str, where=lambda index: f"row {index}") -> None:
    """Refuse label values other than 0 and 1 (NaN aside), naming the first offending row by
    ``where(index)``."""
    bad = values.notna() & ~values.isin([0, 1])
    if bad.any():
        index = values.index[bad][0]
        raise ValidityError(f"{where(index)}: field {label!r}: value {values[index]} is not 0 or 1")


def validity_flags(table: pd.DataFrame, by: list[str] | None = None) -> dict[tuple, str]:
    """(``by`` values..., metric) -> why the metric is flagged, for each metric whose AUC CI
    includes 0.5 (or lies below it: the risk runs against the labels) or could not be
    measured; valid metrics are absent."""
    flags = {}
    for _, row in table.iterrows():
        key = tuple(row[c] for c in (by or [])) + (row["metric"],)
        if not np.isfinite(row["auc_low"]):
            flags[key] = f"validity not measured ({row['note'] or 'no CI'})"
        elif row["auc_low"] <= 0.5 <= row["auc_high"]:
            flags[key] = f"AUC {_short(row)} includes 0.5: not shown to detect hallucination"
        elif row["auc_high"] < 0.5:
            flags[key] = f"AUC {_short(row)} below 0.5: its risk falls as hallucination rises"
    return flags


def _short(row) -> str:
    return f"{row['auc']:.2f} [{row['auc_low']:.2f}, {row['auc_high']:.2f}]"


def format_interval(value: float, low: float, high: float) -> str:
    """'value [low, high]' to three decimals; 'n/a' for NaN, the value alone without a CI."""
    if not np.isfinite(value):
        return "n/a"
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{value:.3f}"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def spearman_ci(x, y, level: float = 0.95) -> tuple[float, float, float, str]:
    """Spearman's rho with a Fisher-z CI using the Bonett-Wright standard error
    sqrt((1 + rho^2 / 2) / (n - 3)); (rho, low, high, note)."""
    from scipy.stats import norm, spearmanr

    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = len(x)
    if n < 4:
        return np.nan, np.nan, np.nan, f"{n} systems: a CI needs at least 4"
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return np.nan, np.nan, np.nan, "one side is constant across systems: rho undefined"
    rho = float(spearmanr(x, y).statistic)
    if abs(rho) == 1:
        return rho, rho, rho, "perfect rank agreement: the Fisher-z CI degenerates"
    se = np.sqrt((1 + rho ** 2 / 2) / (n - 3))
    z = np.arctanh(rho)
    half = norm.ppf(1 - (1 - level) / 2) * se
    return rho, float(np.tanh(z - half)), float(np.tanh(z + half)), ""
