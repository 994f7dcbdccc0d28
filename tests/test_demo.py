"""The demo: its study grid and banner flag, the sweep figure's placement of N:M systems, and
the demo end to end on a reduced grid (findings, seeds, validity, truth-reading annotators)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from analysis.figures import draw_sweep, sweep_positions
from harness.config import parse_study
from harness.runner.demo import demo_config
from harness.store import RunStore

ROLES = ("summarizer", "bart", "nli", "summac-conv")


def test_demo_config_grid_seeds_and_banner_flag(tmp_path):
    models = {role: tmp_path / role for role in ROLES}
    for path in models.values():
        path.mkdir()
    study = parse_study(demo_config(tmp_path / "run", models), source="demo")
    assert study.demo is True and study.name == "demo"
    levels = ["0.5", "0.6", "0.7", "0.8", "2of4", "4of8"]
    expected = [f"magnitude-{lv}" for lv in levels]  # no random choice: one seed
    for method in ("wanda", "sparsegpt"):
        expected += [f"{method}-{lv}{f'-s{s}' if s else ''}" for lv in levels for s in (0, 1, 2)]
    assert sorted(p.key for p in study.prune) == sorted(expected)
    assert len(study.prune) == 6 + 2 * 18
    seeded = [p for p in study.prune if p.method != "magnitude"]
    assert {p.calibration.seed for p in seeded} == {0, 1, 2}
    assert all(p.calibration.source == "task:facts" for p in study.prune)
    assert [t.name for t in study.tasks] == ["facts"] and study.prompts == ["A"]
    assert {"harim", "summac_zs", "summac_conv", "ground_truth"} <= set(study.scoring.metrics)
    assert study.models[0].name == "llama-summarizer"
    # the flag reaches study.yaml, where the report reads it
    store = RunStore(tmp_path / "run")
    store.root.mkdir()
    store.write_study(study)
    assert yaml.safe_load(store.study_yaml.read_text())["demo"] is True
    # study.yaml, written after the sweeps expanded, reads back to the same specs
    assert [p.key for p in store.read_study().prune] == [p.key for p in study.prune]
    small = parse_study(demo_config(tmp_path / "run", models, family="gpt_neox", methods=("wanda",),
                                    sparsities=(0.5,), structures=(), seeds=(3,)), source="demo")
    assert [p.key for p in small.prune] == ["wanda-0.5-s3"] and small.models[0].name == "gpt_neox-summarizer"


def test_sweep_figure_draws_nm_apart_from_unstructured():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(s, "unstructured") for s in (0.5, 0.6, 0.7, 0.8)] + [(0.5, "2:4"), (0.5, "4:8")]
    rows = pd.DataFrame([{"method": m, "sparsity": s, "structure": t, "value": 1 + s, "low": 1, "high": 2 + s}
                         for m in ("magnitude", "wanda") for s, t in points])
    positions = sweep_positions(points)
    assert positions[(0.5, "unstructured")] == 0.5
    assert positions[(0.5, "2:4")] == pytest.approx(0.9) and positions[(0.5, "4:8")] == pytest.approx(1.0)
    fig, ax = plt.subplots()
    draw_sweep(ax, rows, reference=1.0)
    drawn = {c.get_label(): list(c.lines[0].get_xdata()) for c in ax.containers}
    assert drawn["wanda"] == pytest.approx([0.5, 0.6, 0.7, 0.8])
    assert drawn["wanda (N:M)"] == pytest.approx([0.9, 1.0])  # after every unstructured point
    assert set(drawn) == {"magnitude", "magnitude (N:M)", "wanda", "wanda (N:M)"}
    assert [t.get_text() for t in ax.get_xticklabels()] == ["50%", "60%", "70%", "80%", "2:4", "4:8"]
    plt.close(fig)
    # no unstructured sweep: the patterns still sit apart from 0.5
    assert sweep_positions([(0.5, "2:4")])[(0.5, "2:4")] > 0.5


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory, trained, tiny):
    """The demo on a reduced grid: Wanda at 50% and 80% and 2:4, two seeds (7 checkpoints).
    The trained summarizer with the tiny random scorers (and a Conv head trained on them in
    seconds): these tests check the ground truth, the findings and the annotators, not the
    scorers, and the trained scorers would add minutes of training to a fresh clone's tests."""
    from harness.runner.demo import run_demo
    from harness.scoring.summac_conv import train_summac_conv
    from harness.atomic import write_jsonl
    from tasks.demo import labelled_pairs

    root = tmp_path_factory.mktemp("demo")
    head = root / "summac-conv"
    head.mkdir()
    write_jsonl(root / "pairs.jsonl", labelled_pairs())
    train_summac_conv(root / "pairs.jsonl", tiny("nli"), head / "head.bin", epochs=5)
    models = {"summarizer": trained("summarizer-llama"), "bart": tiny("bart"), "nli": tiny("nli"),
              "summac-conv": head}
    out = root / "run"
    result = run_demo(out, documents=30, show_progress=False, models=models, methods=("wanda",),
                      sparsities=(0.5, 0.8), structures=("2:4",), seeds=(0, 1))
    assert not result.failed and result.report is not None
    return out


def _gt(store: RunStore) -> pd.DataFrame:
    """Every cell's ground-truth columns with its system label and seed, read here."""
    frames = []
    for key, cell in store.read_cells().items():
        frame, _ = store.read_scores(key)
        frames.append(frame.assign(setting=cell.prune.setting, seed=cell.prune.seed, cell=key))
    return pd.concat(frames, ignore_index=True)


def test_small_demo_findings_match_the_scores(small_demo):
    store = RunStore(small_demo)
    report = (store.report_dir / "report.md").read_text()
    assert "Demo on synthetic data with built-in tiny models" in report.split("## Hallucination risk ratios")[0]
    for title in ("Findings against the ground truth", "Risk ratios per calibration seed",
                  "Metric validity (AUC)", "Human evaluation (simulated annotators)"):
        assert f"## {title}" in report
    gt = _gt(store)
    table = pd.read_csv(next(store.report_subdir("tables").glob("findings_against_the_ground_truth_ground*.csv")))
    rows = table.set_index("system")
    assert list(rows.index) == ["dense", "wanda-0.5", "wanda-0.8", "wanda-2:4"]
    assert rows.loc["wanda-0.8", "seeds"] == 2 and rows.loc["dense", "seeds"] == 1
    for system in ("dense", "wanda-0.5", "wanda-0.8"):
        mine = gt[gt["setting"] == system]
        by_seed = mine.groupby("seed", dropna=False)["gt_hallucination"].mean()
        shown = rows.loc[system, "hallucination rate [95% CI]"]
        assert float(shown.split()[0]) == pytest.approx(by_seed.mean(), abs=5e-4)  # mean of seed means
        low, high = (float(x) for x in shown.split("[")[1].rstrip("]").split(","))
        assert low <= by_seed.mean() + 5e-4 and by_seed.mean() - 5e-4 <= high
    assert rows.loc["dense", "Ground truth ratio"] == "baseline"
    figures = store.report_subdir("figures")
    assert (figures / "risk_ratio_vs_sparsity.png").exists() and (figures / "ground_truth_vs_sparsity.png").exists()


def test_small_demo_annotators_read_the_truth(small_demo):
    from annotation.batch import QUESTIONS, batch_dir, list_batches, load_batch, load_key
    from annotation.importer import read_imports
    from annotation.simulate import expected_kappa

    store = RunStore(small_demo)
    gt = _gt(store).set_index(["cell", "doc_id"])
    batches = list_batches(small_demo)
    assert len(batches) == 2  # wanda-0.8 and wanda-2:4 (seed 0) against dense
    directory = batch_dir(small_demo, batches[0])
    batch, key = load_batch(directory), load_key(directory)
    expected = json.loads((directory / "simulated" / "expected.json").read_text())
    stored = read_imports(directory)
    agree = []
    for item in batch.items:
        sys_row = gt.loc[(key.system_cells[item.task], item.doc_id)]
        base_row = gt.loc[(key.baseline_cells[item.task], item.doc_id)]
        a, b = (sys_row, base_row) if key.a_is[item.item_id] == "system" else (base_row, sys_row)
        diff = a["gt_hallucinated_facts"] - b["gt_hallucinated_facts"]
        truth = "A" if diff > 0 else "B" if diff < 0 else "tie"
        agree.append(np.mean([s.items[item.item_id].answers["q1_hallucination"] == truth
                              for s in stored.values()]))
    # each answer is the truth, except with probability 0.2 a uniform choice among 3
    assert np.mean(agree) == pytest.approx(1 - 0.2 * 2 / 3, abs=0.15)
    for question in QUESTIONS:
        shares = expected["questions"][question]["truth_shares"]
        assert expected["questions"][question]["expected_kappa"] == pytest.approx(expected_kappa(shares, 0.2))
    report = (store.report_dir / "report.md").read_text()
    assert "expected (simulated)" in report


def test_demo_says_what_it_trained_and_flags_a_scorer_at_chance(trained):
    """The line the demo prints per model it trains: time and held-out accuracy from the
    model's training.json, and FLAGGED for a model that did not learn."""
    from harness.runner.demo import training_line
    from harness.trained_models import training_report

    report = training_report(trained("summarizer-llama"))
    line = training_line("summarizer-llama", report)
    assert line.startswith(f"trained summarizer-llama in {report['seconds']:.0f} s")
    assert f"{report['accuracy_name']} {report['accuracy']:.3f}" in line and "FLAGGED" not in line
    assert training_line("nli", {**report, "learned": False}).endswith("not above chance: FLAGGED")
