"""Turn raw rows into task records, collecting every problem instead of stopping at the first.

A record is usable when it has a text id that no earlier record used, a non-empty text
document, and (for tasks with gold references) a non-empty text reference. Undecodable bytes
anywhere in a record's text make it unusable: it could not be written back out faithfully.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from tasks.readers import Row, Unparsed
from tasks.types import Problem, TaskRecord

# Bytes that were not UTF-8 survive decoding as lone surrogates (errors="surrogateescape").
_UNDECODABLE = re.compile("[\udc80-\udcff]")


def validate_rows(rows: Iterable[Row], file: str, fields: Mapping[str, str | None],
                  has_reference: bool) -> tuple[list[TaskRecord], list[Problem]]:
    """Usable records in file order, and one Problem per defect of the unusable ones."""
    records, problems, first_seen = [], [], {}
    for row in rows:
        record, found = _validate_row(row, file, fields, has_reference)
        if record is not None and record.id in first_seen:
            found.append(Problem(file, row.where, fields["id"],
                                 f"duplicate id '{record.id}' (first at {first_seen[record.id]})"))
        if found:
            problems.extend(found)
        else:
            first_seen[record.id] = row.where
            records.append(record)
    return records, problems


def _validate_row(row: Row, file: str, fields: Mapping[str, str | None],
                  has_reference: bool) -> tuple[TaskRecord | None, list[Problem]]:
    if isinstance(row.values, Unparsed):
        return None, [Problem(file, row.where, None, row.values.reason)]
    if not isinstance(row.values, Mapping):
        got = type(row.values).__name__
        return None, [Problem(file, row.where, None, f"expected a record (an object of fields), got {got}")]
    values = dict(row.values)
    problems = []

    def problem(field: str | None, reason: str) -> None:
        problems.append(Problem(file, row.where, field, reason))

    id_field, doc_field, ref_field = fields["id"], fields["document"], fields.get("reference")
    record_id = None
    if row.key is not None:
        record_id = _text(row.key, "id", problem)
    elif id_field not in values or values[id_field] is None:
        problem(id_field, "missing id")
    elif isinstance(values[id_field], int) and not isinstance(values[id_field], bool):
        record_id = str(values[id_field])
    else:
        record_id = _text(values[id_field], id_field, problem)
        if record_id is not None and not record_id.strip():
            problem(id_field, "empty id")

    document = None
    if doc_field not in values or values[doc_field] is None:
        present = ", ".join(map(str, values)) or "none"
        problem(doc_field, f"missing document (fields present: {present})")
    else:
        document = _text(values[doc_field], doc_field, problem)
        if document is not None and not document.strip():
            problem(doc_field, "empty document (only whitespace)" if document else "empty document")

    reference = None
    if ref_field is not None and values.get(ref_field) is not None:
        reference = _text(values[ref_field], ref_field, problem)
        if reference is not None and not reference.strip():
            reference = None
    if has_reference and reference is None and not any(p.field == ref_field for p in problems):
        problem(ref_field, "missing or empty reference summary (this task needs one)")

    facts_field = fields.get("facts")
    facts = _facts(values.get(facts_field), facts_field, problem) if facts_field else None

    used = {id_field, doc_field, ref_field, facts_field}
    if row.key is not None:
        used.discard(id_field)
    extra = {name: value for name, value in values.items() if name not in used}
    for name, value in extra.items():
        if isinstance(value, str) and _UNDECODABLE.search(value):
            problem(name, _undecodable_reason(value))
    if problems:
        return None, problems
    return TaskRecord(record_id, document, reference, extra, facts), []


def _facts(value, field: str, problem) -> list[dict] | None:
    """Gold facts as ``[{"type", "value", "key"}]``, or None after reporting what is wrong."""
    if not isinstance(value, list):
        problem(field, f"gold facts must be a list of {{type, value, key}} objects, got "
                       f"{type(value).__name__ if value is not None else 'nothing'}")
        return None
    facts = []
    for i, fact in enumerate(value):
        ok = (isinstance(fact, Mapping) and isinstance(fact.get("type"), str)
              and isinstance(fact.get("value"), str) and fact["value"].strip()
              and isinstance(fact.get("key", True), bool))
        if not ok:
            problem(field, f"fact {i}: needs a text 'type', a non-empty text 'value' and an "
                           f"optional true/false 'key' (got {_preview(fact)})")
            return None
        facts.append({"type": fact["type"], "value": fact["value"], "key": fact.get("key", True)})
    return facts


def _text(value, field: str, problem) -> str | None:
    """``value`` as text, or None after reporting why it is not text."""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as exc:
            problem(field, f"undecodable bytes (not UTF-8) at byte {exc.start}")
            return None
    if not isinstance(value, str):
        problem(field, f"expected text, got {type(value).__name__} {_preview(value)}")
        return None
    if _UNDECODABLE.search(value):
        problem(field, _undecodable_reason(value))
        return None
    return value


def _undecodable_reason(text: str) -> str:
    position = _UNDECODABLE.search(text).start()
    return f"undecodable bytes (not UTF-8) at character {position}"


def _preview(value) -> str:
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."
