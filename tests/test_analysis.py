"""Risk ratios, their bootstrap CIs, Wilcoxon/Holm, and loading/pairing a run directory.

Runs are built here following the artifact contract (cells/, scores/, generations/,
checkpoints/*/*/{sparsity,perplexity}.json, manifest.json) with seeded synthetic scores."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis.load import load_run
from harness.store import ArtifactError
from analysis.risk import compare, get_definition, holm, risk_pivot, risk_table
from harness import atomic
from harness.errors import PrunescopeError
from harness.records import CellInfo, GenerationRecord, ModelIdentity, PruneSpecInfo

SCORE_COLUMNS = ["summary_tokens", "summary_words", "harim_plus", "harim", "harim_loglik", "summac_zs",
                 "summac_conv", "rouge1_ref", "rouge2_ref", "rougeL_ref", "rouge1_src", "rouge2_src",
                 "rougeL_src", "coverage", "density", "compression", "novel_1", "novel_2", "novel_3",
                 "novel_4", "repetition"]
SPECS = (PruneSpecInfo(), PruneSpecInfo(method="wanda", sparsity=0.5),
         PruneSpecInfo(method="magnitude", sparsity=0.5), PruneSpecInfo(method="sparsegpt", structure="2:4", sparsity=0.5))


def generation(doc_id: str, text: str, model: str) -> GenerationRecord:
    identity = ModelIdentity(name=model, source=model, checkpoint_hash="0" * 16)
    return GenerationRecord(doc_id=doc_id, prompt_id="A", prompt_hash="h", text=text,
                            output_token_ids=[1], prompt_tokens=1, output_tokens=1,
                            finish_reason="stop", truncated=False, backend="hf", model=identity,
                            sampling={})


def make_run(root, tasks=("news", "dialog"), models=("tiny",), specs=SPECS, n_docs=12, seed=0,
             texts=None, prompt="A"):
    """Write a synthetic run; returns {(model, method, task): cell key}. ``texts(doc_index)``
    gives a summary text (default: a plain sentence)."""
    rng = np.random.default_rng(seed)
    keys = {}
    for model in models:
        for task in tasks:
            dense_key = None
            for spec in specs:
                key = f"{model}-{spec.label}-{task}".replace(":", "of").replace(".", "")
                keys[(model, spec.label, task)] = key
                info = CellInfo(key=key, model=model, prune=spec, task=task, prompt=prompt,
                                baseline_key=None if spec.method == "dense" else dense_key)
                dense_key = key if spec.method == "dense" else dense_key
                atomic.write_json(root / "cells" / f"{key}.json", info)
                scores = pd.DataFrame({c: rng.uniform(0, 1, n_docs) for c in SCORE_COLUMNS})
                scores["summary_tokens"] = rng.integers(5, 40, n_docs).astype(float)
                scores.insert(0, "doc_id", [f"{task}-{i:03d}" for i in range(n_docs)])
                scores["empty"] = np.arange(n_docs) == 0
                atomic.write_with(root / "scores" / f"{key}.parquet", lambda p, s=scores: s.to_parquet(p))
                lines = [generation(d, texts(i) if texts else f"Summary {i} by {spec.label}.", model)
                         for i, d in enumerate(scores["doc_id"])]
                atomic.write_jsonl(root / "generations" / f"{key}.jsonl", lines)
    for model in models:
        for spec in specs:
            folder = "dense" if spec.method == "dense" else {
                "unstructured": f"{spec.method}-{spec.sparsity:g}"}.get(spec.structure, f"{spec.method}-2of4")
            base = root / "checkpoints" / model / folder
            atomic.write_json(base / "perplexity.json", {"perplexity": 10 + 10 * spec.sparsity,
                                                         "text_hash": "x", "seqlen": 64, "windows": 2})
            if spec.method != "dense":
                atomic.write_json(base / "sparsity.json", {
                    "schema_version": 1, "method": spec.method, "target_sparsity": spec.sparsity,
                    "measured_sparsity": spec.sparsity - 0.01, "nm_valid": spec.structure != "unstructured" or None})
    atomic.write_json(root / "manifest.json", {"provenance": {
        "git_commit": "abc123", "python": "3.11", "platform": "linux", "seeds": {"calibration": 0},
        "packages": {"torch": "2.13.0"}, "accelerator": {"cuda": False}}, "cells": {}, "stages": {}})
    return keys


def write_scores(root, key, **columns):
    frame = pd.DataFrame(columns)
    atomic.write_with(root / "scores" / f"{key}.parquet", lambda p: frame.to_parquet(p))


# --- risk ratio of one comparison -------------------------------------------------------

def test_definitions_on_a_hand_made_table():
    pruned = np.array([0.2, 0.4, 0.6, 0.1])
    dense = np.array([0.4, 0.4, 0.8, 0.6])
    mean_risk = compare(pruned, dense, "mean_risk", n_boot=200)
    assert mean_risk.ratio == pytest.approx(1.3 / 2.2)  # sums: 1.3 and 2.2 over 4 documents
    assert (mean_risk.pruned, mean_risk.dense) == pytest.approx((0.325, 0.55))
    assert compare(pruned, dense, "mean_score", n_boot=200).ratio == pytest.approx(2.7 / 1.8)
    # risk above 0.5: pruned 1 of 4 (0.6), dense 2 of 4 (0.8, 0.6)
    assert compare(pruned, dense, "threshold", threshold=0.5, n_boot=200).ratio == pytest.approx(0.5)
    with pytest.raises(PrunescopeError, match="mean_risk, mean_score, threshold"):
        get_definition("median")


def test_bootstrap_ci_matches_a_per_replicate_loop():
    rng = np.random.default_rng(5)
    dense = rng.uniform(0.2, 0.8, 30)
    pruned = np.clip(dense + rng.normal(-0.05, 0.1, 30), 0, 1)
    result = compare(pruned, dense, "mean_risk", n_boot=500, rng=np.random.default_rng(11))
    # the same draws, one replicate at a time
    idx = np.random.default_rng(11).integers(0, 30, size=(500, 30))
    ratios = [pruned[i].sum() / dense[i].sum() for i in idx]
    assert result.ci_low == pytest.approx(np.percentile(ratios, 2.5))
    assert result.ci_high == pytest.approx(np.percentile(ratios, 97.5))
    assert result.ci_low < result.ratio < result.ci_high


def test_wilcoxon_exact_p_by_hand():
    # five documents, all lower risk when pruned, distinct |differences|: W+ = 0, and of the
    # 2^5 equally likely sign patterns only "all -" and "all +" are as extreme: p = 2/32.
    dense = np.array([0.5, 0.6, 0.7, 0.8, 0.9])
    pruned = dense - np.array([0.01, 0.02, 0.03, 0.04, 0.05])
    assert compare(pruned, dense, n_boot=100).p_value == pytest.approx(2 / 32)


def test_bootstrap_ci_covers_the_true_ratio_at_about_the_nominal_rate():
    # dense risk ~ Beta(2, 5) (mean 2/7); pruned = 0.8 dense + 0.1 U(0,1): true ratio known.
    true_ratio = (0.8 * 2 / 7 + 0.05) / (2 / 7)
    rng = np.random.default_rng(2024)
    covered = 0
    for _ in range(200):
        dense = rng.beta(2, 5, 60)
        pruned = 0.8 * dense + 0.1 * rng.uniform(0, 1, 60)
        result = compare(pruned, dense, n_boot=400, rng=rng)
        covered += result.ci_low <= true_ratio <= result.ci_high
    assert 0.88 <= covered / 200 <= 0.99


def test_holm_against_a_hand_computation():
    p = [0.01, 0.04, 0.03, 0.005, np.nan]
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 -> 0.02, 0.03, 0.06, 0.04; then running max
    expected = [0.03, 0.06, 0.06, 0.02, np.nan]
    np.testing.assert_allclose(holm(p), expected)


def test_degenerate_comparisons_give_nan_with_a_reason():
    zero = compare(np.array([0.1, 0.2, 0.3]), np.zeros(3), n_boot=100)
    assert np.isnan(zero.ratio) and np.isnan(zero.ci_low) and "dense statistic is 0" in zero.note
    same = np.array([0.1, 0.2, 0.3])
    equal = compare(same, same.copy(), n_boot=100)
    assert equal.ratio == 1 and np.isnan(equal.p_value) and "differences are zero" in equal.note
    nothing = compare(np.array([]), np.array([]))
    assert nothing.n_docs == 0 and np.isnan(nothing.ratio) and nothing.note


# --- a run directory ------------------------------------------------------------------

def test_load_run_tidy_rows_and_pairing(tmp_path):
    keys = make_run(tmp_path, n_docs=8)
    run = load_run(tmp_path)
    assert len(run.cells) == 8 and not run.missing
    # every score column (incl. empty) of every cell and document
    assert len(run.tidy) == 8 * 8 * (len(SCORE_COLUMNS) + 1)
    wanda = run.paired[(run.paired["cell"] == keys[("tiny", "wanda-0.5", "news")]) & (run.paired["metric"] == "harim")]
    dense = pd.read_parquet(tmp_path / "scores" / f"{keys[('tiny', 'dense', 'news')]}.parquet").set_index("doc_id")
    assert len(wanda) == 8 and (wanda["baseline"] == keys[("tiny", "dense", "news")]).all()
    np.testing.assert_allclose(wanda["dense"], dense.loc[wanda["doc_id"], "harim"])


def test_risk_table_from_a_run_matches_direct_means(tmp_path):
    keys = make_run(tmp_path, n_docs=15)
    table = risk_table(load_run(tmp_path), n_boot=200, seed=3)
    assert len(table) == 2 * 3 * 3  # tasks x pruned systems x metrics
    read = lambda label: pd.read_parquet(tmp_path / "scores" / f"{keys[('tiny', label, 'dialog')]}.parquet")
    row = table[(table["task"] == "dialog") & (table["metric"] == "SummaC-ZS") & (table["method"] == "magnitude")].iloc[0]
    assert row["ratio"] == pytest.approx((1 - read("magnitude-0.5")["summac_zs"]).mean()
                                         / (1 - read("dense")["summac_zs"]).mean())
    assert np.isfinite(table["p_holm"]).all() and (table["p_holm"] >= table["p_value"]).all()
    # a comparison's numbers do not depend on which other cells the run holds
    (tmp_path / "scores" / f"{keys[('tiny', 'wanda-0.5', 'news')]}.parquet").unlink()
    again = risk_table(load_run(tmp_path), n_boot=200, seed=3)
    same = again[(again["cell"] == row["cell"]) & (again["metric"] == "SummaC-ZS")].iloc[0]
    assert (same["ci_low"], same["ci_high"]) == (row["ci_low"], row["ci_high"])


def test_documents_missing_on_one_side_are_reported(tmp_path):
    keys = make_run(tmp_path, tasks=("news",), n_docs=6)
    pruned = keys[("tiny", "wanda-0.5", "news")]
    frame = pd.read_parquet(tmp_path / "scores" / f"{pruned}.parquet").iloc[2:]
    atomic.write_with(tmp_path / "scores" / f"{pruned}.parquet", lambda p: frame.to_parquet(p))
    run = load_run(tmp_path)
    gone = run.unpaired[run.unpaired["cell"] == pruned]
    assert sorted(gone["doc_id"]) == ["news-000", "news-001"] and set(gone["missing_in"]) == {"pruned"}
    assert any(pruned in m and "2 dense document(s)" in m for m in run.missing)
    assert set(run.paired.loc[run.paired["cell"] == pruned, "doc_id"]) == {f"news-00{i}" for i in range(2, 6)}


def test_missing_dense_cells_are_explained(tmp_path):
    keys = make_run(tmp_path)
    (tmp_path / "scores" / f"{keys[('tiny', 'dense', 'dialog')]}.parquet").unlink()
    run = load_run(tmp_path)
    explained = [m for m in run.missing if "no dense baseline" in m]
    assert len(explained) == 3  # the three pruned dialog cells
    assert all("model 'tiny', task 'dialog', prompt 'A'" in m for m in explained)
    table = risk_table(run, n_boot=100)
    assert set(table["task"]) == {"news"}


def test_pruned_cell_of_a_study_without_dense_cell(tmp_path):
    keys = make_run(tmp_path, tasks=("news",), n_docs=5)
    dense = keys[("tiny", "dense", "news")]
    (tmp_path / "cells" / f"{dense}.json").unlink()
    run = load_run(tmp_path)
    assert any(f"its baseline cell {dense} has no cells/{dense}.json" in m for m in run.missing)
    assert run.paired.empty and risk_table(run).empty


def test_bad_artifacts_name_file_and_field(tmp_path):
    with pytest.raises(ArtifactError, match="no cells"):
        load_run(tmp_path)
    keys = make_run(tmp_path, tasks=("news",), n_docs=4)
    key = keys[("tiny", "wanda-0.5", "news")]
    write_scores(tmp_path, key, doc=["a"], harim=[0.1])
    with pytest.raises(ArtifactError, match=rf"{key}\.parquet: field doc_id"):
        load_run(tmp_path)
    write_scores(tmp_path, key, doc_id=["a", "a"], harim=[0.1, 0.2])
    with pytest.raises(ArtifactError, match="record doc_id='a'.*duplicated"):
        load_run(tmp_path)
    cell = tmp_path / "cells" / f"{key}.json"
    raw = json.loads(cell.read_text())
    del raw["task"]
    cell.write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match=rf"{key}\.json: field task"):
        load_run(tmp_path)


def test_risk_pivot_keeps_prompts_and_same_label_cells_apart(tmp_path):
    make_run(tmp_path, tasks=("news",), n_docs=6)
    table = risk_table(load_run(tmp_path), n_boot=100)
    pivot = risk_pivot(table)
    assert list(pivot.columns) == ["task", "metric", "tiny/magnitude-0.5", "tiny/sparsegpt-2:4", "tiny/wanda-0.5"]
    assert list(pivot["metric"]) == ["HaRiM", "SummaC-ZS", "SummaC-Conv"]
    row = table[(table["metric"] == "HaRiM") & (table["method"] == "wanda")].iloc[0]
    assert pivot.loc[0, "tiny/wanda-0.5"] == f"{row['ratio']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
    other_prompt = pd.concat([table, table.assign(cell=table["cell"] + "-b", ratio=2.0, prompt="B")])
    pivot = risk_pivot(other_prompt)
    assert list(pivot.columns[:3]) == ["task", "prompt", "metric"] and len(pivot) == 6
    same_label = pd.concat([table, table.assign(cell=table["cell"] + "-b", ratio=2.0)])
    twins = [c for c in risk_pivot(same_label).columns if c.startswith("tiny/wanda-0.5")]
    assert twins == ["tiny/wanda-0.5 (tiny-wanda-05-news)", "tiny/wanda-0.5 (tiny-wanda-05-news-b)"]


def test_method_rankings_per_seed_keep_structured_sparsities_apart(tmp_path):
    """Rankings compare methods at one sparsity or pattern: Bonsai and unit-norm at 20% and
    40% structured are two levels, never one "structured" level pooling both."""
    from analysis.sections import ReportContext
    from analysis.seed_section import ranking_table

    specs = [PruneSpecInfo()] + [PruneSpecInfo(method=m, sparsity=s, structure=t, seed=seed)
                                 for m, t in (("bonsai", "structured"), ("unit-norm", "structured"),
                                              ("wanda", "unstructured"), ("sparsegpt", "unstructured"))
                                 for s in (0.2, 0.4) for seed in (0, 1)]
    make_run(tmp_path, tasks=("news",), specs=specs, n_docs=6)
    ctx = ReportContext.of(tmp_path, risk_table(load_run(tmp_path), n_boot=50))
    table = ranking_table(ctx)
    assert set(table["sparsity or pattern"]) == {"20% structured", "40% structured", "20%", "40%"}
    row = table[table["sparsity or pattern"] == "40% structured"].iloc[0]
    assert {row["seed 0"], row["seed 1"]} <= {"bonsai < unit-norm", "unit-norm < bonsai"}
