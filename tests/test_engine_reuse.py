"""One engine per model: checkpoints swapped into a running engine generate what a fresh
engine per checkpoint generates; engine starts equal the (model, settings, shapes) groups; a
run killed during a swap resumes to the same results."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.config import GenerationConfig, parse_study
from harness.generation import CellRequest, CheckpointRequest, generate_cell, generate_checkpoints, meta_path
from harness.generation.engine import EngineSession, SwapRefused
from harness.generation.weights import checkpoint_fingerprint, compare, module_fingerprint
from harness.models import model_identity
from harness.pruning import prune_checkpoint
from harness.pruning.spec import PruneSpec
from harness.runner.executors import ray_gpus
from harness.runner.status import format_rows, run_status
from harness.runner.study import run_study
from harness.store import RunStore
from tests.test_runner import REPO, generations_of, scores_of, study_dict

DOCUMENTS = tuple((f"d{i}", text) for i, text in enumerate((
    "The council approved a new budget for buses and schools on Tuesday after a long debate.",
    "Heavy rain flooded several streets and the fire service rescued a family from a car.",
    "A local bakery won a national prize for its rye bread, the owner said on Friday.",
    "The museum will close for repairs in May and reopen with a new exhibition in the autumn.")))
ENGINE = {"max_model_len": 1024, "dtype": "float32", "enforce_eager": True}  # as the vllm_engine fixture


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tiny):
    """family -> {name: folder}: dense, magnitude 50% unstructured and 2:4 of two families."""
    root = tmp_path_factory.mktemp("checkpoints")
    made = {}
    for family in ("llama", "opt"):
        made[family] = {"dense": tiny(family)}
        for name, structure in (("unstructured", "unstructured"), ("2:4", "2:4")):
            out = root / family / name.replace(":", "-")
            prune_checkpoint(tiny(family), PruneSpec(method="magnitude", sparsity=0.5, structure=structure),
                             out, dtype="float32")
            made[family][name] = out
    return made


def requests_for(family: str, folders: dict, out: Path) -> list[CheckpointRequest]:
    return [CheckpointRequest(name, Path(folder), model_identity(family, folder, name),
                              (CellRequest(name, DOCUMENTS, "A", out / f"{name.replace(':', '-')}.jsonl"),))
            for name, folder in folders.items()]


def token_ids(path: Path) -> list[list[int]]:
    return [json.loads(line)["output_token_ids"] for line in path.read_text().splitlines()]


@pytest.mark.vllm
@pytest.mark.parametrize("family, names", [("llama", ("dense", "unstructured", "2:4")), ("opt", ("dense", "2:4"))])
def test_swapped_checkpoints_generate_what_a_fresh_engine_per_checkpoint_does(checkpoints, vllm_engine, tmp_path,
                                                                              family, names):
    """One vLLM engine (in its worker process) serves the model's checkpoints in turn; a fresh
    engine started on each pruned checkpoint gives the same token ids (the dense one is the
    engine's own start). Pruning changed the outputs, so stale weights could not pass."""
    config = GenerationConfig(backend="vllm", max_new_tokens=24, engine=ENGINE)
    folders = {name: checkpoints[family][name] for name in names}
    events = []
    generate_checkpoints(family, requests_for(family, folders, tmp_path), config, events.append)
    assert [e["started_from"] for e in events if e["type"] == "engine"] == ["dense"]  # one engine start
    assert {e["status"] for e in events if e["type"] == "cell"} == {"done"}, events
    swapped = {}
    for name, folder in folders.items():
        out = tmp_path / f"{name.replace(':', '-')}.jsonl"
        meta = json.loads(meta_path(out).read_text())
        swapped[name] = (meta["swapped"], meta["verified"])
        if name == "dense":
            continue
        fresh = generate_cell(folder, DOCUMENTS, "A", config, model_identity(family, folder, name),
                              tmp_path / "fresh" / out.name, llm=vllm_engine(folder))
        assert token_ids(out) == [r.output_token_ids for r in fresh], name
    assert swapped == {name: (name != "dense", "fingerprint" if name != "dense" else None) for name in names}
    outputs = {name: token_ids(tmp_path / f"{name.replace(':', '-')}.jsonl") for name in names}
    assert len({json.dumps(ids) for ids in outputs.values()}) == len(names)  # each checkpoint its own


def test_fingerprint_tells_a_model_holding_other_weights(checkpoints):
    """A resident model matches its own checkpoint's fingerprint and not a differently pruned
    one's; a session refuses a checkpoint of other tensor shapes."""
    import torch
    from transformers import AutoModelForCausalLM

    llama = checkpoints["llama"]
    model = AutoModelForCausalLM.from_pretrained(llama["unstructured"], dtype=torch.float32)
    held = module_fingerprint(model, torch.float32, kernels=False)
    assert compare(held, checkpoint_fingerprint(llama["unstructured"], torch.float32)) is None
    assert "non-zero values read" in compare(held, checkpoint_fingerprint(llama["2:4"], torch.float32))
    assert "non-zero values read" in compare(held, checkpoint_fingerprint(llama["dense"], torch.float32))

    session = EngineSession(GenerationConfig(backend="hf", engine=ENGINE))
    session.load(llama["dense"])
    with pytest.raises(SwapRefused, match="tensor shapes differ"):
        session.load(checkpoints["opt"]["dense"])
    session.close()


def study_raw(out: Path, tiny, backend: str = "hf") -> dict:
    prune = [{"method": "magnitude", "sparsity": 0.5}, {"method": "magnitude", "structure": "2:4"},
             {"method": "unit-norm", "structured": {"target_shape": {"attn_units": 1, "ffn_units": 64}}}]
    raw = study_dict(out, tiny("llama"), tiny("bart"), tiny("nli"), backend=backend, prune=prune, docs=2)
    raw["prompts"] = ["A", "B"]
    return raw


@pytest.fixture(scope="module")
def hf_run(tmp_path_factory, tiny):
    """A transformers study: dense, two same-shape prunings and one structured (shape-changing)."""
    raw = study_raw(tmp_path_factory.mktemp("hf") / "run", tiny)
    return run_study(parse_study(raw), show_progress=False, report=False), raw


def test_engine_starts_equal_the_engine_groups_and_the_manifest_records_swaps(hf_run):
    result, raw = hf_run
    assert not result.failed, result.failed
    store = RunStore(raw["out"])
    manifest = store.read_manifest()
    cells = {info.key: info for info in store.read_cells().values()}
    generated = {key: manifest["cells"][key]["generate"] for key in cells}
    by_system = {}
    for key, info in cells.items():
        by_system.setdefault(info.system, set()).add(json.dumps(
            {k: generated[key][k] for k in ("engine", "swapped", "not_swapped")}))
    assert all(len(v) == 1 for v in by_system.values())  # one load per checkpoint, all its cells
    logged = {system.split("/")[1]: json.loads(next(iter(v))) for system, v in by_system.items()}
    structured = next(s for s in logged if s.startswith("unit-norm"))
    # (tiny, settings, dense shapes) serves dense and both same-shape prunings; the structured
    # checkpoint's shapes differ: 4 checkpoints x 2 prompts = 8 cells, 2 engine starts.
    assert len(manifest["engines"]) == 2 == len({v["engine"] for v in logged.values()})
    assert logged["dense"]["swapped"] is False and logged[structured]["swapped"] is False
    assert "tensor shapes differ" in logged[structured]["not_swapped"]
    assert all(v["swapped"] is True and v["engine"] == logged["dense"]["engine"]
               for s, v in logged.items() if s not in ("dense", structured))
    table = format_rows(run_status(raw["out"]))
    assert "swapped" in table.splitlines()[0] and "no: tensor shapes differ" in table


def test_a_run_killed_during_a_swap_resumes_to_the_same_results(hf_run, tiny, tmp_path):
    """SIGKILL inside the first swap (the new weights half-way into the resident model,
    nothing of that checkpoint written); the rerun starts a fresh engine there and ends with
    the generations and scores of the uninterrupted run."""
    reference, _ = hf_run
    raw = study_raw(tmp_path / "killed", tiny)
    study_path = tmp_path / "study.json"
    study_path.write_text(json.dumps(raw))
    killer = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(REPO)!r})
        import harness.generation.engine as engine
        load = engine._load_state_dict
        def load_then_die(model, model_dir):
            load(model, model_dir)
            os.kill(os.getpid(), signal.SIGKILL)
        engine._load_state_dict = load_then_die
        from harness.config import parse_study
        from harness.runner.study import run_study
        import json
        run_study(parse_study(json.load(open({str(study_path)!r}))), show_progress=False, report=False)
    """)
    child = subprocess.run([sys.executable, "-c", killer], cwd=REPO, capture_output=True, text=True)
    assert child.returncode == -9, child.stderr[-2000:]
    run_dir = Path(raw["out"])
    done = {p.stem for p in (run_dir / "generations").glob("*.jsonl")}
    assert len(done) == 2  # the dense checkpoint's two cells, nothing of the swapped one

    resumed = run_study(parse_study(raw), show_progress=False, report=False)
    assert not resumed.failed, resumed.failed
    assert {o.key for o in resumed.outcomes if o.stage == "generate" and o.status == "cached"} == done
    assert generations_of(run_dir) == generations_of(reference.run_dir)
    import pandas as pd

    pd.testing.assert_frame_equal(scores_of(run_dir), scores_of(reference.run_dir))


def test_ray_asks_one_gpu_per_engine_when_the_cluster_has_gpus(tiny, tmp_path):
    study = parse_study(study_raw(tmp_path / "r", tiny))
    assert ray_gpus(study, {"CPU": 16.0, "GPU": 4.0}) == 1
    assert ray_gpus(study, {"CPU": 16.0}) == 0
    assert ray_gpus(study.model_copy(update={"num_gpus_per_cell": 0.5}), {"GPU": 4.0}) == 0.5


def test_an_engine_worker_matches_in_process_and_reports_errors(llama_path, tmp_path):
    """In a worker process, a cell with a bad prompt id fails alone with its message and the
    other cell of its checkpoint equals in-process generation; an engine that cannot start
    fails its cells with the traceback."""
    config = GenerationConfig(backend="hf", max_new_tokens=4, engine=ENGINE)
    identity = model_identity("tiny", llama_path, "dense")
    good = CheckpointRequest("good", llama_path, identity,
                             (CellRequest("a", DOCUMENTS[:2], "A", tmp_path / "a.jsonl"),
                              CellRequest("q", DOCUMENTS[:2], "Q", tmp_path / "q.jsonl")))
    events = []
    generate_checkpoints("tiny", [good], config, events.append, isolate=True)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    generate_checkpoints("tiny", [CheckpointRequest("broken", broken, identity, (
        CellRequest("b", DOCUMENTS[:2], "A", tmp_path / "b.jsonl"),))], config, events.append, isolate=False)
    cells = {e["key"]: e for e in events if e["type"] == "cell"}
    assert cells["a"]["status"] == "done"
    assert cells["q"]["status"] == "failed" and "unknown prompt id" in cells["q"]["details"]["error"]
    assert cells["b"]["status"] == "failed" and "Traceback" in cells["b"]["details"]["traceback"]
    here = generate_cell(llama_path, DOCUMENTS[:2], "A", config, identity, tmp_path / "here.jsonl")
    assert token_ids(tmp_path / "a.jsonl") == [r.output_token_ids for r in here]


def test_demo_small_names_builtin_tiny_models_and_bad_names_are_refused(tiny, tmp_path):
    from harness.config import ConfigError, load_study

    study = load_study(REPO / "examples" / "demo-small.yaml")
    assert study.models[0].path == tiny("llama") and study.scoring.nli_model == str(tiny("nli"))
    assert len(study.prune) == 6 and study.generation.engines == "model"
    bad = tmp_path / "bad.yaml"
    bad.write_text((REPO / "examples" / "demo-small.yaml").read_text().replace("builtin:tiny-llama",
                                                                               "builtin:tiny-gpt5"))
    with pytest.raises(ConfigError, match=r"bad.yaml: models\[0\].path: 'builtin:tiny-gpt5'.*builtin:tiny-llama"):
        load_study(bad)



def vllm_study(out: Path, tiny) -> dict:
    """Dense and the two magnitude prunings of the ``checkpoints`` fixture (one engine, two
    swaps), 3 documents x 2 prompts, cheap scoring."""
    raw = study_dict(out, tiny("llama"), tiny("bart"), tiny("nli"), backend="vllm", docs=3,
                     prune=[{"method": "magnitude", "sparsity": 0.5}, {"method": "magnitude", "structure": "2:4"}])
    raw["prompts"] = ["A", "B"]
    raw["generation"].update(engines="model", max_new_tokens=16)
    raw["scoring"]["metrics"] = ["rouge", "overlap"]
    return raw


@pytest.mark.vllm
def test_a_vllm_run_killed_while_swapping_resumes_to_what_fresh_engines_generate(checkpoints, vllm_engine, tiny,
                                                                                tmp_path, capsys):
    """`prunescope run` on vLLM, killed (SIGKILL to its process group: the run and its engine
    worker) once the first checkpoint's generations are written, i.e. while the engine swaps
    in or generates the second; the rerun starts an engine on the second checkpoint and swaps
    the third into it. Every generation equals a fresh engine's on the same weights, and the
    manifest holds every cell done with its engine and swap."""
    import os
    import signal
    import time

    import yaml

    from harness.runner.plan import plan_study

    raw = vllm_study(tmp_path / "killed", tiny)
    study_path = tmp_path / "killed.yaml"
    study_path.write_text(yaml.safe_dump(raw))
    store = RunStore(raw["out"])
    plan = plan_study(parse_study(raw))
    first, second, third = ([c.info.key for c in plan.cells_of(job)] for job in plan.checkpoints)
    child = subprocess.Popen([sys.executable, "-m", "harness.cli.main", "run", str(study_path)], cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while not all(meta_path(store.generation_path(key)).exists() for key in first):
            assert child.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
            time.sleep(0.005)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    assert not any(store.generation_path(key).exists() for key in second), "killed too late"

    resumed = run_study(parse_study(raw), show_progress=True, report=False)
    assert not resumed.failed, resumed.failed
    generate = {o.key: o.status for o in resumed.outcomes if o.stage == "generate"}
    assert {k for k, s in generate.items() if s == "cached"} == set(first)
    # the worker's progress events counted the 12 requests generated (3 documents x 4 cells)
    assert "tiny generate: 6 cells, 18 requests (6 cached) in" in capsys.readouterr().err

    documents = tuple((r.id, r.document) for r in plan.tasks["demo"].records)
    fixture = {"dense": tiny("llama"), "magnitude-0.5": checkpoints["llama"]["unstructured"],
               "magnitude-2of4": checkpoints["llama"]["2:4"]}
    for job in plan.checkpoints:
        folder = fixture[job.folder.rsplit("-", 1)[0]]  # label-<content key>
        identity = model_identity("tiny", folder, job.folder)
        assert store.read_identity("tiny", job.folder).checkpoint_hash == identity.checkpoint_hash  # same weights
        for cell in plan.cells_of(job):
            fresh = generate_cell(folder, documents, cell.info.prompt, cell.generation, identity,
                                  tmp_path / "fresh" / f"{cell.info.key}.jsonl", llm=vllm_engine(folder))
            assert token_ids(store.generation_path(cell.info.key)) == [r.output_token_ids for r in fresh]

    manifest = store.read_manifest()
    assert {stage: {s["status"] for c in manifest["cells"].values() for name, s in c.items() if name == stage}
            for stage in ("prune", "generate", "score")} == {"prune": {"cached"}, "generate": {"done", "cached"},
                                                             "score": {"done"}}
    assert set(manifest["cells"]) == set(first + second + third)
    record = {key: manifest["cells"][key]["generate"] for key in first + second + third}
    assert {record[k]["swapped"] for k in first + second} == {False}  # each started an engine
    assert {(record[k]["swapped"], record[k]["engine"]) for k in third} == {(True, record[second[0]]["engine"])}
    assert record[first[0]]["engine"] != record[second[0]]["engine"] in manifest["engines"]
