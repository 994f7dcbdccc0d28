"""A damaged run directory is detected and repaired: for each kind of artifact, four damages
(cut, corrupt, another one's file swapped in, deleted) are shown by ``status`` and the plain
rerun restores the run to the results of an undamaged one. Plus: a ``--limit`` run never
touches the full run, and another study's spec with the same label never shares a checkpoint.

One undamaged run is built per module; each kind of damage works on a copy of it."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from harness.cli.main import main
from harness.runner.status import format_rows, run_status
from harness.runner.study import run_study
from tests.test_runner import study_dict

# Files whose bytes legitimately differ between two equal runs: logs, timings, provenance.
_NOT_RESULTS = {"manifest.json", "run.log", ".lock", ".seal.json", "study.yaml"}  # study.yaml: its out differs
_TIMING = {"wall_time_s", "peak_memory_bytes"}
_TIME = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[.\d]*(\+00:00)?")


def _study(root: Path, llama: Path, bart: Path, nli: Path) -> Path:
    """One tiny model, one prune spec, three documents, two prompts (four cells), the
    transformers backend, cheap metrics and one model-based one (SummaC-ZS on a tiny NLI)."""
    raw = study_dict(root / "run", llama, bart, nli, prune=[{"method": "magnitude", "sparsity": 0.5}], docs=3)
    raw["prompts"] = ["A", "B"]
    raw["scoring"]["metrics"] = ["summac_zs", "rouge", "overlap"]
    raw["perplexity"]["max_windows"] = 1
    raw["generation"]["max_new_tokens"] = 4
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def undamaged(tmp_path_factory, llama_path, bart_path, nli_path):
    root = tmp_path_factory.mktemp("undamaged")
    path = _study(root, llama_path, bart_path, nli_path)
    result = run_study(path, show_progress=False)
    assert not result.failed and result.report is not None
    return path, result.run_dir


def results(run_dir: Path) -> dict[str, str]:
    """Hash of every result file of a run (relative path -> sha256), logs, timing and
    provenance excepted: time stamps in the report's text are blanked, its figures (which
    carry their drawing time and random element ids) count by name; a file moved aside under
    damaged/ is evidence, not a result."""
    out = {}
    for path in sorted(p for p in run_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(run_dir).as_posix()
        if (path.name in _NOT_RESULTS or path.name.endswith(".meta.json") or rel.startswith("damaged/")
                or "provenance" in path.name):
            continue
        data = path.read_bytes()
        if path.name == "sparsity.json":  # its timing and peak memory
            data = json.dumps({k: v for k, v in json.loads(data).items() if k not in _TIMING}).encode()
        elif rel.startswith("report/figures/"):
            data = b"a figure"
        elif rel.startswith("report/"):
            data = _TIME.sub(b"<time>", data)
        out[rel] = hashlib.sha256(data).hexdigest()
    return out


def _copy(undamaged, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the undamaged run whose study writes into it (same folder name: the report's
    title is the folder's name)."""
    path, run_dir = undamaged
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    raw = yaml.safe_load(path.read_text())
    raw["out"] = str(copy)
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump(raw))
    return study, copy


def _cut(path: Path) -> None:
    """Cut at a line boundary (a JSONL keeps its first line), else in the middle."""
    data = path.read_bytes()
    lines = data.splitlines(keepends=True)
    path.write_bytes(lines[0] if len(lines) > 1 else data[: len(data) // 2])


def _corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 8] = b"\x00\xff garb"
    path.write_bytes(bytes(data))


def _keys(run_dir: Path) -> dict:
    """(cell keys by prompt and system) from the cell files of the undamaged run."""
    cells = [json.loads(p.read_text()) for p in sorted((run_dir / "cells").glob("*.json"))]
    return {(c["prompt"], c["prune"]["method"]): c["key"] for c in cells}


def _damage_cells(run: Path, keys: dict) -> list[str]:
    cell = lambda prompt, method: run / "cells" / f"{keys[prompt, method]}.json"  # noqa: E731
    _cut(cell("A", "dense"))
    _corrupt(cell("A", "magnitude"))
    shutil.copy(cell("B", "magnitude"), cell("B", "dense"))  # another cell's record
    cell("B", "magnitude").unlink()
    return [keys[k] for k in (("A", "dense"), ("A", "magnitude"), ("B", "dense"), ("B", "magnitude"))]


def _damage_per_cell(folder: str, suffix: str):
    def damage(run: Path, keys: dict) -> list[str]:
        file = lambda prompt, method: run / folder / f"{keys[prompt, method]}{suffix}"  # noqa: E731
        _cut(file("A", "dense"))
        _corrupt(file("A", "magnitude"))
        shutil.copy(file("B", "magnitude"), file("B", "dense"))  # another cell's file
        file("B", "magnitude").unlink()
        return [keys[k] for k in (("A", "dense"), ("A", "magnitude"), ("B", "dense"), ("B", "magnitude"))]

    return damage


def _damage_checkpoints(run: Path, keys: dict) -> list[str]:
    model = run / "checkpoints" / "tiny"
    dense = next(model.glob("dense-*"))
    pruned = next(model.glob("magnitude-*"))
    _cut(pruned / "model.safetensors")
    _corrupt(dense / "identity.json")
    shutil.copy(dense / "perplexity.json", pruned / "perplexity.json")  # the dense model's report
    (dense / "perplexity.json").unlink()
    return [dense.name, pruned.name]


def _damage_report(run: Path, keys: dict) -> list[str]:
    report = run / "report"
    tables = sorted((report / "tables").glob("*.csv"))
    _cut(report / "report.md")
    _corrupt(report / "report.html")
    shutil.copy(tables[0], tables[1])
    tables[0].unlink()
    return ["report"]


DAMAGES = {
    "cells": _damage_cells,
    "checkpoints": _damage_checkpoints,
    "generations": _damage_per_cell("generations", ".jsonl"),
    "scores": _damage_per_cell("scores", ".parquet"),
    "report": _damage_report,
}


@pytest.mark.parametrize("kind", DAMAGES)
def test_damage_is_shown_then_repaired_by_the_plain_rerun(undamaged, tmp_path, kind):
    study, run = _copy(undamaged, tmp_path)
    damaged = DAMAGES[kind](run, _keys(run))

    rows = run_status(run)
    flagged = [r for r in rows if r.error.startswith("damaged: ")]
    for name in damaged:  # each damaged artifact is named in a damaged row (the kind's folder too)
        assert any(name in r.error or name == r.key for r in flagged), (name, format_rows(rows))
    if kind in ("cells", "generations", "scores", "checkpoints"):
        assert len(flagged) == 4, format_rows(rows)
        assert all("damaged" in (r.prune, r.generate, r.score) for r in flagged)

    rerun = run_study(study, show_progress=False)
    assert not rerun.failed and rerun.repaired
    assert results(run) == results(undamaged[1])
    assert not [r for r in run_status(run) if r.error]
    assert list((run / "damaged").rglob("*")), "the damaged artifacts are kept for inspection"


def test_manifest_damage_is_shown_then_repaired(undamaged, tmp_path):
    """The manifest is one file: its four damages are applied one after the other, each
    shown by status, then one rerun."""
    study, run = _copy(undamaged, tmp_path)
    manifest = run / "manifest.json"
    original = manifest.read_bytes()
    damages = {"cut": _cut, "corrupt": _corrupt, "swapped": lambda p: shutil.copy(next(run.glob("cells/*.json")), p),
               "deleted": Path.unlink}
    for name, damage in damages.items():
        manifest.write_bytes(original)
        damage(manifest)
        (row,) = [r for r in run_status(run) if r.key == "manifest.json"]
        assert row.error.startswith("damaged: manifest.json: "), (name, row)
    rerun = run_study(study, show_progress=False)
    assert not rerun.failed and rerun.repaired == [f"{manifest}: missing"]
    assert results(run) == results(undamaged[1])
    assert not [r for r in run_status(run) if r.error]


def test_generations_cut_at_a_line_are_regenerated_not_rescored(undamaged, tmp_path, capsys):
    """The issue's case: a generations file cut to its first records is damaged (not 15
    rows of fresh scores); the rerun regenerates it, and the score file, made from the same
    generations, stays with a row per document."""
    study, run = _copy(undamaged, tmp_path)
    key = sorted(_keys(run).values())[0]
    _cut(run / "generations" / f"{key}.jsonl")
    row = next(r for r in run_status(run) if r.key == key)
    assert (row.generate, row.score) == ("damaged", "stale")
    assert "1 of 3 selected documents" in row.error
    assert main(["status", str(run)]) == 0
    assert f"damaged: generations/{key}.jsonl: 1 of 3 selected documents" in capsys.readouterr().out
    assert main(["run", str(study)]) == 0
    assert f"moved aside and recomputed: {run}/generations/{key}.jsonl: 1 of 3" in capsys.readouterr().out
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["cells"][key]["generate"]["status"] == "done"
    assert len(pd.read_parquet(run / "scores" / f"{key}.parquet")) == 3  # the same bytes regenerated:
    unreported = lambda run_dir: {k: v for k, v in results(run_dir).items() if not k.startswith("report/")}  # noqa: E731
    assert unreported(run) == unreported(undamaged[1])


def test_an_edited_parseable_generation_is_current_and_rescored(undamaged, tmp_path):
    study, run = _copy(undamaged, tmp_path)
    key = sorted(_keys(run).values())[0]
    path = run / "generations" / f"{key}.jsonl"
    lines = path.read_text().splitlines()
    record = json.loads(lines[0])
    record["text"] = "An edited summary."
    path.write_text("\n".join([json.dumps(record), *lines[1:]]) + "\n")
    row = next(r for r in run_status(run) if r.key == key)
    assert (row.generate, row.score, row.error) == ("done", "stale", "")
    rerun = run_study(study, show_progress=False, report=False)
    assert not rerun.repaired
    assert {(o.key, o.stage) for o in rerun.outcomes if o.status == "done"} == {(key, "score")}


def test_a_limited_run_never_touches_the_full_run(undamaged, tmp_path):
    study, run = _copy(undamaged, tmp_path)
    before = results(run)
    limited = run_study(study, limit=2, show_progress=False)
    assert not limited.failed and limited.run_dir != run and limited.run_dir.parent == run
    after = {k: v for k, v in results(run).items() if not k.startswith(f"{limited.run_dir.name}/")}
    assert after == before
    assert yaml.safe_load((limited.run_dir / "study.yaml").read_text())["tasks"][0]["limit"] == 2
    assert {len(json.loads(p.read_text())["doc_ids"]) for p in (limited.run_dir / "cells").glob("*.json")} == {2}
    assert run_study(study, show_progress=False).report.exists()  # the full run still reports

    # What --limit did before: its cells beside the full run's. The report tells them apart.
    for kind in ("cells", "generations", "scores"):
        for path in (limited.run_dir / kind).iterdir():
            shutil.copy(path, run / kind / path.name)
    from analysis.load import load_run
    from analysis.report import write_report

    data = load_run(run)
    assert data.tidy.groupby(["system", "task", "prompt", "metric", "doc_id"]).size().max() == 1
    assert len(set(data.tidy["system"])) == 8  # 2 systems x 2 prompts x (full, limited)
    assert sum("each is reported apart" in m for m in data.missing) == 4
    assert "reported apart" in write_report(run).with_name("report.md").read_text()


def test_another_studys_spec_with_the_same_label_never_shares_a_checkpoint(undamaged, tmp_path):
    """Same label (magnitude-0.5), another calibration size: another content key, another folder;
    the first study's checkpoint, generations and scores are untouched."""
    study, run = _copy(undamaged, tmp_path)
    before = results(run)
    raw = yaml.safe_load(study.read_text())
    raw["prune"][0]["calibration"]["nsamples"] = 8
    raw["prompts"] = ["A"]
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(raw))
    assert not run_study(other, stage="prune", show_progress=False).failed
    folders = sorted(p.name for p in (run / "checkpoints" / "tiny").iterdir())
    assert len([f for f in folders if f.startswith("magnitude-0.5-")]) == 2, folders
    assert {k: v for k, v in results(run).items() if k in before and not k.startswith("report/")} == {
        k: v for k, v in before.items() if not k.startswith("report/")}
