"""Import annotators' answers: validate every file completely, then store all or nothing.

Each file holds one annotator's answers to one batch. Every problem in every file is reported
at once, with file and line. Importing the same answers again changes nothing; importing
different answers for the same annotator and batch replaces the earlier ones, and the
replacement is recorded in ``annotation/<batch-id>/imports/log.jsonl``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from annotation.batch import (ANSWERS, ID_COLUMNS, QUESTIONS, Batch, BatchError, FrozenModel, batch_dir,
                              list_batches, load_batch)
from annotation.formats import RawFile, read_answer_file
from harness import atomic
from harness.errors import PrunescopeError
from harness.hashing import canonical_json, content_key, hash_file

REQUIRED_COLUMNS = (*ID_COLUMNS, *QUESTIONS)
_ANSWER_SPELLING = {a.lower(): a for a in ANSWERS}


class AnnotationImportError(PrunescopeError):
    """One or more answer files are invalid; nothing was imported."""


class Answer(FrozenModel):
    answers: dict[str, str | None]  # question column -> "A" | "B" | "tie" | None (not answered)
    comment: str = ""


class StoredAnswers(FrozenModel):
    """One annotator's validated answers to one batch: ``imports/<annotator>.json``."""

    batch_id: str
    batch_hash: str
    annotator: str
    simulated: bool
    source: str  # the imported file's name
    source_sha256: str
    items: dict[str, Answer]

    def answers_hash(self) -> str:
        return content_key(self.model_dump(mode="json", include={"simulated", "items"}))


@dataclass
class ImportEntry:
    batch_id: str
    annotator: str
    action: Literal["imported", "replaced", "unchanged"]
    items: int
    source: str


@dataclass
class ImportResult:
    entries: list[ImportEntry] = field(default_factory=list)

    def summary(self) -> str:
        return "\n".join(f"{e.source}: {e.action} {e.items} items of annotator {e.annotator} "
                         f"in {e.batch_id}" for e in self.entries)


def import_answers(run_dir: str | Path, files: list[str | Path]) -> ImportResult:
    """Validate all ``files`` and store their answers, or raise AnnotationImportError listing
    every problem (and store nothing)."""
    batches = {b: load_batch(batch_dir(run_dir, b)) for b in list_batches(run_dir)}
    problems: list[str] = []
    parsed: list[StoredAnswers] = []
    owners: dict[tuple[str, str], Path] = {}
    for path in map(Path, files):
        stored, file_problems = validate_file(read_answer_file(path), batches)
        problems += [f"{path}: {p}" for p in file_problems]
        if stored is None:
            continue
        owner = (stored.batch_id, stored.annotator)
        if owner in owners:
            problems.append(f"{path}: annotator {stored.annotator!r} of {stored.batch_id} is also "
                            f"answered by {owners[owner]}; import one file per annotator")
        owners[owner] = path
        parsed.append(stored)
    if problems:
        raise AnnotationImportError(f"{len(problems)} problem(s); nothing was imported:\n"
                                    + "\n".join(f"  {p}" for p in problems))
    for batch_id in sorted({stored.batch_id for stored in parsed}):
        read_imports(batch_dir(run_dir, batch_id))  # damaged earlier imports: refuse before writing
    return ImportResult([_store(run_dir, stored) for stored in parsed])


def validate_file(raw: RawFile, batches: dict[str, Batch]) -> tuple[StoredAnswers | None, list[str]]:
    """The file's answers if valid, and every problem found in it."""
    problems = list(raw.problems)
    missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    if missing and raw.rows:
        problems.append(f"line 1: missing column(s) {', '.join(missing)}")
    if problems or not raw.rows:
        return None, problems or ["no answer rows"]
    first = raw.rows[0]
    batch_id, annotator = first.values.get("batch_id"), first.values.get("annotator")
    batch = batches.get(batch_id)
    if batch is None:
        known = ", ".join(batches) or "none"
        return None, [f"{first.where}: batch_id {batch_id!r} is not a batch of this run (batches: {known})"]
    if annotator not in batch.annotators:
        return None, [f"{first.where}: annotator {annotator!r} is not an annotator of {batch_id} "
                      f"(annotators: {', '.join(batch.annotators)})"]
    assigned = set(batch.assignment[annotator])
    items_by_id = {item.item_id: item for item in batch.items}
    items: dict[str, Answer] = {}
    first_seen: dict[str, str] = {}
    simulated = set()
    for row in raw.rows:
        v, where = row.values, row.where
        absent = [c for c in REQUIRED_COLUMNS if c not in v]
        if absent:
            problems.append(f"{where}: missing field(s) {', '.join(absent)}")
            continue
        for column, expected in (("batch_id", batch_id), ("batch_hash", batch.content_hash),
                                 ("annotator", annotator)):
            if v[column] != expected:
                what = "this batch's content hash" if column == "batch_hash" else "the file's first row"
                problems.append(f"{where}: {column} {v[column]!r} differs from {what} ({expected!r})"
                                + ("; the file comes from a different export" if column == "batch_hash" else ""))
        item_id = v["item_id"]
        if item_id not in items_by_id:
            problems.append(f"{where}: item_id {item_id!r} is not an item of {batch_id}")
            continue
        if v["item_hash"] != items_by_id[item_id].content_hash:
            problems.append(f"{where}: item_hash {v['item_hash']!r} is not the hash of item {item_id!r}'s article "
                            "and summaries: the row's texts belong to another item (an item_id column sorted "
                            "on its own, or a row from another batch?)")
            continue
        if item_id not in assigned:
            problems.append(f"{where}: item {item_id!r} is not assigned to annotator {annotator!r}")
            continue
        if item_id in first_seen:
            problems.append(f"{where}: duplicate row for item {item_id!r} (first at {first_seen[item_id]})")
            continue
        first_seen[item_id] = where
        answers = {}
        for question in QUESTIONS:
            text = (v[question] or "").strip()
            answers[question] = _ANSWER_SPELLING.get(text.lower()) if text else None
            if text and answers[question] is None:
                problems.append(f"{where}: {question}: {text!r} is not one of {', '.join(ANSWERS)}")
        if all(not (v[q] or "").strip() for q in QUESTIONS):
            problems.append(f"{where}: item {item_id!r}: no question answered")
        simulated.add((v.get("simulated") or "").strip().lower() == "true")
        items[item_id] = Answer(answers=answers, comment=(v.get("comment") or "").strip())
    unanswered = sorted(assigned - set(first_seen))
    if unanswered:
        shown = ", ".join(unanswered[:5]) + (", ..." if len(unanswered) > 5 else "")
        problems.append(f"end of file: incomplete: {len(unanswered)} of {len(assigned)} items assigned to "
                        f"{annotator!r} have no row ({shown})")
    if len(simulated) > 1:
        problems.append("some rows are marked simulated and others not")
    if problems:
        return None, problems
    return StoredAnswers(batch_id=batch_id, batch_hash=batch.content_hash, annotator=annotator,
                         simulated=simulated.pop(), source=raw.path.name,
                         source_sha256=hash_file(raw.path), items=items), []


def read_imports(directory: Path) -> dict[str, StoredAnswers]:
    """Stored answers of a batch folder, by annotator; a damaged answers file or import log
    is a BatchError naming it (answers cannot be recomputed: re-import the annotator's file)."""
    log = directory / "imports" / "log.jsonl"
    if log.exists():
        for number, line in enumerate(log.read_bytes().split(b"\n"), 1):
            try:
                if line:
                    json.loads(line)
            except ValueError:
                raise BatchError(f"{log}: line {number}: damaged import log entry; restore the file "
                                 "from a backup (or remove that line) before importing") from None
    out = {}
    for path in sorted((directory / "imports").glob("*.json")):
        try:
            stored = StoredAnswers.model_validate_json(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise BatchError(f"{path}: not valid stored answers: {exc}") from None
        out[stored.annotator] = stored
    return out


def _store(run_dir, stored: StoredAnswers) -> ImportEntry:
    directory = batch_dir(run_dir, stored.batch_id)
    previous = read_imports(directory).get(stored.annotator)
    entry = ImportEntry(stored.batch_id, stored.annotator, "imported", len(stored.items), stored.source)
    if previous is not None:
        if previous.answers_hash() == stored.answers_hash():
            entry.action = "unchanged"
            return entry
        entry.action = "replaced"
    atomic.write_json(directory / "imports" / f"{stored.annotator}.json", stored.model_dump(mode="json"))
    log = directory / "imports" / "log.jsonl"
    line = canonical_json({
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "action": entry.action,
        "annotator": stored.annotator, "source": stored.source, "source_sha256": stored.source_sha256,
        "answers_hash": stored.answers_hash(), "items": len(stored.items), "simulated": stored.simulated,
        "replaces": None if previous is None else {"source": previous.source,
                                                   "answers_hash": previous.answers_hash()}})
    atomic.write_text(log, (log.read_text(encoding="utf-8") if log.exists() else "") + line + "\n")
    return entry
