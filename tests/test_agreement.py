"""Agreement statistics against hand-worked formulas, degenerate cases reported as undefined,
Landis-Koch bands, the bootstrap (its vectorized Cohen's kappa against scikit-learn on every
resample), and the unblinded judged-worse counts with the sign test."""

from __future__ import annotations

from collections import Counter
from itertools import permutations
from math import comb

import numpy as np
import pytest

from analysis.agreement import (UNDEFINED, Ratings, Undefined, bootstrap_resamples, cohen_kappa,
                                cohen_kappa_replicates, compute_agreement, estimate, fleiss_kappa, judged_worse,
                                krippendorff_alpha, landis_koch)

LABELS = ("A", "B", "tie")
RATER_1 = ["A", "A", "B", "B", "tie", "A", "B", "A", "tie", "B"]
RATER_2 = ["A", "B", "B", "B", "tie", "A", "A", "A", "B", "B"]


def test_cohen_kappa_matches_observed_and_chance_agreement():
    n = len(RATER_1)
    p_observed = sum(x == y for x, y in zip(RATER_1, RATER_2)) / n  # 7/10
    c1, c2 = Counter(RATER_1), Counter(RATER_2)
    p_chance = sum(c1[label] * c2[label] for label in LABELS) / n**2  # (4*4 + 4*5 + 2*1) / 100
    assert (p_observed, p_chance) == (0.7, 0.38)
    expected = (p_observed - p_chance) / (1 - p_chance)
    assert cohen_kappa(Ratings.of({"r1": RATER_1, "r2": RATER_2})) == pytest.approx(expected)


def test_cohen_kappa_uses_only_items_both_answered():
    r1, r2 = RATER_1 + [None, "A"], RATER_2 + ["B", None]
    assert cohen_kappa(Ratings.of({"r1": r1, "r2": r2})) == pytest.approx(
        cohen_kappa(Ratings.of({"r1": RATER_1, "r2": RATER_2})))


FLEISS = [  # 5 items x 3 raters
    ["A", "A", "A"],
    ["A", "B", "B"],
    ["tie", "tie", "B"],
    ["B", "B", "B"],
    ["A", "tie", "B"],
]


def test_fleiss_kappa_matches_the_formula():
    m, n = 3, len(FLEISS)
    counts = [[row.count(label) for label in LABELS] for row in FLEISS]
    p_items = [(sum(c * c for c in row) - m) / (m * (m - 1)) for row in counts]
    p_bar = sum(p_items) / n
    shares = [sum(row[j] for row in counts) / (n * m) for j in range(len(LABELS))]
    p_e = sum(p * p for p in shares)
    expected = (p_bar - p_e) / (1 - p_e)
    ratings = Ratings.of({f"r{j}": [row[j] for row in FLEISS] for j in range(m)})
    assert fleiss_kappa(ratings) == pytest.approx(expected)
    # an item rated by fewer annotators is left out (Fleiss needs equal ratings per item)
    extra = Ratings.of({f"r{j}": [row[j] for row in FLEISS] + [("A", "B", None)[j]] for j in range(m)})
    assert fleiss_kappa(extra) == pytest.approx(expected)


def test_krippendorff_alpha_matches_the_coincidence_matrix_with_missing_values():
    units = [["A", "A", None], ["A", "B", "B"], ["tie", "tie", "tie"], ["B", None, None],
             ["B", "B", "A"], [None, "tie", "A"]]
    coincidence = Counter()
    for unit in units:
        values = [v for v in unit if v is not None]
        if len(values) < 2:
            continue  # a unit with one value is not pairable
        for i, j in permutations(range(len(values)), 2):
            coincidence[values[i], values[j]] += 1 / (len(values) - 1)
    n_c = {c: sum(coincidence[c, k] for k in LABELS) for c in LABELS}
    n = sum(n_c.values())
    observed = sum(coincidence[c, k] for c in LABELS for k in LABELS if c != k)
    expected_pairs = sum(n_c[c] * n_c[k] for c in LABELS for k in LABELS if c != k)
    expected = 1 - (n - 1) * observed / expected_pairs
    ratings = Ratings.of({f"r{j}": [u[j] for u in units] for j in range(3)})
    assert krippendorff_alpha(ratings) == pytest.approx(expected)


def test_degenerate_cases_are_undefined_with_a_reason():
    constant = Ratings.of({"ann1": ["A"] * 6, "ann2": ["A", "B", "tie", "A", "B", "A"]})
    with pytest.raises(Undefined, match="ann1 answered 'A' to all 6 items"):
        cohen_kappa(constant)
    nobody = Ratings.of({"ann1": [None] * 4, "ann2": [None] * 4, "ann3": [None] * 4})
    for statistic in (cohen_kappa, fleiss_kappa, krippendorff_alpha):
        result = estimate(statistic, nobody if statistic is not cohen_kappa else nobody.pick(["ann1", "ann2"]),
                          n_boot=20, seed=0)
        assert result["value"] == UNDEFINED and result["note"] == "nobody answered this question"
    unanimous = Ratings.of({"ann1": ["tie"] * 5, "ann2": ["tie"] * 5})
    for statistic in (fleiss_kappa, krippendorff_alpha):
        with pytest.raises(Undefined, match="every rating is 'tie'"):
            statistic(unanimous)
    disjoint = Ratings.of({"ann1": ["A", None], "ann2": [None, "B"]})
    with pytest.raises(Undefined, match="no item was answered by both"):
        cohen_kappa(disjoint)
    with pytest.raises(Undefined, match="no item was rated by two or more"):
        krippendorff_alpha(disjoint)


def test_landis_koch_bands():
    assert [landis_koch(v) for v in (-0.1, 0.0, 0.2, 0.21, 0.4, 0.6, 0.61, 0.8, 0.81, 1.0)] == [
        "poor", "slight", "slight", "fair", "fair", "moderate", "substantial", "substantial",
        "almost perfect", "almost perfect"]


def test_bootstrap_ci_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(5)
    truth = rng.choice(LABELS, 60)
    noisy = [t if rng.random() < 0.7 else rng.choice(LABELS) for t in truth]
    ratings = Ratings.of({"a": list(truth), "b": noisy})
    first = estimate(cohen_kappa, ratings, n_boot=300, seed=1)
    assert first == estimate(cohen_kappa, ratings, n_boot=300, seed=1)
    assert first["ci_low"] < first["value"] < first["ci_high"]
    assert first["band"] == landis_koch(first["value"])
    assert estimate(cohen_kappa, ratings, n_boot=300, seed=2)["ci_low"] != first["ci_low"]


def test_vectorized_cohen_replicates_equal_sklearn_on_every_resample():
    from sklearn.metrics import cohen_kappa_score

    # few items, a rare label and unanswered items: many resamples are undefined, for each reason
    r1 = ["A", "A", "A", "A", "B", "A", None, "tie", "A"]
    r2 = ["A", "B", "A", "tie", "B", None, "A", "A", "A"]
    ratings = Ratings.of({"r1": r1, "r2": r2})
    resamples = bootstrap_resamples(len(r1), n_boot=50, seed=7)
    replicates = cohen_kappa_replicates(ratings, resamples)
    reasons = Counter()
    for rows, replicate in zip(resamples, replicates):
        both = [(r1[i], r2[i]) for i in rows if r1[i] is not None and r2[i] is not None]
        try:
            cohen_kappa(Ratings(ratings.codes[rows], ratings.annotators))
        except Undefined as exc:
            assert np.isnan(replicate)
            reasons["no item" if "no item" in str(exc) else "one label"] += 1
            continue
        expected = cohen_kappa_score([a for a, _ in both], [b for _, b in both], labels=list(LABELS))
        assert abs(replicate - expected) <= 1e-12
        reasons["defined"] += 1
    assert reasons["defined"] >= 30 and reasons["one label"] >= 10  # the check covers both kinds
    assert np.isnan(cohen_kappa_replicates(Ratings.of({"r1": ["A", None], "r2": [None, "B"]}),
                                           np.array([[0, 1], [1, 1]]))).all()  # nobody answered both


def test_estimate_equals_cohen_kappa_called_on_each_resample_drawn_one_at_a_time():
    rng = np.random.default_rng(7)
    truth = rng.choice(LABELS, 25)
    ratings = Ratings.of({"a": list(truth), "b": [t if rng.random() < 0.6 else rng.choice(LABELS) for t in truth]})
    draws, resample = [], np.random.default_rng(4)
    for _ in range(200):  # the plain bootstrap: one resample at a time, a scikit-learn call each
        rows = resample.integers(0, 25, 25)
        try:
            draws.append(cohen_kappa(Ratings(ratings.codes[rows], ratings.annotators)))
        except Undefined:
            continue
    result = estimate(cohen_kappa, ratings, n_boot=200, seed=4)
    assert [result["ci_low"], result["ci_high"]] == pytest.approx(np.percentile(draws, [2.5, 97.5]), abs=1e-12)
    assert result["note"] == ("" if len(draws) == 200 else f"{200 - len(draws)} of 200 bootstrap resamples undefined")


def test_judged_worse_unblinds_uses_the_majority_and_sign_test():
    # item: annotators' answers, which system wrote A
    answers = {"x": ["A", "A", "B", "tie", "B", "A", "A", "B"],
               "y": ["A", "B", "B", "tie", "B", "A", "A", None],
               "z": ["B", "tie", "B", "A", "A", "A", "A", None]}
    a_is = ["system", "system", "baseline", "system", "baseline", "baseline", "system", "system"]
    ratings = Ratings.of(answers)
    # majorities: A, tie (A/B/tie one each), B, tie, B, A, A, B
    # picked (Q1 "more hallucinations" = worse): system, -, system, -, system, baseline, system, baseline
    q1 = judged_worse(ratings, a_is, "q1_hallucination")
    assert (q1["system_worse"], q1["baseline_worse"], q1["ties"], q1["n_items"]) == (4, 2, 2, 8)
    q4 = judged_worse(ratings, a_is, "q4_alignment")  # "more aligned": the other one is worse
    assert (q4["system_worse"], q4["baseline_worse"], q4["ties"]) == (2, 4, 2)
    lopsided = Ratings.of({"x": ["A"] * 9 + ["B"]})
    result = judged_worse(lopsided, ["system"] * 10, "q2_omission")
    k, n = 9, 10
    two_sided = 2 * sum(comb(n, i) for i in range(k, n + 1)) / 2**n
    assert (result["system_worse"], result["baseline_worse"]) == (9, 1)
    assert result["p_value"] == pytest.approx(two_sided)
    assert judged_worse(Ratings.of({"x": ["tie", None]}), ["system"] * 2, "q1_hallucination")["p_value"] == UNDEFINED


def test_a_question_nobody_answered_is_undefined_in_the_run_tables(tmp_path):
    from annotation.batch import QUESTIONS, load_batch
    from annotation.formats import write_annotator_file
    from annotation.importer import import_answers
    from tests.test_annotation import demo_documents, make_run

    from annotation.export import export_batches

    make_run(tmp_path)
    directory = export_batches(tmp_path, n=8, annotators=["a", "b"], pairs=[("wanda-0.5", "dense")],
                               documents=demo_documents())[0]
    batch = load_batch(directory)
    rng = np.random.default_rng(0)
    paths = []
    for annotator in batch.annotators:
        answers = {i: {q: ("" if q == "q3_repetition" else str(rng.choice(LABELS))) for q in QUESTIONS}
                   for i in batch.assignment[annotator]}
        path = tmp_path / f"{annotator}.csv"
        write_annotator_file(path, batch, annotator, "csv", answers)
        paths.append(path)
    import_answers(tmp_path, paths)
    result = compute_agreement(tmp_path, n_boot=50)
    table = result.agreement.set_index(["question", "statistic"])
    assert len(result.agreement) == 4 * 3 and not result.simulated
    q3 = table.loc["q3_repetition"]
    assert (q3["value"] == UNDEFINED).all() and (q3["note"] == "nobody answered this question").all()
    q1 = table.loc[("q1_hallucination", "cohen_kappa")]
    assert isinstance(q1["value"], float) and q1["n_items"] == 8
    prefs = result.preferences.set_index("question")
    assert prefs.loc["q3_repetition", "n_items"] == 0 and prefs.loc["q3_repetition", "p_value"] == UNDEFINED
