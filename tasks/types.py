"""The task API's data types: a definition (from the registry), records, problems, loaded data."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict

FIELD_ROLES = ("id", "document", "reference", "facts")


class TaskDefinition(BaseModel):
    """One registry entry: where a task's data comes from and how its records are read.

    ``fields`` maps a role (id, document, reference, facts) to the name of the field holding
    it. ``facts`` (optional) names a field of gold facts: a list of ``{"type": str, "value":
    str, "key": bool}`` per record (``key`` defaults to true: a fact a summary should state);
    a task that maps it gets the ground-truth metrics (``harness.scoring.ground_truth``).
    ``has_reference`` is true when every record must carry a gold reference summary; when false
    a reference is read where present and reference-based metrics are skipped otherwise.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    fields: dict[str, str | None]
    has_reference: bool
    split: str | None = None
    prompts: tuple[str, ...] = ("A", "B", "C")
    citation: str
    data: Path | None = None  # built-in data file, relative to the tasks package
    hub_id: str | None = None  # a Hugging Face dataset id, read from the local cache
    hub_config: str | None = None


@dataclass(frozen=True)
class TaskRecord:
    id: str
    document: str
    reference: str | None
    extra: dict = field(default_factory=dict)  # the record's other fields, e.g. claim, label
    facts: list[dict] | None = None  # gold facts, where the task maps the facts role


@dataclass(frozen=True)
class Problem:
    """A record that cannot be used, or a whole file (``record`` empty) that cannot be read."""

    file: str
    record: str  # where in the file: "line 3", "row 7", "record 'abc'"
    field: str | None
    reason: str

    def __str__(self) -> str:
        where = [self.file] + [part for part in (self.record,) if part]
        if self.field:
            where.append(f"field '{self.field}'")
        return ": ".join(where + [self.reason])


@dataclass
class TaskData:
    definition: TaskDefinition  # with the field names actually used
    records: list[TaskRecord]
    # Under on_bad_record="skip": one entry per problem of each left-out record (a record with
    # two defects appears twice); the runner writes them to the manifest.
    skipped: list[Problem]
    content_hash: str  # of the records held (ids, texts, extras), whatever file format they came in
