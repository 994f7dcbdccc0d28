"""Tasks: loaders per file type, validation of bad records, skip policy, subsetting, hashing,
the demo task and `prunescope tasks check`."""

from __future__ import annotations

import csv
import json

import pytest

from harness.cli.main import main as cli
from tasks import get_task, list_tasks, load_task
from tasks.check import check_task
from tasks.demo import labelled_pairs
from tasks.errors import DataError

RECORDS = [
    {"id": "a1", "document": "The river rose two metres overnight.", "reference_summary": "River rose."},
    {"id": "b2", "document": "Shares fell after the profit warning.", "reference_summary": "Shares fell."},
    {"id": "c3", "document": "The council approved a new park.", "reference_summary": "Park approved."},
]


def write(path, records, fmt):
    """Write ``records`` (dicts) to ``path`` in one of the supported formats."""
    if fmt == "json-object":
        path.write_text(json.dumps({r["id"]: {k: v for k, v in r.items() if k != "id"} for r in records}))
    elif fmt == "json-list":
        path.write_text(json.dumps(records))
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    elif fmt == "csv":
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(records[0]))
            writer.writeheader()
            writer.writerows(records)
    elif fmt == "parquet":
        import pandas as pd

        pd.DataFrame(records).to_parquet(path)
    elif fmt == "hf":
        import datasets

        datasets.DatasetDict({"test": datasets.Dataset.from_list(records)}).save_to_disk(str(path))
    return path


SUFFIX = {"json-object": ".json", "json-list": ".json", "jsonl": ".jsonl", "csv": ".csv",
          "parquet": ".parquet", "hf": ""}


@pytest.mark.parametrize("fmt", list(SUFFIX))
def test_each_format_loads_the_same_records(tmp_path, fmt):
    path = write(tmp_path / f"data{SUFFIX[fmt]}", RECORDS, fmt)
    data = load_task("legal_contracts", data=path, split="test" if fmt == "hf" else None)
    assert [(r.id, r.document, r.reference, r.extra) for r in data.records] == [
        (r["id"], r["document"], r["reference_summary"], {}) for r in RECORDS]
    assert data.skipped == []
    # The hash covers the records, not the file's bytes: every format gives the same one.
    reference = load_task("legal_contracts", data=write(tmp_path / "ref.jsonl", RECORDS, "jsonl"))
    assert data.content_hash == reference.content_hash


def test_hf_dataset_folder_needs_an_existing_split(tmp_path):
    path = write(tmp_path / "hf", RECORDS, "hf")
    with pytest.raises(DataError, match=r"choose a split.*\['test'\], not 'train'"):
        load_task("legal_contracts", data=path, split="train")
    with pytest.raises(DataError, match=r"choose a split with split=NAME; it has \['test'\]$"):
        load_task("legal_contracts", data=path)
    # A task's default split applies to a saved copy of its hub dataset.
    rows = [{"id": r["id"], "article": r["document"], "highlights": r["reference_summary"]} for r in RECORDS]
    saved = write(tmp_path / "cnn", rows, "hf")
    references = [r.reference for r in load_task("cnn_dailymail", data=saved).records]
    assert references == [r["reference_summary"] for r in RECORDS]


def test_task_without_reference_keeps_claim_and_label(tmp_path):
    path = tmp_path / "factcc.json"
    path.write_text(json.dumps({"x1": {"document": "A text.", "claim": "A claim.", "label": 1}}))
    (record,) = load_task("factcc", data=path).records
    assert (record.id, record.reference, record.extra) == ("x1", None, {"claim": "A claim.", "label": 1})


def test_field_names_can_be_overridden(tmp_path):
    rows = [{"doc_id": r["id"], "article": r["document"], "target": r["reference_summary"]} for r in RECORDS]
    path = write(tmp_path / "renamed.csv", rows, "csv")
    data = load_task("legal_contracts", data=path,
                     fields={"id": "doc_id", "document": "article", "reference": "target"})
    assert [r.document for r in data.records] == [r["document"] for r in RECORDS]
    assert data.definition.fields["document"] == "article"
    with pytest.raises(DataError, match=r"unknown role\(s\) \['summary'\]"):
        load_task("legal_contracts", data=path, fields={"summary": "target"})


BAD = [  # (record replacing RECORDS[1], field named in the error, reason)
    ({"id": "b2", "reference_summary": "x"}, "document", "missing document"),
    ({"id": "b2", "document": "  \n\t ", "reference_summary": "x"}, "document", "empty document (only whitespace)"),
    ({"id": "b2", "document": "", "reference_summary": "x"}, "document", "empty document"),
    ({"id": "a1", "document": "Other text.", "reference_summary": "x"}, "id", "duplicate id 'a1' (first at line 1)"),
    ({"id": "b2", "document": 42, "reference_summary": "x"}, "document", "expected text, got int 42"),
    ({"id": "b2", "document": ["a", "b"], "reference_summary": "x"}, "document", "expected text, got list"),
    ({"id": "b2", "document": "Text.", "reference_summary": {"t": 1}}, "reference_summary", "expected text, got dict"),
    ({"id": "b2", "document": "Text."}, "reference_summary", "missing or empty reference summary"),
    ({"document": "Text.", "reference_summary": "x"}, "id", "missing id"),
]


@pytest.mark.parametrize("bad,field,reason", BAD)
def test_bad_record_error_names_file_record_and_field(tmp_path, bad, field, reason):
    path = write(tmp_path / "bad.jsonl", [RECORDS[0], bad, RECORDS[2]], "jsonl")
    with pytest.raises(DataError) as err:
        load_task("legal_contracts", data=path)
    assert str(err.value).startswith(f"{path}: line 2: field '{field}': {reason}")


def test_undecodable_bytes_are_reported_per_record(tmp_path):
    path = tmp_path / "latin1.jsonl"
    good = json.dumps(RECORDS[0]).encode()
    bad = b'{"id": "b2", "document": "Caf\xe9 prices rose.", "reference_summary": "x"}'
    path.write_bytes(good + b"\n" + bad + b"\n")
    with pytest.raises(DataError, match=r"latin1.jsonl: line 2: field 'document': undecodable bytes "
                                        r"\(not UTF-8\) at character 3"):
        load_task("legal_contracts", data=path)
    data = load_task("legal_contracts", data=path, on_bad_record="skip")
    assert [r.id for r in data.records] == ["a1"]


def test_undecodable_bytes_in_csv_and_parquet(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"id,document,reference_summary\na1,fine,x\nb2,ok,bad \xff ref\n")
    with pytest.raises(DataError, match="bad.csv: line 3: field 'reference_summary': undecodable"):
        load_task("legal_contracts", data=path)

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"id": ["a1", "b2"], "document": [b"fine", b"\xff\xfe"],
                      "reference_summary": ["x", "y"]})
    pq.write_table(table, tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=r"bad.parquet: row 1: field 'document': undecodable bytes "
                                        r"\(not UTF-8\) at byte 0"):
        load_task("legal_contracts", data=tmp_path / "bad.parquet")


def test_skip_policy_lists_every_skipped_record(tmp_path):
    rows = [RECORDS[0], {"id": "b2", "document": " ", "reference_summary": "x"}, RECORDS[2],
            {"id": "a1", "document": "Again.", "reference_summary": "y"}]
    path = write(tmp_path / "mixed.jsonl", rows, "jsonl")
    with pytest.raises(DataError, match=r"line 2: field 'document'.*\(and 1 more problem: `prunescope tasks check"):
        load_task("legal_contracts", data=path)
    data = load_task("legal_contracts", data=path, on_bad_record="skip")
    assert [r.id for r in data.records] == ["a1", "c3"]
    assert [(p.file, p.record, p.field) for p in data.skipped] == [
        (str(path), "line 2", "document"), (str(path), "line 4", "id")]
    assert "duplicate id 'a1'" in data.skipped[1].reason
    with pytest.raises(DataError, match="on_bad_record must be"):
        load_task("legal_contracts", data=path, on_bad_record="ignore")


def test_unreadable_files(tmp_path):
    (tmp_path / "broken.json").write_text('{"a": ')
    with pytest.raises(DataError, match="broken.json: not valid JSON"):
        load_task("rct", data=tmp_path / "broken.json")
    (tmp_path / "data.txt").write_text("text")
    with pytest.raises(DataError, match=r"data.txt: unknown data format '.txt'"):
        load_task("rct", data=tmp_path / "data.txt")
    with pytest.raises(DataError, match="no such file"):
        load_task("rct", data=tmp_path / "absent.json")
    with pytest.raises(DataError, match="holds one split"):
        load_task("demo", data=write(tmp_path / "d.jsonl", RECORDS, "jsonl"), split="test")
    with pytest.raises(DataError, match="has no built-in data"):
        load_task("factcc")
    with pytest.raises(DataError, match="unknown task 'nope'; known tasks: cnn_dailymail"):
        load_task("nope")


def test_hub_dataset_is_never_downloaded_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="EdinburghNLP/xsum.*cannot load the Hugging Face dataset"):
        load_task("xsum")


def test_subsets_are_deterministic(tmp_path):
    rows = [{"id": f"r{i}", "document": f"Document number {i}.", "reference_summary": "s"} for i in range(40)]
    path = write(tmp_path / "many.jsonl", rows, "jsonl")
    first = [r.id for r in load_task("legal_contracts", data=path, limit=5).records]
    assert first == ["r0", "r1", "r2", "r3", "r4"]
    pick = {seed: [r.id for r in load_task("legal_contracts", data=path, limit=8, sample_seed=seed).records]
            for seed in (0, 1)}
    assert pick[0] == [r.id for r in load_task("legal_contracts", data=path, limit=8, sample_seed=0).records]
    assert pick[0] != pick[1]
    for ids in pick.values():  # a sample of distinct records, kept in file order
        assert len(set(ids)) == 8 and ids == sorted(ids, key=lambda i: int(i[1:]))
    assert len(load_task("legal_contracts", data=path, limit=100).records) == 40


def test_content_hash_follows_the_data(tmp_path):
    path = write(tmp_path / "d.jsonl", RECORDS, "jsonl")
    before = load_task("legal_contracts", data=path).content_hash
    assert load_task("legal_contracts", data=path).content_hash == before
    edited = [dict(RECORDS[0], document=RECORDS[0]["document"].replace("two", "three")), *RECORDS[1:]]
    assert load_task("legal_contracts", data=write(path, edited, "jsonl")).content_hash != before
    assert load_task("legal_contracts", data=write(path, RECORDS, "jsonl"), limit=2).content_hash != before


def test_demo_task_and_its_labelled_pairs():
    data = load_task("demo")
    assert len(data.records) == 50 and len({r.id for r in data.records}) == 50
    documents = [r.document for r in data.records]
    assert len(set(documents)) == 49  # two records share one document on purpose
    words = [len(d.split()) for d in documents]
    assert min(words) < 50 and max(words) > 200
    assert all(r.reference and r.extra["inconsistent"] != r.reference for r in data.records)
    pairs = labelled_pairs()
    assert len(pairs) == 2 * 49 and sum(p["label"] for p in pairs) == 49
    assert all(set(p) == {"source", "summary", "label"} for p in pairs)
    assert {p["source"] for p in pairs} == set(documents)


def test_registry_has_the_study_tasks():
    assert set(list_tasks()) >= {"factcc", "polytope", "summeval", "legal_contracts", "rct",
                                 "cnn_dailymail", "xsum", "demo"}
    assert get_task("rct").fields["reference"] == "target"
    assert not get_task("summeval").has_reference and get_task("summeval").citation


def test_check_reports_every_problem(tmp_path, capsys):
    rows = [RECORDS[0], {"id": "b2", "reference_summary": "x"}, RECORDS[2],
            {"id": "d4", "document": "The council approved a new park.", "reference_summary": 7}]
    path = write(tmp_path / "problems.jsonl", rows, "jsonl")
    assert cli(["tasks", "check", "legal_contracts", "--data", str(path)]) == 1
    out = capsys.readouterr().out
    assert "task legal_contracts: 2 usable records, 2 with problems" in out
    assert "distinct documents: 2" in out
    assert "document words: min 6, median 6, mean 6.0, max 6" in out
    assert f"{path}: line 2: field 'document': missing document" in out
    assert f"{path}: line 4: field 'reference_summary': expected text, got int 7" in out
    assert "problems: 2" in out


def test_check_counts_tokens_and_shared_documents(tiny):
    from transformers import AutoTokenizer

    tokenizer_dir = tiny("llama")
    report = check_task("demo", tokenizer=tokenizer_dir)
    assert (report.usable_records, report.distinct_documents, report.problems) == (50, 49, [])
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    counts = [len(tok.encode(r.document, add_special_tokens=False)) for r in load_task("demo").records]
    assert (report.document_tokens.min, report.document_tokens.max) == (min(counts), max(counts))
    assert report.document_tokens.mean == pytest.approx(sum(counts) / len(counts))


def test_cli_lists_tasks(capsys):
    assert cli(["tasks", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == list_tasks()


def test_text_format_edge_cases(tmp_path):
    # U+2028 inside a JSON string is not a line break of a JSONL file.
    record = {"id": "s1", "document": "First part\u2028second part.", "reference_summary": "x"}
    path = tmp_path / "sep.jsonl"
    path.write_text(json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8")
    assert load_task("legal_contracts", data=path).records[0].document == record["document"]
    path = tmp_path / "ragged.csv"
    path.write_text("id,document,reference_summary\na1,text,x\nb2,text,x,surplus\n")
    with pytest.raises(DataError, match="ragged.csv: line 3: 1 more value"):
        load_task("legal_contracts", data=path)
    path = write(tmp_path / "ids.json", [{"id": 7, "document": "T.", "reference_summary": "x"},
                                         {"id": " ", "document": "T.", "reference_summary": "x"}], "json-list")
    data = load_task("legal_contracts", data=path, on_bad_record="skip")
    assert [r.id for r in data.records] == ["7"]
    assert [(p.record, p.field, p.reason) for p in data.skipped] == [("item 1", "id", "empty id")]
