"""Annotator files in three formats (CSV, JSONL, Label Studio), written and read back.

Every row of every format carries ``batch_id``, ``batch_hash``, ``annotator``, ``item_id`` and
``item_hash``, so a file identifies its batch and its annotator whatever it is renamed to, and
each row the item whose article and summaries it was written with. Readers return the
raw rows with where each came from ("line 7", "task 3"); ``annotation.importer`` validates.
A file written by the simulator carries ``simulated`` = true in every row.

CSV cells are neutralized against formula injection: a spreadsheet runs a cell that starts with
``=``, ``+``, ``-``, ``@``, a tab or a carriage return as a formula (``=HYPERLINK(...)`` in a
generated summary could send data away when an annotator opens the file). So on writing, a
cell that starts with one of these, or with an apostrophe, gets one more apostrophe in front,
and a spreadsheet shows it as text; on reading, an apostrophe followed by one of these or by
another apostrophe is removed. Reading gives back exactly the text written (``'-5 degrees``
reads as ``-5 degrees``, ``''x`` as ``'x``); any other cell is read as it stands. JSONL and
Label Studio files hold JSON strings, which no spreadsheet evaluates, and are left as they are.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import quoteattr

from annotation.batch import ANSWERS, ID_COLUMNS, QUESTIONS, Batch
from harness import atomic

FORMATS = {"csv": ".csv", "jsonl": ".jsonl", "labelstudio": ".labelstudio.json"}
TEXT_COLUMNS = ("article", "summary_a", "summary_b")
CSV_COLUMNS = (*ID_COLUMNS, *TEXT_COLUMNS, *QUESTIONS, "comment")
LABEL_STUDIO_CONFIG = "labelstudio_config.xml"
# A CSV cell starting with one of these runs as a formula in a spreadsheet; the apostrophe is
# escaped too, so that reading removes exactly the apostrophes writing added.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_ESCAPED_STARTS = (*FORMULA_STARTS, "'")


@dataclass
class RawRow:
    """One answer row as read, before validation."""

    where: str  # "line 3" or "task 2"
    values: dict[str, str | None]  # column -> text (None when absent)


@dataclass
class RawFile:
    path: Path
    rows: list[RawRow] = field(default_factory=list)
    columns: set[str] = field(default_factory=set)  # columns seen in the file
    problems: list[str] = field(default_factory=list)  # "line 3: ..." (unparseable parts)


def file_name(annotator: str, fmt: str) -> str:
    return f"{annotator}{FORMATS[fmt]}"


def write_annotator_file(path: Path, batch: Batch, annotator: str, fmt: str,
                         answers: dict[str, dict[str, str]] | None = None,
                         simulated: bool = False) -> None:
    """Write ``annotator``'s items; ``answers`` (item id -> column -> answer) fills them in."""
    items = {item.item_id: item for item in batch.items}
    rows = []
    for item_id in batch.assignment[annotator]:
        item = items[item_id]
        row = {"batch_id": batch.batch_id, "batch_hash": batch.content_hash, "annotator": annotator,
               "item_id": item_id, "item_hash": item.content_hash, "article": item.article, "summary_a": item.summary_a,
               "summary_b": item.summary_b}
        row.update({column: (answers or {}).get(item_id, {}).get(column, "")
                    for column in (*QUESTIONS, "comment")})
        if simulated:
            row["simulated"] = "true"
        rows.append(row)
    {"csv": _write_csv, "jsonl": _write_jsonl, "labelstudio": _write_label_studio}[fmt](path, rows)


def _write_csv(path: Path, rows: list[dict]) -> None:
    out = io.StringIO()
    columns = list(CSV_COLUMNS) + (["simulated"] if rows and "simulated" in rows[0] else [])
    # CRLF rows (the CSV standard): the writer then quotes any cell holding a \r or \n.
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows({column: spreadsheet_text("" if value is None else str(value)) for column, value in row.items()}
                     for row in rows)
    # A byte-order mark makes spreadsheets open the file as UTF-8.
    atomic.write_text(path, "\ufeff" + out.getvalue())


def spreadsheet_text(cell: str) -> str:
    """A CSV cell as written: with an apostrophe in front where a spreadsheet would run it."""
    return "'" + cell if cell.startswith(_ESCAPED_STARTS) else cell


def from_spreadsheet_text(cell: str) -> str:
    """A CSV cell as read: the inverse of ``spreadsheet_text``."""
    return cell[1:] if cell.startswith("'") and cell[1:].startswith(_ESCAPED_STARTS) else cell


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    atomic.write_jsonl(path, rows)


def _write_label_studio(path: Path, rows: list[dict]) -> None:
    tasks = []
    for number, row in enumerate(rows, 1):
        data = {k: v for k, v in row.items() if k not in (*QUESTIONS, "comment")}
        task = {"id": number, "data": data}
        result = [{"from_name": q, "to_name": "article", "type": "choices", "value": {"choices": [row[q]]}}
                  for q in QUESTIONS if row[q]]
        if row["comment"]:
            result.append({"from_name": "comment", "to_name": "article", "type": "textarea",
                           "value": {"text": [row["comment"]]}})
        if result:
            task["annotations"] = [{"result": result}]
        tasks.append(task)
    atomic.write_json(path, tasks)


def label_studio_config() -> str:
    """The labelling interface: article, the two summaries, one A/B/tie choice per question."""
    choices = "".join(f'<Choice value="{a}"/>' for a in ANSWERS)
    questions = "\n".join(
        f'  <Header value={quoteattr(text)}/>\n'
        f'  <Choices name="{name}" toName="article" choice="single" showInline="true">{choices}</Choices>'
        for name, text in QUESTIONS.items())
    return ("<View>\n"
            '  <Header value="Article"/>\n  <Text name="article" value="$article"/>\n'
            '  <Header value="Summary A"/>\n  <Text name="summary_a" value="$summary_a"/>\n'
            '  <Header value="Summary B"/>\n  <Text name="summary_b" value="$summary_b"/>\n'
            f"{questions}\n"
            '  <TextArea name="comment" toName="article" placeholder="Optional comment"/>\n'
            "</View>\n")


def read_answer_file(path: Path) -> RawFile:
    """Parse one answer file by its suffix; unparseable parts become ``problems``."""
    path = Path(path)
    raw = RawFile(path)
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:  # keep \r inside CSV cells
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raw.problems.append(f"cannot read: {exc}")
        return raw
    if path.name.endswith(FORMATS["labelstudio"]) or path.suffix == ".json":
        _read_label_studio(text, raw)
    elif path.suffix == ".jsonl":
        _read_jsonl(text, raw)
    elif path.suffix == ".csv":
        _read_csv(text, raw)
    else:
        raw.problems.append("unknown format: expected .csv, .jsonl or .labelstudio.json")
    return raw


def _read_csv(text: str, raw: RawFile) -> None:
    reader = csv.reader(io.StringIO(text), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raw.problems.append("line 1: empty file (no header)")
            return
        raw.columns = set(header)
        start = reader.line_num + 1
        for cells in reader:
            where = f"line {start}"
            start = reader.line_num + 1
            if not any(c.strip() for c in cells):
                continue
            if len(cells) != len(header):
                raw.problems.append(f"{where}: {len(cells)} fields where the header has {len(header)} "
                                    "(truncated or malformed row)")
                continue
            raw.rows.append(RawRow(where, dict(zip(header, map(from_spreadsheet_text, cells)))))
    except csv.Error as exc:
        raw.problems.append(f"line {reader.line_num}: unparseable CSV ({exc}); the file may be truncated")


def _read_jsonl(text: str, raw: RawFile) -> None:
    for number, line in enumerate(text.split("\n"), 1):  # not splitlines: U+2028 may be in a string
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raw.problems.append(f"line {number}: not valid JSON ({exc.msg}); the file may be truncated")
            continue
        if not isinstance(obj, dict):
            raw.problems.append(f"line {number}: expected a JSON object")
            continue
        raw.columns |= set(obj)
        raw.rows.append(RawRow(f"line {number}", {k: _text(v) for k, v in obj.items()}))
    if not raw.rows and not raw.problems:
        raw.problems.append("line 1: empty file")


def _read_label_studio(text: str, raw: RawFile) -> None:
    try:
        tasks = json.loads(text)
    except json.JSONDecodeError as exc:
        raw.problems.append(f"line {exc.lineno}: not valid JSON ({exc.msg}); the file may be truncated")
        return
    if not isinstance(tasks, list):
        raw.problems.append("line 1: expected a list of Label Studio tasks")
        return
    for number, task in enumerate(tasks, 1):
        where = f"task {number}"
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raw.problems.append(f"{where}: a task needs a 'data' object")
            continue
        values = {k: _text(v) for k, v in task["data"].items()}
        # Label Studio keeps every annotation of a task; the last one not cancelled counts.
        done = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
        for result in done[-1].get("result", []) if done else []:
            value = result.get("value", {})
            answer = (value.get("choices") or value.get("text") or [None])[0]
            values[result.get("from_name")] = _text(answer)
        values = {k: values.get(k) for k in (*QUESTIONS, "comment")} | values
        raw.columns |= set(values)
        raw.rows.append(RawRow(where, values))


def _text(value) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)
