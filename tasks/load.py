"""``load_task``: a registry definition plus (optionally) a local file -> validated records."""

from __future__ import annotations

import random
from dataclasses import asdict
from pathlib import Path
from typing import Literal

from harness.hashing import content_key
from tasks.errors import DataError
from tasks.readers import hub_rows, read_rows
from tasks.registry import get_task
from tasks.types import FIELD_ROLES, Problem, TaskData, TaskDefinition, TaskRecord
from tasks.validate import validate_rows

PACKAGE = Path(__file__).parent


def load_task(name: str, data: str | Path | None = None, fields: dict[str, str] | None = None,
              split: str | None = None, limit: int | None = None, sample_seed: int | None = None,
              on_bad_record: Literal["error", "skip"] = "error") -> TaskData:
    """Load task ``name`` from ``data`` (a local file or saved HF dataset folder; default: the
    task's built-in data or its hub dataset in the local cache).

    ``fields`` overrides the definition's field names, e.g. ``{"document": "article"}``.
    ``on_bad_record="error"`` raises DataError on the first unusable record (naming how many
    more there are); ``"skip"`` leaves them out and lists each in ``TaskData.skipped``.
    ``limit`` keeps the first ``limit`` records, or with ``sample_seed`` a seeded sample of
    them kept in file order; the same seed always selects the same ids.
    """
    if on_bad_record not in ("error", "skip"):
        raise DataError(f"on_bad_record must be 'error' or 'skip' (got {on_bad_record!r})")
    if limit is not None and limit < 1:
        raise DataError(f"limit must be at least 1 (got {limit})")
    definition = task_definition(name, fields)
    records, problems = read_records(definition, data, split)
    if problems and on_bad_record == "error":
        more = len(problems) - 1
        hint = (f" (and {more} more problem{'s' * (more > 1)}: `prunescope tasks check {name}` "
                "lists them all; on_bad_record: skip leaves such records out)") if more else ""
        raise DataError(f"{problems[0]}{hint}")
    records = select(records, limit, sample_seed)
    return TaskData(definition, records, problems, records_hash(records))


def read_records(definition: TaskDefinition, data: str | Path | None,
                 split: str | None) -> tuple[list[TaskRecord], list[Problem]]:
    """Every usable record of the task's data and every problem found, in file order."""
    if data is not None or definition.data is not None:
        path = Path(data) if data is not None else PACKAGE / definition.data
        rows = read_rows(path, split, default_split=definition.split)
    elif definition.hub_id is not None:
        path = Path(definition.hub_id)
        rows = hub_rows(definition.hub_id, definition.hub_config, split or definition.split)
    else:
        raise DataError(f"task '{definition.name}' has no built-in data: give its file with "
                        "data=PATH (study config: tasks[].data)")
    return validate_rows(rows, str(path), definition.fields, definition.has_reference)


def select(records: list[TaskRecord], limit: int | None, seed: int | None) -> list[TaskRecord]:
    """The first ``limit`` records, or with ``seed`` a seeded sample in file order."""
    if limit is None or limit >= len(records):
        return list(records)
    if seed is None:
        return records[:limit]
    chosen = sorted(random.Random(seed).sample(range(len(records)), limit))
    return [records[i] for i in chosen]


def records_hash(records: list[TaskRecord]) -> str:
    """Content hash of the records themselves, so a reformatted file with the same records
    keeps its hash and any edited text, id or extra field changes it."""
    return content_key([asdict(record) for record in records])


def task_definition(name: str, fields: dict[str, str] | None = None) -> TaskDefinition:
    """The registry's definition of ``name`` with field names overridden by ``fields``."""
    definition, overrides = get_task(name), fields or {}
    unknown = sorted(set(overrides) - set(FIELD_ROLES))
    if unknown:
        raise DataError(f"task '{definition.name}': fields: unknown role(s) {unknown}; "
                        f"the roles are {list(FIELD_ROLES)}")
    if not overrides:
        return definition
    return definition.model_copy(update={"fields": {**definition.fields, **overrides}})
