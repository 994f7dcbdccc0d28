"""A study with recover specs: the grid gains the recovered systems, cached by content key,
and the report compares dense / pruned / + LoRA / + full."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from harness.config import parse_study
from harness.hashing import hash_checkpoint
from harness.runner.plan import plan_study
from harness.runner.study import run_study
from tests.test_runner import checkpoint, study_dict

DATA = {"source": "task:demo", "nsamples": 8, "seqlen": 64}
RECOVER = [{"method": "lora", "steps": 4, "lr": 5e-3, "batch_size": 2, "data": DATA,
            "lora": {"rank": 4, "alpha": 8}},
           {"method": "full", "steps": 4, "lr": 1e-3, "batch_size": 2, "data": DATA}]


@pytest.fixture(scope="module")
def study(tmp_path_factory, llama_path, bart_path, nli_path):
    root = tmp_path_factory.mktemp("recovery-study")
    raw = study_dict(root / "run", llama_path, bart_path, nli_path, docs=3,
                     prune=[{"method": "magnitude", "structure": "2:4"}])
    return {**raw, "recover": RECOVER}


def test_plan_adds_one_recovered_system_per_prune_and_recover_spec(study, tmp_path):
    raw = {**study, "prune": study["prune"] + [{**study["prune"][0], "structure": "unstructured", "sparsity": 0.5}],
           "recover": [RECOVER[0], {**RECOVER[1], "apply_to": ["magnitude-2of4"]}]}
    plan = plan_study(parse_study(raw))
    assert [j.folder for j in plan.checkpoints] == [f"{label}-{j.key}" for label, j in zip([
        "dense", "magnitude-2of4", "magnitude-0.5", "magnitude-2of4+lora-r4", "magnitude-2of4+full",
        "magnitude-0.5+lora-r4"], plan.checkpoints)]
    assert all(c.info.folder == c.checkpoint.folder for c in plan.cells)
    cells = {c.checkpoint.folder.rsplit("-", 1)[0]: c.info for c in plan.cells}
    assert cells["magnitude-0.5+lora-r4"].parent_key == cells["magnitude-0.5"].key
    assert cells["magnitude-0.5+lora-r4"].baseline_key == cells["dense"].key
    assert cells["magnitude-2of4+full"].label == "magnitude-2:4+full"
    # the recovered key follows its recover spec, not the save interval
    again = plan_study(parse_study({**raw, "recover": [{**RECOVER[0], "save_every": 3}, raw["recover"][1]]}))
    assert [j.key for j in again.checkpoints] == [j.key for j in plan.checkpoints]
    changed = plan_study(parse_study({**raw, "recover": [{**RECOVER[0], "lr": 1e-3}, raw["recover"][1]]}))
    assert [j.key == k.key for j, k in zip(changed.checkpoints, plan.checkpoints)] == [True, True, True, False, True, False]


def test_study_with_recovery_runs_end_to_end_and_reports_the_comparison(study):
    result = run_study(parse_study(study), show_progress=False)
    assert not result.failed, [o.details.get("error") for o in result.failed]
    run = result.run_dir
    checkpoints = run / "checkpoints" / "tiny"
    folder = {label: checkpoint(run, label) for label in ("dense", "magnitude-2of4", "magnitude-2of4+full",
                                                           "magnitude-2of4+lora-r4")}
    lora, full, pruned = folder["magnitude-2of4+lora-r4"], folder["magnitude-2of4+full"], folder["magnitude-2of4"]
    assert (lora / "adapter_model.safetensors").exists() and not (lora / "model.safetensors").exists()
    assert json.loads((lora / "recovery.json").read_text())["merged"] is False
    assert json.loads((lora / "recovery.json").read_text())["base"]["checkpoint_hash"] == \
        json.loads((pruned / "identity.json").read_text())["checkpoint_hash"]

    cells = {json.loads(p.read_text())["key"]: json.loads(p.read_text()) for p in (run / "cells").glob("*.json")}
    by_label = {(c.get("recovery") or ""): c for c in cells.values() if c["prune"]["method"] != "dense"}
    meta = json.loads((run / "generations" / f"{by_label['lora-r4']['key']}.meta.json").read_text())
    assert meta["adapter"] == {"folder": lora.name, "merged": False, "served_by": "hf-peft"}

    table = pd.read_csv(run / "report" / "tables" / "recovery_fine_tuning_dense_pruned_and_recovered_systems.csv")
    assert list(table["system"]) == ["dense", "magnitude-2:4", "magnitude-2:4+full", "magnitude-2:4+lora-r4"]
    assert list(table["role"]) == ["dense", "pruned", "recovered", "recovered"]
    for label, row in zip(["dense", "magnitude-2of4", "magnitude-2of4+full", "magnitude-2of4+lora-r4"], table.itertuples()):
        assert row.perplexity == pytest.approx(json.loads((folder[label] / "perplexity.json").read_text())["perplexity"])
    assert list(table["sparsity"].iloc[1:]) == pytest.approx([0.5, 0.5, 0.5])
    # recovered vs its pruned parent, checked against the score files: mean HaRiM risk ratio
    scores = {k: pd.read_parquet(run / "scores" / f"{c['key']}.parquet").set_index("doc_id")["harim"]
              for k, c in by_label.items()}
    for recovery, row in (("full", table.iloc[2]), ("lora-r4", table.iloc[3])):
        expected = scores[recovery].mean() / scores[""].mean()
        assert float(row["HaRiM vs pruned"].split()[0]) == pytest.approx(expected, abs=5e-4)
        assert row["HaRiM vs dense"]
    report = (run / "report" / "report.md").read_text()
    assert "Recovery fine-tuning" in report and "magnitude-2:4+full" in report

    # the pruned base of the LoRA system is as it was when pruned (identity.json, written then)
    assert hash_checkpoint(pruned) == json.loads((pruned / "identity.json").read_text())["checkpoint_hash"]

    rerun = run_study(parse_study(study), show_progress=False)
    assert rerun.count("done") == 0  # every checkpoint, recovery and cell is cached
