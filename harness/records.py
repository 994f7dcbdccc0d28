"""Typed artifact records: each stage's output is defined once here and read everywhere.

Result records hold results only. Timings, host names and absolute paths go to the run
manifest or to a cell's ``*.meta.json``, so two runs of the same study compare equal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from harness.errors import PrunescopeError
from harness.jsonl import jsonl_lines
from harness.pruning import registry
from harness.pruning.spec import prune_name

SCHEMA_VERSION = 1


class Record(BaseModel):
    """Base of every artifact record: frozen, strict about unknown fields, versioned."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    schema_version: int = SCHEMA_VERSION


class ModelIdentity(Record):
    """What a generation or checkpoint came from. ``checkpoint_hash`` is a content hash of the
    weight/config/tokenizer files, so two local checkpoints never share a cache entry."""

    name: str
    source: str  # a hub id or a path relative to the run directory, never an absolute path
    revision: str | None = None
    checkpoint_hash: str


class PruneSpecInfo(Record):
    """The pruning that produced a system. ``method == "dense"`` is the unpruned baseline."""

    method: str = "dense"  # "dense" or a name in harness.pruning.registry.METHODS
    sparsity: float = 0.0
    # "unstructured", "N:M" (e.g. "2:4"); structured methods: "structured", "structured-global"
    # or "shape-<label>" (see harness.pruning.spec.PruneSpec)
    structure: str = "unstructured"
    owl: bool = False
    seed: int | None = None  # the calibration seed; None where the pruning has no random choice

    @field_validator("method")
    @classmethod
    def _known_method(cls, method: str) -> str:
        if method != "dense":
            registry.get(method)  # ValueError naming the choices
        return method

    @property
    def label(self) -> str:
        """Short system label used in tables, e.g. ``wanda-2:4``, ``sparsegpt-0.5-s1``."""
        return prune_name(self.method, self.sparsity, self.structure, self.owl, seed=self.seed)

    @property
    def setting(self) -> str:
        """The label without the seed: the systems a seed aggregation pools, e.g. ``wanda-0.5``."""
        return prune_name(self.method, self.sparsity, self.structure, self.owl)

    @property
    def folder(self) -> str:
        """The checkpoint folder under ``checkpoints/<model>/``, e.g. ``wanda-2of4``."""
        return prune_name(self.method, self.sparsity, self.structure, self.owl, nm_sep="of",
                          seed=self.seed)


def checkpoint_folder(label: str, key: str | None) -> str:
    """A checkpoint's folder name: its label and its content key (``label`` alone for runs
    made before checkpoints were keyed)."""
    return f"{label}-{key}" if key else label


def is_dense_folder(name: str) -> bool:
    """Whether a checkpoint folder name is a dense baseline's (``dense-<key>``, or ``dense``
    in runs made before checkpoints were keyed)."""
    return name == "dense" or name.startswith("dense-")


class CellInfo(Record):
    """One cell of a study grid: a checkpoint (model x prune spec [x recovery]) on one task
    and prompt."""

    key: str
    model: str
    prune: PruneSpecInfo = Field(default_factory=PruneSpecInfo)
    recovery: str | None = None  # the recovery fine-tuning of the pruned checkpoint, e.g. "lora-r8"
    task: str
    prompt: str
    baseline_key: str | None = None  # the dense cell with the same model, task and prompt
    parent_key: str | None = None  # recovered cells: the pruned cell they were recovered from
    checkpoint: str | None = None  # the checkpoint's content key (None: runs made before it)
    doc_ids: tuple[str, ...] = ()  # the selected documents: one generation record each

    @property
    def label(self) -> str:
        """The system's short label, e.g. ``wanda-2:4`` or ``wanda-2:4+lora-r8``."""
        return self.prune.label + (f"+{self.recovery}" if self.recovery else "")

    @property
    def folder(self) -> str:
        """The checkpoint folder under ``checkpoints/<model>/``, e.g.
        ``wanda-2of4+full-1f3a...``: the label for humans, the content key so that two specs
        never share one."""
        return checkpoint_folder(self.prune.folder + (f"+{self.recovery}" if self.recovery else ""),
                                 self.checkpoint)

    @property
    def system(self) -> str:
        return f"{self.model}/{self.label}"


class GenerationRecord(Record):
    """One generated summary: a line of ``generations/<cell-key>.jsonl``.

    Identical documents under different ids are generated once; each id still gets its own
    record and ``duplicate_of`` names the id whose generation it shares."""

    doc_id: str
    prompt_id: str
    prompt_hash: str
    text: str
    output_token_ids: list[int]
    prompt_tokens: int
    output_tokens: int
    finish_reason: str  # "stop" or "length"
    truncated: bool  # the document was cut by tokens to fit the model's context
    backend: Literal["vllm", "hf"]
    model: ModelIdentity
    sampling: dict
    duplicate_of: str | None = None


class RecordError(PrunescopeError):
    """An artifact file whose records do not parse."""


def read_generations(path: str | Path) -> list[GenerationRecord]:
    """The records of a ``generations/<cell-key>.jsonl``; a bad line raises ``RecordError``
    naming the file, the line and the field."""
    records = []
    for number, line in jsonl_lines(path, RecordError):
        try:
            records.append(GenerationRecord.model_validate_json(line))
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "(record)"
            raise RecordError(f"{path}: line {number}: {field}: {err['msg']}") from None
    return records
