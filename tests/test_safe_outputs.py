"""No command destroys or mixes results, and every CLI failure is one message.

Each case runs the real CLI (``harness.cli.main.main``) and asserts the exit code, the message
(file, record, field) and that the bytes of every earlier artifact are unchanged. One small
finished run (tiny Llama, magnitude 50%, three documents, transformers backend) is shared by
the module; a test that changes a run works on a copy of it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
import stat
from pathlib import Path

import pytest
import yaml

from annotation.batch import load_batch
from annotation.formats import write_annotator_file
from harness import atomic
from harness.cli.main import main
from tests.test_annotation import demo_documents, filled, make_cli_run
from tests.test_runner import checkpoint as checkpoint_of

LOCK = ".lock"  # holds the pid of the last run: not an artifact


def cli(capsys, *argv) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of one prunescope command (argparse exits too)."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(root).rglob("*")) if p.is_file() and p.name != LOCK}


def refused(result, *fragments) -> str:
    """The error message of a refused command: exit 2, one line per problem, no traceback."""
    code, _, err = result
    assert code == 2, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


def study_raw(model: Path, out: Path, **changes) -> dict:
    raw = {"name": "safe", "out": str(out),
           "models": [{"name": "tiny", "path": str(model), "dtype": "float32"}],
           "prune": [{"method": "magnitude", "sparsity": 0.5}],
           "tasks": [{"name": "demo", "limit": 3}],
           "generation": {"backend": "hf", "max_new_tokens": 4},
           "scoring": {"metrics": ["rouge", "overlap"]},
           "perplexity": {"seqlen": 64, "max_windows": 2},
           "analysis": {"bootstrap": 100}}
    return {**raw, **changes}


def write_study(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory, llama_path):
    """(study file, run folder) of a finished small run, made under umask 022."""
    from harness.runner.study import run_study

    root = tmp_path_factory.mktemp("finished")
    study = write_study(root / "study.yaml", study_raw(llama_path, root / "run"))
    old = os.umask(0o022)
    try:
        result = run_study(study, show_progress=False)
    finally:
        os.umask(old)
    assert not result.failed and result.report is not None
    return study, root / "run"


@pytest.fixture
def run_copy(finished, tmp_path):
    """A copy of the finished run (and its study file pointing at the copy)."""
    study, run = finished
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    raw = yaml.safe_load(study.read_text()) | {"out": str(copy)}
    return write_study(tmp_path / "study.yaml", raw), copy


@pytest.fixture
def model_copy(llama_path, tmp_path):
    copy = tmp_path / "dense"
    shutil.copytree(llama_path, copy)
    return copy


# --- prune --out ------------------------------------------------------------------------------
def test_prune_never_writes_into_the_input_model_folder(capsys, model_copy):
    before = hashes(model_copy)
    for extra in ([], ["--overwrite"]):
        refused(cli(capsys, "prune", "--model", model_copy, "--method", "magnitude", "--out", model_copy, *extra),
                str(model_copy), "input model's folder")
        refused(cli(capsys, "prune", "--model", model_copy, "--method", "magnitude", "--out", model_copy.parent,
                    *extra), "input model's folder")
    assert hashes(model_copy) == before


def test_prune_refuses_a_non_empty_folder_unless_overwrite(capsys, model_copy, tmp_path):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "thesis.tex").write_text("months of work")
    before = hashes(out)
    args = ("prune", "--model", model_copy, "--method", "magnitude", "--out", out)
    refused(cli(capsys, *args), f"{out}: --out is a non-empty folder that is not a prunescope checkpoint",
            "--overwrite")
    assert hashes(out) == before
    code, stdout, err = cli(capsys, *args, "--overwrite")
    assert code == 0, err
    assert '"measured_sparsity"' in stdout and (out / "sparsity.json").is_file()
    assert not (out / "thesis.tex").exists()


def test_prune_replaces_a_checkpoint_of_the_same_spec_only(capsys, model_copy, run_copy):
    _, run = run_copy
    checkpoint = checkpoint_of(run, "magnitude-0.5")
    before = hashes(checkpoint)
    refused(cli(capsys, "prune", "--model", model_copy, "--method", "magnitude", "--sparsity", "0.7",
                "--out", checkpoint), f"{checkpoint / 'sparsity.json'}: spec: the folder holds a checkpoint of "
                                      "another spec (magnitude 0.5 unstructured)")
    assert hashes(checkpoint) == before
    # the same spec again is a rerun: same weights, same report (but its timing)
    code, _, err = cli(capsys, "prune", "--model", model_copy, "--method", "magnitude", "--out", checkpoint)
    assert code == 0, err
    assert hashes(checkpoint)["model.safetensors"] == before["model.safetensors"]


def test_prune_and_perplexity_refuse_a_folder_that_is_not_a_model(capsys, tmp_path, finished):
    _, run = finished
    text = tmp_path / "text.txt"
    text.write_text("some words " * 50)
    dense_reports = checkpoint_of(run, "dense")  # reports only, no weights
    cases = {tmp_path / "missing": "no such model folder",
             run: "not a model folder (no config.json)"}
    bad_config = tmp_path / "bad-config"
    bad_config.mkdir()
    (bad_config / "config.json").write_text('{"hidden_size": 8}')
    cases[bad_config] = f"{bad_config / 'config.json'}: model_type: missing"
    no_weights = tmp_path / "no-weights"
    shutil.copytree(dense_reports, no_weights)
    (no_weights / "config.json").write_text('{"model_type": "llama"}')
    cases[no_weights] = "not a model folder (no weights"
    before = hashes(run)
    for folder, message in cases.items():
        refused(cli(capsys, "prune", "--model", folder, "--method", "magnitude", "--out", tmp_path / "out"),
                message)
        refused(cli(capsys, "perplexity", "--model", folder, "--text", text), message)
    assert hashes(run) == before and not (tmp_path / "out").exists()


def test_non_utf8_text_is_named(capsys, tmp_path, llama_path):
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café au lait".encode("latin-1"))
    refused(cli(capsys, "perplexity", "--model", llama_path, "--text", latin1),
            f"{latin1}: text file is not UTF-8 text (byte 0xe9 at offset 3)")
    study = tmp_path / "study.yaml"
    study.write_bytes("name: caf\xe9\n".encode("latin-1"))
    refused(cli(capsys, "run", study, "--dry-run"), f"{study}: not UTF-8 text (bad byte at offset 9)")


# --- run --out --------------------------------------------------------------------------------
def test_run_refuses_a_run_folder_of_another_study_unless_add(capsys, run_copy, tmp_path):
    study, run = run_copy
    other = write_study(tmp_path / "other.yaml", yaml.safe_load(study.read_text()) | {"name": "other"})
    before = hashes(run)
    refused(cli(capsys, "run", other, "--out", run),
            f"{run / 'study.yaml'}: name: this run folder holds study 'safe', not 'other'", "--add")
    assert hashes(run) == before
    # the same study with a changed setting stays a normal rerun
    changed = yaml.safe_load(study.read_text())
    changed["analysis"]["bootstrap"] = 200
    code, _, err = cli(capsys, "run", write_study(study, changed), "--stage", "report")
    assert code == 0, err
    code, _, err = cli(capsys, "run", other, "--out", run, "--add", "--stage", "report")
    assert code == 0, err


def test_run_refuses_a_non_empty_folder_that_is_no_run(capsys, finished, tmp_path):
    study, _ = finished
    out = tmp_path / "home"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    before = hashes(out)
    refused(cli(capsys, "run", study, "--out", out), f"{out}: not empty (notes.txt) and not a prunescope run folder")
    assert hashes(out) == before and sorted(p.name for p in out.iterdir()) == ["notes.txt"]


# --- damaged files: one message, no traceback ---------------------------------------------------
def test_truncated_manifest_is_named_by_status_report_and_run(capsys, run_copy):
    """status shows it damaged, report refuses naming it, run moves it aside (the repair:
    tests/test_damage.py)."""
    study, run = run_copy
    manifest = run / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:200])
    before = hashes(run)
    code, out, _ = cli(capsys, "status", run)
    assert code == 0 and "damaged: manifest.json: cannot read JSON" in out
    refused(cli(capsys, "report", run), f"{manifest}: cannot read JSON")
    assert hashes(run) == before
    # --debug adds the traceback
    code, _, err = cli(capsys, "--debug", "report", run)
    assert code == 2 and "Traceback" in err
    code, out, _ = cli(capsys, "run", study)
    assert code == 0 and f"moved aside and recomputed: {manifest}: cannot read JSON" in out


def test_garbage_in_a_cells_file_is_named_by_status(capsys, run_copy):
    _, run = run_copy
    cell = sorted((run / "cells").glob("*.json"))[0]
    for garbage in (b"not json at all", b'{"key": 3', b"\xff\xfe garbage"):
        cell.write_bytes(garbage)
        before = hashes(run)
        code, out, _ = cli(capsys, "status", run)
        assert code == 0 and f"damaged: cells/{cell.name}: " in out
        assert hashes(run) == before


# --- validation before any work ----------------------------------------------------------------
def test_unknown_prompt_names_fail_at_load(capsys, run_copy):
    study, run = run_copy
    raw = yaml.safe_load(study.read_text()) | {"prompts": ["A", "Z"]}
    before = hashes(run)
    for extra in (["--dry-run"], []):
        refused(cli(capsys, "run", write_study(study, raw), *extra),
                f"{study}: prompts[1]: unknown prompt 'Z'; choose from A, B, C or define it under generation.templates")
    assert hashes(run) == before
    raw["generation"]["templates"] = {"Z": "Summarize: {document}"}
    code, out, err = cli(capsys, "run", write_study(study, raw), "--dry-run")
    assert code == 0 and "\n4 cells" in out, err


def test_perplexity_window_longer_than_the_text_says_what_to_change(capsys, run_copy, tmp_path, llama_path):
    study, run = run_copy
    raw = yaml.safe_load(study.read_text())
    raw["perplexity"]["seqlen"] = 512
    before = hashes(run)
    message = ("perplexity.seqlen: the documents of task 'demo' with --limit 1: {n} tokens for model 'tiny', "
               "fewer than one window of 512; set perplexity.seqlen to at most {n}, give a longer "
               "perplexity.text, or raise --limit")
    err = refused(cli(capsys, "run", write_study(study, raw), "--limit", "1"))
    tokens = int(err.split("--limit 1: ")[1].split()[0])
    assert message.format(n=tokens) in err
    after = hashes(run)  # the --limit run's own folder (limit-1/) holds its empty log, nothing else
    assert {k for k in after if k.startswith("limit-1/")} <= {"limit-1/run.log", f"limit-1/{LOCK}"}
    assert {k: v for k, v in after.items() if not k.startswith("limit-1/")} == before
    # the count is the tokenizer's: the first document's ids
    from transformers import AutoTokenizer

    from tasks import load_task

    document = load_task("demo").records[0].document
    assert tokens == len(AutoTokenizer.from_pretrained(llama_path)(document)["input_ids"])


@pytest.mark.parametrize("argv, message", [
    (("run", "{study}", "--limit", "0"), "argument --limit: input should be greater than or equal to 1 (got 0)"),
    (("report", "{run}", "--bootstrap", "0"), "argument --bootstrap: input should be greater than or equal to 100"),
    (("report", "{run}", "--threshold", "2"), "argument --threshold: input should be less than 1 (got 2)"),
    (("report", "{run}", "--threshold", "x"), "argument --threshold: input should be a valid number"),
    (("perplexity", "--model", "{run}", "--text", "{study}", "--seqlen", "1"), "argument --seqlen"),
    (("annotate", "agreement", "{run}", "--bootstrap", "5"), "argument --bootstrap"),
    (("generate", "--model", "m", "--task", "demo", "--out", "o", "--max-new-tokens", "0"),
     "argument --max-new-tokens: input should be greater than or equal to 1"),
    (("demo", "--documents", "0"), "argument --documents: must be at least 1 (got 0)"),
])
def test_numeric_options_are_range_checked(capsys, finished, argv, message):
    study, run = finished
    before = hashes(run)
    refused(cli(capsys, *(a.format(study=study, run=run) for a in argv)), message)
    assert hashes(run) == before


def test_run_study_refuses_limit_zero(finished):
    from harness.errors import PrunescopeError
    from harness.runner.study import run_study

    study, run = finished
    before = hashes(run)
    with pytest.raises(PrunescopeError, match="limit must be at least 1 document per task"):
        run_study(study, limit=0)
    assert hashes(run) == before


# --- annotation: answers tied to their items; damage reported ----------------------------------
@pytest.fixture
def batch(capsys, tmp_path):
    """A run with generations, its study.yaml, and one exported CSV batch (6 items, ann1/ann2)."""
    root = make_cli_run(tmp_path)
    code, out, err = cli(capsys, "annotate", "export", root, "--n", "6", "--annotators", "ann1,ann2",
                         "--pair", "wanda-0.5,dense")
    assert code == 0, err
    directory = Path(out.strip()).parent
    assert load_batch(directory).items[0].article in demo_documents()["demo"].values()
    return root, directory


def answers_file(directory: Path, annotator: str, out: Path) -> Path:
    b = load_batch(directory)
    write_annotator_file(out, b, annotator, "csv", filled(b, annotator, comment="ok"))
    return out


def edit_rows(path: Path, edit) -> Path:
    rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
    edit(rows)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(out.getvalue(), encoding="utf-8")
    return path


def test_a_sorted_item_id_column_is_refused_naming_the_lines(capsys, batch, tmp_path):
    root, directory = batch
    path = answers_file(directory, "ann1", tmp_path / "ann1.csv")

    def sort_item_ids_alone(rows):
        for row, item_id in zip(rows, sorted(r["item_id"] for r in rows)):
            row["item_id"] = item_id

    edit_rows(path, sort_item_ids_alone)
    moved = [i for i, r in enumerate(csv.DictReader(io.StringIO(path.read_text())), 2)
             if r["item_id"] != load_batch(directory).assignment["ann1"][i - 2]]
    assert moved  # the seeded order is not sorted
    before = hashes(root)
    err = refused(cli(capsys, "annotate", "import", root, path), "nothing was imported")
    for line in moved:
        assert f"{path}: line {line}: item_hash" in err and "belong to another item" in err
    assert hashes(root) == before


def test_another_batchs_rows_under_this_batchs_id_are_refused(capsys, batch, tmp_path):
    root, directory = batch
    code, out, err = cli(capsys, "annotate", "export", root, "--n", "6", "--annotators", "ann1,ann2",
                         "--pair", "wanda-0.5,dense", "--seed", "1")
    other = Path(out.strip()).parent
    assert code == 0 and other != directory, err
    this = load_batch(directory)
    path = answers_file(other, "ann1", tmp_path / "ann1.csv")
    edit_rows(path, lambda rows: [r.update(batch_id=this.batch_id, batch_hash=this.content_hash) for r in rows])
    before = hashes(root)
    refused(cli(capsys, "annotate", "import", root, path), f"{path}: line 2: item_hash")
    assert hashes(root) == before
    good = answers_file(directory, "ann1", tmp_path / "good.csv")  # this batch's own file imports
    code, out, err = cli(capsys, "annotate", "import", root, good)
    assert code == 0 and "imported 6 items of annotator ann1" in out, err


@pytest.mark.parametrize("damaged", ["key/key.json", "batch.json", "imports/ann1.json", "imports/log.jsonl"])
def test_damaged_annotation_files_are_reported_never_regenerated(capsys, batch, tmp_path, damaged):
    root, directory = batch
    code, _, err = cli(capsys, "annotate", "import", root, answers_file(directory, "ann1", tmp_path / "a1.csv"))
    assert code == 0, err
    again = ("annotate", "import", root, answers_file(directory, "ann2", tmp_path / "a2.csv"))
    path = directory / damaged
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    before = hashes(root)
    export = ("annotate", "export", root, "--n", "6", "--annotators", "ann1,ann2", "--pair", "wanda-0.5,dense")
    agreement = ("annotate", "agreement", root, "--bootstrap", "100")
    failing = {"key/key.json": [export, agreement], "batch.json": [export, again, agreement],
               "imports/ann1.json": [again, agreement], "imports/log.jsonl": [again, agreement]}[damaged]
    for argv in failing:
        refused(cli(capsys, *argv), str(path))
        assert hashes(root) == before, argv


def test_reexport_of_an_intact_batch_changes_nothing(capsys, batch):
    root, directory = batch
    before = hashes(root)
    code, _, err = cli(capsys, "annotate", "export", root, "--n", "6", "--annotators", "ann1,ann2",
                       "--pair", "wanda-0.5,dense")
    assert code == 0 and hashes(root) == before, err


# --- permissions ---------------------------------------------------------------------------------
def test_results_honour_the_umask(finished, tmp_path):
    _, run = finished
    modes = {str(p.relative_to(run)): stat.S_IMODE(p.stat().st_mode) for p in run.rglob("*")}
    assert modes and {m for p, m in modes.items() if (run / p).is_file()} == {0o644}
    assert {m for p, m in modes.items() if (run / p).is_dir()} == {0o755}
    old = os.umask(0o077)
    try:
        atomic.write_json(tmp_path / "private.json", {})
        atomic.write_dir(tmp_path / "private", lambda tmp: (tmp / "a.txt").write_text("a"))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "private.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "private").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "private" / "a.txt").stat().st_mode) == 0o600
