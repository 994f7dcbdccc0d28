"""The quality stage's artifact: ``quality.json`` in a checkpoint's folder, read by the report.

Every entry carries the key it was computed under (checkpoint content key, task or corpus
fingerprint, lm-eval's version and the settings that change a result); an entry is current
when its key equals the key computed now. Per-document responses go to
``quality-samples.jsonl`` beside it (one line per task and document).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from harness.errors import PrunescopeError
from harness.records import Record

QUALITY_FILE = "quality.json"
SAMPLES_FILE = "quality-samples.jsonl"


class QualityRecordError(PrunescopeError):
    """A quality.json that does not parse."""


class TaskScore(Record):
    """One lm-eval task on one checkpoint."""

    key: str
    task: str  # the name lm-eval reports it under
    source: str  # the registered name, or the task file's name (its content is in the key)
    lm_eval_version: str
    backend: Literal["hf", "vllm"]
    metrics: dict[str, float | None]
    primary: str | None  # the metric shown in the report
    kind: Literal["accuracy", "perplexity", "other"]
    documents: int
    num_fewshot: int | None = None
    task_version: str | None = None


class CorpusScore(Record):
    """Token-level perplexity of one checkpoint on a standard corpus (papers' protocol)."""

    key: str
    corpus: str
    protocol: str
    perplexity: float
    seqlen: int
    windows: int
    text_hash: str


class QualityRecord(Record):
    tasks: dict[str, TaskScore] = {}
    corpora: dict[str, CorpusScore] = {}


def read_quality(path: str | Path) -> QualityRecord | None:
    """A checkpoint's quality record, None when it has none; a damaged file raises
    ``QualityRecordError`` naming the file and the field."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return QualityRecord.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise QualityRecordError(f"{path}: field {where}: {err['msg']}") from None
