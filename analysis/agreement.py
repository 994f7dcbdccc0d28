"""Agreement between annotators and which system they judged worse, per batch and question.

Estimates come from the maintained libraries: Cohen's kappa per annotator pair (scikit-learn),
Fleiss' kappa (statsmodels) and Krippendorff's alpha, nominal (``krippendorff``) across all
annotators, each with a percentile bootstrap CI over items (seeded) and its Landis-Koch band.
The bootstrap replicates of Cohen's kappa are computed for all resamples at once with numpy
(``cohen_kappa_replicates``, the same arithmetic as scikit-learn, checked against it in the
tests): called once per resample, scikit-learn took almost all of the agreement's time.
Where a statistic carries no information (nobody answered; an annotator gave one label to
every item; every rating is the same label) it is reported as "undefined" with the reason.

Fleiss' kappa needs the same number of ratings per item: it uses the items rated by the most
annotators (with the export's assignment rule, the shared items). Krippendorff's alpha uses
every item rated at least twice. Cohen's kappa uses the items both annotators answered.

Preferences: per item, the annotators' majority answer (a tied vote counts as a tie) is
unblinded with the batch key into "system worse", "baseline worse" or tie (Q1-Q3 ask which is
worse, Q4 which is better); a two-sided sign test (``scipy.stats.binomtest``) over the items
without a tie asks whether one system is judged worse more often.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from annotation.batch import ANSWERS, BETTER_QUESTIONS, QUESTIONS, batch_dir, list_batches, load_batch, load_key
from annotation.importer import read_imports
from harness import atomic
from harness.store import RunStore

UNDEFINED = "undefined"
SIMULATED_NOTE = "simulated annotators: these answers were generated, not given by people"
_CODES = {answer: code for code, answer in enumerate(ANSWERS)}


@dataclass(frozen=True)
class Ratings:
    """Answers to one question: items x annotators, coded as indices into ANSWERS (NaN: none)."""

    codes: np.ndarray
    annotators: list[str]

    @classmethod
    def of(cls, answers: dict[str, list[str | None]]) -> Ratings:
        """From annotator -> answers per item (None where not answered)."""
        names = list(answers)
        codes = np.array([[_code(a) for a in answers[n]] for n in names], dtype=float).T
        return cls(codes.reshape(-1, len(names)), names)

    def pick(self, names: list[str]) -> Ratings:
        return Ratings(self.codes[:, [self.annotators.index(n) for n in names]], names)


class Undefined(Exception):
    """A statistic with no meaningful value on these ratings; the message says why."""


@dataclass
class Agreement:
    # batch, question, statistic, annotators, n_items (rated at least twice), value, ci_low,
    # ci_high, band, note
    agreement: pd.DataFrame
    preferences: pd.DataFrame  # batch, system, baseline, question, n_items, system_worse, baseline_worse, ties, p_value
    simulated: bool
    sources: list[str]
    n_boot: int
    seed: int


def landis_koch(value: float) -> str:
    """Landis & Koch (1977) descriptive bands for kappa-like statistics."""
    if value < 0:
        return "poor"
    for upper, band in ((0.20, "slight"), (0.40, "fair"), (0.60, "moderate"), (0.80, "substantial")):
        if value <= upper:
            return band
    return "almost perfect"


def cohen_kappa(ratings: Ratings) -> float:
    """Cohen's kappa of two annotators over the items both answered."""
    from sklearn.metrics import cohen_kappa_score

    _require_answers(ratings)
    both = ratings.codes[~np.isnan(ratings.codes).any(axis=1)]
    if len(both) == 0:
        raise Undefined("no item was answered by both annotators")
    for column, name in enumerate(ratings.annotators):
        labels = np.unique(both[:, column])
        if len(labels) == 1:
            raise Undefined(f"{name} answered {ANSWERS[int(labels[0])]!r} to all {len(both)} items both "
                            "answered; with no variation kappa carries no information")
    both = both.astype(int)
    return float(cohen_kappa_score(both[:, 0], both[:, 1], labels=list(range(len(ANSWERS)))))


def fleiss_kappa(ratings: Ratings) -> float:
    """Fleiss' kappa over the items rated by the most annotators."""
    from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa as sm_fleiss

    _require_answers(ratings)
    rated = ~np.isnan(ratings.codes)
    counts = rated.sum(axis=1)
    most = counts.max()
    if most < 2:
        raise Undefined("no item was rated by two or more annotators")
    rows = np.array([row[ok] for row, ok in zip(ratings.codes[counts == most], rated[counts == most])])
    _require_variation(rows)
    table, _ = aggregate_raters(rows.astype(int), n_cat=len(ANSWERS))
    return float(sm_fleiss(table, method="fleiss"))


def krippendorff_alpha(ratings: Ratings) -> float:
    """Krippendorff's alpha (nominal) over every item rated at least twice."""
    import krippendorff

    _require_answers(ratings)
    pairable = ratings.codes[(~np.isnan(ratings.codes)).sum(axis=1) >= 2]
    if len(pairable) == 0:
        raise Undefined("no item was rated by two or more annotators")
    _require_variation(pairable[~np.isnan(pairable)])
    return float(krippendorff.alpha(reliability_data=pairable.T, level_of_measurement="nominal",
                                    value_domain=list(range(len(ANSWERS)))))


def estimate(statistic: Callable[[Ratings], float], ratings: Ratings, n_boot: int, seed: int) -> dict:
    """The statistic, a 95% percentile bootstrap CI over items, and its band (or the reason it
    is undefined). Resamples where it is undefined are left out and counted in the note."""
    try:
        value = statistic(ratings)
    except Undefined as exc:
        return {"value": UNDEFINED, "ci_low": None, "ci_high": None, "band": None, "note": str(exc)}
    replicates = bootstrap_replicates(statistic, ratings, bootstrap_resamples(len(ratings.codes), n_boot, seed))
    draws = replicates[~np.isnan(replicates)]
    skipped = n_boot - len(draws)
    low, high = np.percentile(draws, [2.5, 97.5]) if len(draws) else (None, None)
    return {"value": value, "ci_low": None if low is None else float(low),
            "ci_high": None if high is None else float(high), "band": landis_koch(value),
            "note": f"{skipped} of {n_boot} bootstrap resamples undefined" if skipped else ""}


def bootstrap_resamples(n: int, n_boot: int, seed: int) -> np.ndarray:
    """``n_boot`` x ``n`` item indices, each row one resample drawn with replacement (the same
    rows as drawing one resample at a time from the seeded generator)."""
    return np.random.default_rng(seed).integers(0, n, (n_boot, n))


def bootstrap_replicates(statistic: Callable[[Ratings], float], ratings: Ratings,
                         resamples: np.ndarray) -> np.ndarray:
    """The statistic on each resample (a row of item indices), NaN where it is undefined."""
    if statistic is cohen_kappa:
        return cohen_kappa_replicates(ratings, resamples)
    out = np.full(len(resamples), np.nan)
    for number, rows in enumerate(resamples):
        try:
            out[number] = statistic(Ratings(ratings.codes[rows], ratings.annotators))
        except Undefined:
            pass
    return out


def cohen_kappa_replicates(ratings: Ratings, resamples: np.ndarray) -> np.ndarray:
    """``cohen_kappa`` of two annotators on every resample at once, NaN where it is undefined.

    Each item's pair of answers becomes one code; one ``bincount`` over (resample, code) gives
    every resample's confusion matrix, and kappa follows scikit-learn's ``cohen_kappa_score``:
    1 - sum(off-diagonal observed) / sum(off-diagonal expected), expected = outer(marginals) / n.
    """
    if len(ratings.annotators) != 2:
        raise ValueError(f"Cohen's kappa compares two annotators (got {ratings.annotators})")
    k = len(ANSWERS)
    codes = ratings.codes
    both = ~np.isnan(codes).any(axis=1)
    # code of an item both answered: k * answer 1 + answer 2; k * k: not answered by both (dropped)
    pair = np.where(both, np.nan_to_num(codes[:, 0]) * k + np.nan_to_num(codes[:, 1]), k * k).astype(np.intp)
    n_boot, slots = len(resamples), k * k + 1
    flat = (np.arange(n_boot, dtype=np.intp)[:, None] * slots + pair[resamples]).ravel()
    counts = np.bincount(flat, minlength=n_boot * slots).reshape(n_boot, slots)
    confusion = counts[:, : k * k].reshape(n_boot, k, k).astype(float)  # [resample, answer 1, answer 2]
    first, second = confusion.sum(axis=2), confusion.sum(axis=1)  # each annotator's label counts
    total = second.sum(axis=1)
    disagree = 1.0 - np.eye(k)
    # undefined as in cohen_kappa: no item answered by both, or an annotator used one label only
    defined = ((first > 0).sum(axis=1) > 1) & ((second > 0).sum(axis=1) > 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = second[:, :, None] * first[:, None, :] / total[:, None, None]
        kappa = 1 - (disagree * confusion).sum(axis=(1, 2)) / (disagree * expected).sum(axis=(1, 2))
    return np.where(defined, kappa, np.nan)


def ratings_table(stored: dict, item_ids: list[str], question: str) -> Ratings:
    """Items x annotators answers to one question, from stored answers by annotator."""
    return Ratings.of({name: [s.items[i].answers[question] if i in s.items else None for i in item_ids]
                       for name, s in sorted(stored.items())})


def compute_agreement(run_dir: str | Path, n_boot: int = 1000, seed: int = 0) -> Agreement | None:
    """Agreement and preferences of every batch with imported answers (None when none has)."""
    agreement, preferences, sources, simulated = [], [], [], False
    for batch_id in list_batches(run_dir):
        directory = batch_dir(run_dir, batch_id)
        stored = read_imports(directory)
        if not stored:
            continue
        batch, key = load_batch(directory), load_key(directory)
        simulated |= any(s.simulated for s in stored.values())
        store = RunStore(run_dir)
        sources += [store.relative(directory / "key" / "key.json"),
                    *(store.relative(directory / "imports" / f"{name}.json") for name in sorted(stored))]
        item_ids = [item.item_id for item in batch.items]
        for question in QUESTIONS:
            ratings = ratings_table(stored, item_ids, question)
            rows = [("cohen_kappa", ",".join(pair), ratings.pick(list(pair)), cohen_kappa)
                    for pair in combinations(ratings.annotators, 2)]
            rows += [("fleiss_kappa", "all", ratings, fleiss_kappa),
                     ("krippendorff_alpha", "all", ratings, krippendorff_alpha)]
            for statistic, who, table, fn in rows:
                rated = int(((~np.isnan(table.codes)).sum(axis=1) >= 2).sum())
                agreement.append({"batch": batch_id, "question": question, "statistic": statistic,
                                  "annotators": who, "n_items": rated, **estimate(fn, table, n_boot, seed)})
            preferences.append({"batch": batch_id, "system": key.system, "baseline": key.baseline,
                                "question": question,
                                **judged_worse(ratings, [key.a_is[i] for i in item_ids], question)})
    if not sources:
        return None
    return Agreement(pd.DataFrame(agreement), pd.DataFrame(preferences), simulated, sources, n_boot, seed)


def judged_worse(ratings: Ratings, a_is: list[str], question: str) -> dict:
    """Counts of items where the system / the baseline was judged worse, ties, and the sign test.
    ``a_is[i]`` says which of "system" / "baseline" wrote summary A of item i."""
    from scipy.stats import binomtest

    counts = Counter()
    for row, a_role in zip(ratings.codes, a_is):
        votes = Counter(ANSWERS[int(c)] for c in row if not np.isnan(c)).most_common()
        if not votes:
            continue
        majority = votes[0][0] if len(votes) == 1 or votes[0][1] > votes[1][1] else "tie"
        if majority == "tie":
            counts["ties"] += 1
            continue
        picked = a_role if majority == "A" else _other(a_role)
        worse = _other(picked) if question in BETTER_QUESTIONS else picked
        counts[f"{worse}_worse"] += 1
    decided = counts["system_worse"] + counts["baseline_worse"]
    p_value = binomtest(counts["system_worse"], decided, 0.5).pvalue if decided else UNDEFINED
    return {"n_items": decided + counts["ties"], "system_worse": counts["system_worse"],
            "baseline_worse": counts["baseline_worse"], "ties": counts["ties"], "p_value": p_value}


def write_agreement(run_dir: str | Path, result: Agreement) -> Path:
    """Write the run's agreement.json (``RunStore.agreement_path``; labelled when the
    annotators were simulated)."""
    path = RunStore(run_dir).agreement_path
    atomic.write_json(path, {"simulated": result.simulated,
                             "note": SIMULATED_NOTE if result.simulated else "",
                             "bootstrap": {"resamples": result.n_boot, "seed": result.seed},
                             "agreement": result.agreement.to_dict("records"),
                             "preferences": result.preferences.to_dict("records"),
                             "sources": result.sources})
    return path


def _other(role: str) -> str:
    return "baseline" if role == "system" else "system"


def _code(answer: str | None) -> float:
    return np.nan if answer is None else _CODES[answer]


def _require_answers(ratings: Ratings) -> None:
    if np.isnan(ratings.codes).all():
        raise Undefined("nobody answered this question")


def _require_variation(codes: np.ndarray) -> None:
    labels = np.unique(codes)
    if len(labels) == 1:
        raise Undefined(f"every rating is {ANSWERS[int(labels[0])]!r}: chance agreement is 1, "
                        "so the statistic is 0/0")
