"""The study runner: resume after kill -9, partial recomputation, failures, Ray, vLLM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from harness.config import parse_study
from harness.runner.status import dry_run, run_status
from harness.runner.study import run_study

REPO = Path(__file__).resolve().parents[1]


def study_dict(out: Path, llama: Path, bart: Path, nli: Path, backend="hf", prune=None, docs=4):
    calibration = {"source": "task:demo", "nsamples": 4, "seqlen": 64, "seed": 0}
    if prune is None:
        prune = [{"method": "magnitude", "sparsity": 0.5}, {"method": "wanda", "structure": "2:4"}]
    return {
        "name": "t",
        "out": str(out),
        "models": [{"name": "tiny", "path": str(llama), "dtype": "float32"}],
        "prune": [{**p, "calibration": calibration} for p in prune],
        "tasks": [{"name": "demo", "limit": docs}],
        "prompts": ["A"],
        "generation": {"backend": backend, "max_new_tokens": 8,
                       "engine": {"max_model_len": 1024, "dtype": "float32", "enforce_eager": True}},
        "scoring": {"metrics": ["harim", "summac_zs", "rouge", "overlap"],
                    "harim_model": str(bart), "nli_model": str(nli)},
        "perplexity": {"seqlen": 64, "max_windows": 4},
    }


@pytest.fixture
def make_study(tmp_path, llama_path, bart_path, nli_path):
    def make(name="run", **kwargs):
        raw = study_dict(tmp_path / name, llama_path, bart_path, nli_path, **kwargs)
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(raw))
        return path, raw

    return make


def checkpoint(run_dir, label: str, model: str = "tiny") -> Path:
    """The checkpoint folder of ``label`` (named label-<content key>); the newest of several."""
    folders = sorted(Path(run_dir, "checkpoints", model).glob(f"{label}-*"), key=lambda p: p.stat().st_mtime_ns)
    assert folders, f"no checkpoint folder {label}-<key>"
    return folders[-1]


def generations_of(run_dir: Path) -> dict:
    """Every generation of a run (token ids and text), keyed by cell and document."""
    out = {}
    for path in sorted((run_dir / "generations").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            out[(path.stem, rec["doc_id"])] = (rec["output_token_ids"], rec["text"])
    return out


def scores_of(run_dir: Path) -> pd.DataFrame:
    """Every score of a run, a row per cell and document."""
    frames = {p.stem: pd.read_parquet(p) for p in sorted((run_dir / "scores").glob("*.parquet"))}
    return pd.concat(frames, names=["cell", "row"]).reset_index("row", drop=True)


def risk_ratios(run_dir: Path) -> pd.DataFrame:
    from analysis.load import load_run
    from analysis.risk import risk_table

    return risk_table(load_run(run_dir), "mean_risk", 0.5, 200, 0)


def test_killed_run_resumes_to_the_same_results(make_study):
    path, raw = make_study("killed")
    run_dir = Path(raw["out"])
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli.main", "run", str(path)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not list((run_dir / "generations").glob("*.jsonl")):
        assert proc.poll() is None and time.time() < deadline, "run ended before any generation"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)  # mid-run: one cell generated, the rest not
    proc.wait()
    assert len(list((run_dir / "generations").glob("*.jsonl"))) < 3

    resumed = run_study(path, show_progress=False)
    assert not resumed.failed
    assert resumed.count("cached") >= 1  # the finished generation was not redone

    reference_path, _ = make_study("uninterrupted")
    reference = run_study(reference_path, show_progress=False)
    assert generations_of(run_dir) == generations_of(reference.run_dir)
    pd.testing.assert_frame_equal(scores_of(run_dir), scores_of(reference.run_dir))
    pd.testing.assert_frame_equal(risk_ratios(run_dir), risk_ratios(reference.run_dir))


def test_changing_one_prune_spec_recomputes_only_its_cells(make_study):
    path, raw = make_study("change")
    first = run_study(path, show_progress=False)
    assert not first.failed and first.count("done") > 0
    raw["prune"][0]["sparsity"] = 0.3  # magnitude 0.5 -> 0.3; dense and wanda 2:4 unchanged
    path.write_text(yaml.safe_dump(raw))
    second = run_study(path, show_progress=False)
    redone = {(o.key, o.stage) for o in second.outcomes if o.status == "done"}
    changed = {r.key for r in run_status(raw["out"]) if r.system.endswith("magnitude-0.3")}
    assert {key for key, _ in redone} == changed
    assert {stage for _, stage in redone} == {"prune", "generate", "score"}
    third = run_study(path, show_progress=False)  # and a rerun of a finished run redoes nothing
    assert third.count("done") == 0 and third.count("cached") > 0
    raw["perplexity"]["max_windows"] = 2  # perplexity settings redo only the perplexities
    path.write_text(yaml.safe_dump(raw))
    fourth = run_study(path, show_progress=False)
    assert {o.stage for o in fourth.outcomes if o.status == "done"} == {"prune"}
    for folder in ("dense", "magnitude-0.3", "wanda-2of4"):
        report = checkpoint(raw["out"], folder) / "perplexity.json"
        assert json.loads(report.read_text())["windows"] == 2


def test_failed_cell_is_reported_and_others_complete(make_study, tmp_path, capsys):
    path, raw = make_study("fails", prune=[{"method": "magnitude", "sparsity": 0.5},
                                           {"method": "wanda", "sparsity": 0.5}])
    short = tmp_path / "missing-calibration.txt"  # exists (the plan checks that) but is too short
    short.write_text("too short to calibrate")
    raw["prune"][1]["calibration"]["source"] = str(short)
    path.write_text(yaml.safe_dump(raw))
    result = run_study(path, show_progress=False)
    failed = {o.stage for o in result.failed}
    assert failed == {"prune", "generate"}  # wanda's checkpoint failed; its cell is blocked
    rows = {r.system.split("/")[1]: r for r in run_status(raw["out"])}
    assert rows["wanda-0.5"].prune == "failed" and "missing-calibration" in rows["wanda-0.5"].error
    assert rows["dense"].score == "done" and rows["magnitude-0.5"].score == "done"
    manifest = json.loads((Path(raw["out"]) / "manifest.json").read_text())
    wanda_key = rows["wanda-0.5"].key
    assert "Traceback" in manifest["cells"][wanda_key]["prune"]["traceback"]

    from harness.cli.main import main

    assert main(["status", raw["out"]]) == 0
    assert "failed" in capsys.readouterr().out


def test_dry_run_lists_cells_and_cached_state(make_study):
    path, raw = make_study("dry")
    from harness.config import load_study

    study = load_study(path)
    rows, estimate = dry_run(study)
    assert len(rows) == 3 and all(r.generate == "pending" for r in rows)
    assert estimate > 0
    run_study(study, show_progress=False)
    rows, estimate = dry_run(study)
    assert all(r.generate == "done" and r.score == "done" for r in rows) and estimate == 0


def test_ray_executor_runs_a_two_cell_study(make_study, llama_path, capsys):
    pytest.importorskip("ray")
    from tests.test_progress import layers, stage_lines

    path, raw = make_study("ray", prune=[{"method": "magnitude", "sparsity": 0.5}], docs=2)
    raw["executor"] = "ray"
    capsys.readouterr()
    result = run_study(parse_study(raw), show_progress=True)
    import ray

    ray.shutdown()
    assert not result.failed
    assert len(list(Path(raw["out"], "scores").glob("*.parquet"))) == 2
    # progress counted per checkpoint and cell as the Ray tasks' results arrive: 2 cells of 2
    # documents, one scoring batch per metric and cell
    assert stage_lines(capsys.readouterr().err) == {"prune": (2, layers(llama_path), 0), "generate": (2, 4, 0),
                                                    "score": (2, 2 * len(raw["scoring"]["metrics"]), 0)}


@pytest.mark.vllm
def test_end_to_end_through_vllm(make_study):
    path, raw = make_study("vllm", backend="vllm", prune=[{"method": "sparsegpt", "structure": "2:4"}], docs=3)
    result = run_study(path, show_progress=False)
    assert not result.failed, result.failed
    assert result.report is not None and result.report.exists()
    gens = [json.loads(l) for p in Path(raw["out"], "generations").glob("*.jsonl")
            for l in p.read_text().splitlines()]
    assert {g["backend"] for g in gens} == {"vllm"} and len(gens) == 6


def test_keep_checkpoints_false_drops_pruned_weights(make_study):
    path, raw = make_study("drop", prune=[{"method": "magnitude", "sparsity": 0.5}], docs=2)
    raw["keep_checkpoints"] = False
    result = run_study(parse_study(raw), show_progress=False)
    assert not result.failed
    folder = checkpoint(raw["out"], "magnitude-0.5")
    assert not list(folder.glob("*.safetensors"))
    assert (folder / "sparsity.json").exists() and (folder / "identity.json").exists()
    again = run_study(parse_study(raw), show_progress=False)  # nothing to redo
    assert again.count("done") == 0


def test_stages_run_one_at_a_time(make_study):
    path, raw = make_study("stages", prune=[{"method": "wanda", "sparsity": 0.5}], docs=2)
    out = Path(raw["out"])
    run_study(path, stage="prune", show_progress=False)
    assert (checkpoint(out, "wanda-0.5") / "sparsity.json").exists()
    assert not list(out.glob("generations/*.jsonl"))
    blocked = run_study(path, stage="score", show_progress=False)  # nothing generated yet
    assert {o.stage for o in blocked.outcomes} == {"score"}  # scoring alone never prunes
    assert {o.status for o in blocked.outcomes} == {"blocked"}
    run_study(path, stage="generate", show_progress=False)
    assert len(list(out.glob("generations/*.jsonl"))) == 2 and not list(out.glob("scores/*"))
    scored = run_study(path, stage="score", show_progress=False)
    assert not scored.failed and len(list(out.glob("scores/*.parquet"))) == 2
    assert run_study(path, stage="report", show_progress=False).report.exists()


def test_freshness_one_rule_for_run_and_status(make_study):
    """A rerun redoes nothing; a scorer setting rescores only; a hand-edited generation record
    makes that cell's scores stale in both status and run."""
    path, raw = make_study("fresh", prune=[{"method": "magnitude", "sparsity": 0.5}], docs=2)
    assert not run_study(path, show_progress=False, report=False).failed
    again = run_study(path, show_progress=False, report=False)
    assert again.count("done") == 0 and again.count("cached") == 6  # 2 cells x (prune, generate, score)
    raw["scoring"]["harim_summary_tokens"] = 40
    path.write_text(yaml.safe_dump(raw))
    rows, _ = dry_run(load_study_file(path))  # the new settings; status judges by the run's own
    assert all(r.score == "stale" and r.generate == "done" for r in rows)
    rescored = run_study(path, show_progress=False, report=False)
    assert {(o.stage, o.status) for o in rescored.outcomes if o.status != "cached"} == {("score", "done")}
    assert sum(o.status == "done" for o in rescored.outcomes) == 2

    rows = run_status(raw["out"])
    assert all(r.score == "done" for r in rows)
    edited = next(r.key for r in rows if r.system.endswith("dense"))
    generations = Path(raw["out"], "generations", f"{edited}.jsonl")
    lines = generations.read_text().splitlines()
    record = json.loads(lines[0])
    record["text"] = "A summary edited by hand."
    generations.write_text("\n".join([json.dumps(record), *lines[1:]]) + "\n")
    states = {r.key: r.score for r in run_status(raw["out"])}
    assert states[edited] == "stale" and {v for k, v in states.items() if k != edited} == {"done"}
    rerun = run_study(path, show_progress=False, report=False)
    assert {(o.key, o.stage) for o in rerun.outcomes if o.status == "done"} == {(edited, "score")}
    assert all(r.score == "done" for r in run_status(raw["out"]))


def test_calibration_from_the_study_data_of_a_task(make_study, tmp_path):
    """task:factcc calibrates from the study's local FactCC file (the task has no built-in
    data), and a source that cannot resolve fails --dry-run naming the prune spec."""
    from harness.cli.main import main
    from tasks import load_task

    demo = load_task("demo").records
    data = tmp_path / "factcc.json"
    data.write_text(json.dumps({r.id: {"document": r.document, "claim": "x", "label": 1} for r in demo}))
    path, raw = make_study("calib", prune=[{"method": "wanda", "sparsity": 0.5}], docs=2)
    raw["tasks"] = [{"name": "factcc", "data": str(data), "limit": 2}]
    raw["prune"][0]["calibration"]["source"] = "task:factcc"
    path.write_text(yaml.safe_dump(raw))
    assert not run_study(path, stage="prune", show_progress=False).failed
    report = json.loads((checkpoint(raw["out"], "wanda-0.5") / "sparsity.json").read_text())
    expected = load_task("factcc", data=data).content_hash
    assert report["calibration"]["source"] == "task:factcc" and report["calibration"]["data_hash"] == expected

    raw["tasks"] = [{"name": "demo", "limit": 2}]  # factcc no longer has the study's data
    path.write_text(yaml.safe_dump(raw))
    assert main(["run", str(path), "--dry-run"]) == 2
    raw["prune"][0]["calibration"]["source"] = str(tmp_path / "nowhere.txt")
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(Exception, match=r"prune\[0\] \(wanda-0.5\): calibration.source .*nowhere.txt.*no such file"):
        dry_run(load_study_file(path))


def load_study_file(path):
    from harness.config import load_study

    return load_study(path)


def test_model_dtype_reaches_pruning_perplexity_and_generation(make_study):
    import torch

    from harness.config import GenerationConfig
    from harness.generation.backends import HFBackend
    from transformers import AutoTokenizer

    path, raw = make_study("bf16", prune=[{"method": "wanda", "sparsity": 0.5}], docs=1)
    raw["models"][0]["dtype"] = "bfloat16"
    path.write_text(yaml.safe_dump(raw))
    result = run_study(path, stage="generate", show_progress=False)
    assert not result.failed, result.failed
    folder = checkpoint(raw["out"], "wanda-0.5")
    assert json.loads((folder / "sparsity.json").read_text())["dtype"] == "bfloat16"
    assert json.loads((folder / "perplexity.json").read_text())["dtype"] == "bfloat16"
    assert json.loads((folder / "config.json").read_text())["dtype"] == "bfloat16"
    metas = [json.loads(p.read_text()) for p in Path(raw["out"], "generations").glob("*.meta.json")]
    assert len(metas) == 2 and {m["dtype"] for m in metas} == {"bfloat16"}
    config = GenerationConfig(backend="hf", engine={"dtype": "bfloat16"})
    backend = HFBackend(folder, AutoTokenizer.from_pretrained(folder), config, set())
    assert backend.model.dtype == torch.bfloat16
