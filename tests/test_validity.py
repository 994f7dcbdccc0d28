"""Metric validity: AUC and balanced accuracy against scikit-learn, thresholds chosen without
the evaluated cut, grouped folds and bootstrap, the run-level section and flags, and
`validate-metrics` end to end on labelled claim files scored with the tiny scorer models."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm, spearmanr
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from analysis.load import load_run
from analysis.report import report_context, write_report
from analysis.validity_section import report_section
from analysis.validity import (ValidityError, best_threshold, check_labels,
                               cross_validated_predictions, evaluate, fold_of_groups,
                               spearman_ci, validity_flags, validity_table,
                               weighted_auc, weighted_balanced_accuracy)
from analysis.validity_section import flagged_metrics, ratio_correlation, run_validity
from harness import atomic
from harness.cli.main import main
from harness.records import PruneSpecInfo
from tests.test_analysis import SCORE_COLUMNS, make_run


def scored(n=300, seed=0, signal=0.8):
    """Labels and a risk with ties (rounded), informative by ``signal``."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, np.round(rng.normal(signal * y, 1.0), 1)


# --- the statistics ----------------------------------------------------------------------

def test_auc_and_balanced_accuracy_equal_sklearn():
    for seed in range(3):
        y, risk = scored(seed=seed)
        assert weighted_auc(y, risk) == pytest.approx(roc_auc_score(y, risk), abs=1e-12)
        weights = np.random.default_rng(seed).integers(0, 4, (6, len(y)))
        expected = [roc_auc_score(y, risk, sample_weight=w) for w in weights]
        np.testing.assert_allclose(weighted_auc(y, risk, weights), expected, atol=1e-12)
        for t in (-0.5, 0.0, 0.35, 1.2):
            predicted = risk > t
            assert weighted_balanced_accuracy(y, predicted) == pytest.approx(
                balanced_accuracy_score(y, predicted), abs=1e-12)
            np.testing.assert_allclose(
                weighted_balanced_accuracy(y, predicted, weights),
                [balanced_accuracy_score(y, predicted, sample_weight=w) for w in weights], atol=1e-12)
    # the whole evaluation's numbers, recomputed with scikit-learn from its own protocol
    y, risk = scored(seed=4)
    result = evaluate(y, risk, n_boot=200)
    predicted, _, _ = cross_validated_predictions(y, risk, np.arange(len(y)), 5, 0)
    assert result.auc == pytest.approx(roc_auc_score(y, risk))
    assert result.balanced_accuracy == pytest.approx(balanced_accuracy_score(y, predicted))
    assert result.auc_low < result.auc < result.auc_high and result.protocol == "5-fold CV"


def test_best_threshold_maximises_balanced_accuracy_by_brute_force():
    y, risk = scored(n=80, seed=1)
    t = best_threshold(y, risk)
    every = [balanced_accuracy_score(y, risk > c) for c in np.r_[risk, risk.min() - 1]]
    assert balanced_accuracy_score(y, risk > t) == pytest.approx(max(every))
    perfect = best_threshold([0, 0, 1, 1], [0.1, 0.2, 0.7, 0.9])
    assert 0.2 < perfect < 0.7
    with pytest.raises(ValidityError, match="both classes"):
        best_threshold([1, 1], [0.1, 0.2])


def test_val_threshold_never_looks_at_the_test_cut():
    y, risk = scored(n=200, seed=2)
    cut = np.where(np.arange(200) < 90, "val", "test")
    first = evaluate(y, risk, cut=cut, n_boot=100)
    assert first.threshold == best_threshold(y[cut == "val"], risk[cut == "val"])
    assert first.n == 110 and first.auc == pytest.approx(roc_auc_score(y[cut == "test"], risk[cut == "test"]))
    changed = risk.copy()
    changed[cut == "test"] = np.random.default_rng(9).permutation(changed[cut == "test"]) * 5 - 2
    second = evaluate(y, changed, cut=cut, n_boot=100)
    assert second.threshold == first.threshold and second.auc != first.auc
    test = cut == "test"
    assert second.balanced_accuracy == pytest.approx(
        balanced_accuracy_score(y[test], changed[test] > first.threshold))


def test_cross_validation_thresholds_ignore_their_own_fold():
    y, risk = scored(n=150, seed=3)
    groups = np.arange(150) // 3  # three rows per document
    predicted, fold, thresholds = cross_validated_predictions(y, risk, groups, 5, 0)
    for f, t in enumerate(thresholds):
        held = fold == f
        assert t == best_threshold(y[~held], risk[~held])
        np.testing.assert_array_equal(predicted[held], risk[held] > t)
        scrambled = risk.copy()
        scrambled[held] = 100.0  # whatever the held-out fold holds, its threshold stays
        assert cross_validated_predictions(y, scrambled, groups, 5, 0)[2][f] == t
    for g in np.unique(groups):
        assert len(set(fold[groups == g])) == 1  # a document never spans two folds


def test_folds_keep_both_classes_outside_each_fold():
    rng = np.random.default_rng(5)
    for trial in range(20):
        n = int(rng.integers(6, 40))
        groups = rng.integers(0, max(3, n // 2), n)
        y = rng.integers(0, 2, n)
        k = min(5, len(np.unique(groups[y == 1])), len(np.unique(groups[y == 0])))
        if k < 2:
            continue
        fold = fold_of_groups(y, groups, k, trial)
        for f in range(k):
            rest = y[fold != f]
            assert rest.any() and not rest.all()


def test_bootstrap_matches_a_per_replicate_loop_over_documents():
    y, risk = scored(n=60, seed=6)
    groups = np.arange(60) // 2
    result = evaluate(y, risk, groups=groups, n_boot=300, seed=11)
    names, index = np.unique(groups, return_inverse=True)
    rng = np.random.default_rng(11)
    draws = rng.multinomial(len(names), np.full(len(names), 1 / len(names)), size=300)
    aucs = []
    for draw in draws:
        w = draw[index]
        if w[y == 1].sum() and w[y == 0].sum():
            aucs.append(roc_auc_score(y, risk, sample_weight=w))
    low, high = np.percentile(aucs, [2.5, 97.5])
    assert (result.auc_low, result.auc_high) == pytest.approx((low, high))


def test_spearman_ci_by_hand():
    x = [1.0, 1.2, 0.9, 1.5, 2.0, 1.1]
    y = [0.0, 0.05, -0.02, 0.2, 0.15, 0.01]
    rho, low, high, note = spearman_ci(x, y)
    r = spearmanr(x, y).statistic
    se = np.sqrt((1 + r ** 2 / 2) / (6 - 3))
    assert rho == pytest.approx(r) and note == ""
    assert (low, high) == pytest.approx((np.tanh(np.arctanh(r) - norm.ppf(0.975) * se),
                                         np.tanh(np.arctanh(r) + norm.ppf(0.975) * se)))
    assert np.isnan(spearman_ci([1, 2, 3], [3, 2, 1])[0])
    assert "constant" in spearman_ci([1, 2, 3, 4], [0, 0, 0, 0])[3]


def test_tables_need_both_classes_and_binary_labels():
    frame = pd.DataFrame({"doc_id": [f"d{i}" for i in range(30)], "label": [1] * 8 + [0] * 22,
                          "m": np.linspace(0, 1, 30)})
    table = validity_table(frame, ["m"], "label", min_per_class=10, n_boot=50)
    assert np.isnan(table.loc[0, "auc"]) and "fewer than 10" in table.loc[0, "note"]
    assert validity_flags(table)[("m",)].startswith("validity not measured")
    table = validity_table(frame, ["m"], "label", n_boot=200)  # hallucinated = lowest risk
    assert table.loc[0, "auc"] == 0.0 and "below 0.5" in validity_flags(table)[("m",)]
    table = validity_table(frame.assign(m=1 - frame["m"]), ["m"], "label", n_boot=200)
    assert table.loc[0, "auc"] == 1.0 and validity_flags(table) == {}
    with pytest.raises(ValidityError, match=r"row 3: field 'label': value 2.0 is not 0 or 1"):
        check_labels(pd.Series([0.0, 1.0, 0.0, 2.0]), "label")


# --- on a run with ground truth -------------------------------------------------------------

SPECS = (PruneSpecInfo(), PruneSpecInfo(method="wanda", sparsity=0.5),
         PruneSpecInfo(method="magnitude", sparsity=0.5), PruneSpecInfo(method="sparsegpt", sparsity=0.6),
         PruneSpecInfo(method="wanda", sparsity=0.7), PruneSpecInfo(method="magnitude", sparsity=0.8))
RATES = [0.05, 0.3, 0.35, 0.45, 0.55, 0.7]  # ground-truth hallucination per system


@pytest.fixture(scope="module")
def gt_run(tmp_path_factory):
    """A run whose HaRiM risk follows the ground truth and whose SummaC-ZS is noise."""
    root = tmp_path_factory.mktemp("gt-run")
    keys = make_run(root, tasks=("news",), specs=SPECS, n_docs=40)
    rng = np.random.default_rng(0)
    for spec, rate in zip(SPECS, RATES):
        key = keys[("tiny", spec.label, "news")]
        gt = (rng.uniform(size=40) < rate).astype(float)
        frame = pd.DataFrame({c: rng.uniform(0, 1, 40) for c in SCORE_COLUMNS})
        frame.insert(0, "doc_id", [f"news-{i:03d}" for i in range(40)])
        frame["harim"] = np.clip(0.3 + 0.3 * gt + rng.normal(0, 0.1, 40), 0, 1)
        frame["gt_hallucination"] = gt
        atomic.write_with(root / "scores" / f"{key}.parquet", lambda p, f=frame: f.to_parquet(p))
    return root, keys


def test_run_validity_pooled_and_per_system(gt_run):
    root, keys = gt_run
    run = load_run(root)
    table = run_validity(run, n_boot=200)
    pooled = table[table["scope"] == "all systems"].set_index("metric")
    frames = [pd.read_parquet(p) for p in sorted((root / "scores").glob("*.parquet"))]
    every = pd.concat(frames)
    assert pooled.loc["HaRiM", "auc"] == pytest.approx(roc_auc_score(every["gt_hallucination"], every["harim"]))
    assert pooled.loc["SummaC-ZS", "auc"] == pytest.approx(
        roc_auc_score(every["gt_hallucination"], 1 - every["summac_zs"]))
    assert pooled.loc["HaRiM", "auc_low"] > 0.5
    assert pooled.loc["HaRiM", "n"] == 240 and pooled.loc["HaRiM", "protocol"] == "5-fold CV"
    per_system = table[(table["scope"] != "all systems") & (table["metric"] == "HaRiM")]
    dense = per_system[per_system["scope"] == "tiny/dense"].iloc[0]
    assert np.isnan(dense["auc"]) and "fewer than 10" in dense["note"]  # ~2 hallucinated of 40
    measured = per_system.dropna(subset=["auc"])
    assert len(measured) >= 2 and (measured[["n_hallucinated", "n_consistent"]] >= 10).all().all()


def test_flags_follow_the_ratios_and_the_report_shows_the_section(gt_run):
    root, keys = gt_run
    risk = report_context(root, n_boot=200).risk
    flags = flagged_metrics(risk)
    assert ("news", "SummaC-ZS") in flags and ("news", "HaRiM") not in flags
    assert "includes 0.5" in flags[("news", "SummaC-ZS")]
    # the ground truth is the label: no AUC of its own (it would be 1 by definition)
    truth = risk[risk["metric"] == "Ground truth"]
    assert not truth.empty and set(truth["validity"]) == {"the ground truth itself"}
    assert "Ground truth" not in set(report_context(root, n_boot=200).validity["metric"])
    write_report(root, n_boot=200)
    md = (root / "report" / "report.md").read_text()
    assert md.index("Hallucination risk ratios") < md.index("Metric validity (AUC)") < md.index("Summary quality")
    pivot = pd.read_csv(next((root / "report" / "tables").glob("hallucination_risk_ratios_risk_ratio*.csv")))
    marks = pivot.set_index("metric")["metric validity"]
    assert marks["SummaC-ZS"].endswith("FLAGGED") and not marks["HaRiM"].endswith("FLAGGED")
    # Spearman across the 5 pruned systems, against ratios and differences computed here
    correlation = ratio_correlation(risk, load_run(root)).set_index("metric")
    gt = {k: pd.read_parquet(root / "scores" / f"{k}.parquet")["gt_hallucination"].mean() for k in keys.values()}
    harim = risk[risk["metric"] == "HaRiM"]
    diffs = [gt[c] - gt[b] for c, b in zip(harim["cell"], harim["baseline"])]
    assert correlation.loc["HaRiM", "systems"] == 5
    assert correlation.loc["HaRiM", "rho"] == pytest.approx(spearmanr(harim["ratio"], diffs).statistic)
    # the findings' sentence on a flagged metric says its ratios are no evidence, whatever rho says
    from analysis.findings import tracking_sentences
    sentences = {s.split(" on ")[0]: s for s in tracking_sentences(report_context(root, n_boot=200))}
    assert "FLAGGED" in sentences["SummaC-ZS"] and "no evidence of hallucination" in sentences["SummaC-ZS"]
    assert "FLAGGED" not in sentences["HaRiM"]


def test_a_bad_ground_truth_value_names_file_record_and_field(tmp_path):
    keys = make_run(tmp_path, tasks=("news",), n_docs=4)
    key = keys[("tiny", "dense", "news")]
    frame = pd.read_parquet(tmp_path / "scores" / f"{key}.parquet").assign(gt_hallucination=[0, 1, 0.5, 0])
    atomic.write_with(tmp_path / "scores" / f"{key}.parquet", lambda p: frame.to_parquet(p))
    with pytest.raises(ValidityError, match=rf"scores/{key}.parquet: record doc_id='news-002': "
                                            r"field 'gt_hallucination': value 0.5 is not 0 or 1"):
        run_validity(load_run(tmp_path), n_boot=100)


def test_a_run_without_ground_truth_has_no_validity_section(tmp_path):
    make_run(tmp_path, tasks=("news",), n_docs=8)
    ctx = report_context(tmp_path, n_boot=100)
    assert "validity" not in ctx.risk.columns and flagged_metrics(ctx.risk) == {}
    assert ctx.validity.empty and report_section(ctx) is None


# --- validate-metrics on labelled claim files ------------------------------------------------

DEMO = [json.loads(line) for line in open("tasks/data/demo.jsonl", encoding="utf-8")]


def factcc_style(path, n_docs=12):
    """A JSON object keyed by id, string labels ("1" consistent, "0" not), val/test cuts."""
    records = {}
    for i, r in enumerate(DEMO[:n_docs]):
        cut = "val" if i % 2 == 0 else "test"
        records[f"{r['id']}-ok"] = {"document": r["document"], "claim": r["reference"], "label": "1",
                                    "cut": cut, "annotations": ["CORRECT"]}
        records[f"{r['id']}-bad"] = {"document": r["document"], "claim": r["inconsistent"], "label": "0",
                                     "cut": cut, "annotations": ["INCORRECT"]}
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def scorer_options(bart_path, nli_path):
    return ["--harim-model", str(bart_path), "--nli-model", str(nli_path), "--bootstrap", "200"]


def test_validate_metrics_on_a_factcc_style_file(tmp_path, scorer_options, capsys):
    data = factcc_style(tmp_path / "factcc.json")
    assert main(["validate-metrics", "--task", "factcc", "--data", str(data),
                 "--out", str(tmp_path / "out"), *scorer_options]) == 0
    printed = capsys.readouterr().out
    assert "24 claims: 12 inconsistent, 12 consistent" in printed and "val -> test" in printed
    scores = pd.read_parquet(tmp_path / "out" / "scores.parquet")
    assert len(scores) == 24 and set(scores["label"]) == {"0", "1"}
    assert (scores["hallucinated"] == (scores["label"] == "0")).all()
    assert scores["harim"].between(0, 1).all() and scores["harim"].nunique() == 24
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "out" / "scores.csv", dtype={"label": str}),
                                  scores, check_dtype=False)
    summary = pd.read_csv(tmp_path / "out" / "summary.csv").set_index("metric")
    val, test = scores[scores["cut"] == "val"], scores[scores["cut"] == "test"]
    for metric in ("HaRiM", "SummaC-ZS"):
        row = summary.loc[metric]
        t = best_threshold(val["hallucinated"], val[f"risk {metric}"])
        assert row["threshold"] == pytest.approx(t) and row["n"] == 12
        assert row["auc"] == pytest.approx(roc_auc_score(test["hallucinated"], test[f"risk {metric}"]))
        assert row["balanced_accuracy"] == pytest.approx(
            balanced_accuracy_score(test["hallucinated"], test[f"risk {metric}"] > t))
        assert row["auc_low"] <= row["auc"] <= row["auc_high"]
    meta = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert meta["records"] == 24 and "harim" in meta["scorers"] and meta["positive_class"].startswith('label "0"')


def test_validate_metrics_cross_validates_a_file_without_cuts(tmp_path, scorer_options, capsys):
    lines = [{"id": f"{r['id']}-{k}", "document": r["document"], "claim": r[field], "label": label}
             for r in DEMO[12:20] for k, (field, label) in enumerate((("reference", 1), ("inconsistent", 0)))]
    data = tmp_path / "claims.jsonl"
    data.write_text("\n".join(json.dumps(line) for line in lines), encoding="utf-8")
    assert main(["validate-metrics", "--task", "factcc", "--data", str(data), "--metrics", "harim",
                 "--out", str(tmp_path / "out"), *scorer_options]) == 0
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert list(summary["metric"]) == ["HaRiM"] and summary.loc[0, "protocol"] == "5-fold CV"
    scores = pd.read_parquet(tmp_path / "out" / "scores.parquet")
    assert summary.loc[0, "auc"] == pytest.approx(roc_auc_score(scores["hallucinated"], scores["harim"]))


@pytest.mark.parametrize("records, message", [
    ({"a": {"document": "D.", "claim": "C.", "label": "1"}, "b": {"document": "E.", "claim": "F.", "label": 1}},
     r'all 2 claims have label "1" \(consistent\)'),
    ({"a": {"document": "D.", "claim": "C.", "label": "1"}, "b": {"document": "E.", "claim": "F."}},
     r"record 'b': field 'label': missing label"),
    ({"a": {"document": "D.", "claim": "C.", "label": "yes"}},
     r"record 'a': field 'label': label 'yes' is not \"0\" or \"1\""),
    ({"a": {"document": "D.", "claim": "C.", "label": True}}, r"record 'a': field 'label': label True"),
    ({"a": {"document": "D.", "claim": "", "label": "0"}}, r"record 'a': field 'claim': empty"),
    ({"a": {"document": "D.", "claim": "C.", "label": "0", "cut": "train"}}, r"record 'a': field 'cut': 'train'"),
    ({"a": {"document": "D.", "claim": "C.", "label": "0", "cut": "val"},
      "b": {"document": "D.", "claim": "C.", "label": "1", "cut": "test"},
      "c": {"document": "D.", "claim": "C.", "label": "0", "cut": "test"}},
     r"cut 'val': all 1 claims have label \"0\" \(inconsistent\)"),
])
def test_bad_claim_files_are_refused_before_scoring(tmp_path, capsys, records, message):
    data = tmp_path / "claims.json"
    data.write_text(json.dumps(records), encoding="utf-8")
    # no scorer models given: the file is refused before any model would load
    assert main(["validate-metrics", "--task", "factcc", "--data", str(data), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert str(data) in err and re.search(message, err), err
    assert not (tmp_path / "o").exists()


def test_label_direction_is_a_choice(tmp_path):
    from tasks import load_task
    from tasks.claims import labelled_claims

    data = factcc_style(tmp_path / "f.json", n_docs=2)
    loaded = load_task("factcc", data=data)
    default = labelled_claims(loaded, str(data))
    flipped = labelled_claims(loaded, str(data), hallucinated_label="1")
    assert list(default.hallucinated) == [False, True, False, True]
    np.testing.assert_array_equal(flipped.hallucinated, ~default.hallucinated)
    assert default.protocol_cut == ["val", "val", "test", "test"]


def test_validate_metrics_refuses_the_ground_truth(tmp_path, capsys):
    """A claim file has no gold facts: the ground-truth metric would score NaN; it is refused
    before any model loads, naming the metrics that do judge claims."""
    data = factcc_style(tmp_path / "f.json", n_docs=2)
    assert main(["validate-metrics", "--task", "factcc", "--data", str(data), "--metrics",
                 "harim,ground_truth", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "not ground_truth" in err and "harim, summac_zs, summac_conv" in err, err
    assert not (tmp_path / "o").exists()
