"""Agreement between annotators and which system they judged worse, per batch and question.

Statistics come from the maintained libraries: Cohen's kappa per annotator pair (scikit-learn),
Fleiss' kappa (statsmodels) and Krippendorff's alpha, nominal (``krippendorff``) across all
annotators, each with a percentile bootstrap CI over items (seeded) and its Landis-Koch band.
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
    rng = np.random.default_rng(seed)
    n = len(ratings.codes)
    draws = []
    for _ in range(n_boot):
        try:
            draws.append(statistic(Ratings(ratings.codes[rng.integers(0, n, n)], ratings.annotators)))
        except Undefined:
            continue
    skipped = n_boot - len(draws)
    low, high = np.percentile(draws, [2.5, 97.5]) if draws else (None, None)
    return {"value": value, "ci_low": None if low is None else float(low),
            "ci_high": None if high is None else float(high), "band": landis_koch(value),
            "note": f"{skipped} of {n_boot} bootstrap resamples undefined" if skipped else ""}


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
        sources += [f"annotation/{batch_id}/key/key.json",
                    *(f"annotation/{batch_id}/imports/{name}.json" for name in sorted(stored))]
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
    """Write ``annotation/agreement.json`` (labelled when the annotators were simulated)."""
    path = Path(run_dir) / "annotation" / "agreement.json"
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
