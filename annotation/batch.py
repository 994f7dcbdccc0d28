"""An annotation batch: its typed records, the questions, and where each file lives.

```
annotation/<batch-id>/
  batch.json          Batch: items (article, summary A, summary B), assignment, content hash
  key/key.json        BatchKey: which system is A and which is B, per item (the unblinding)
  export/             annotator files only: nothing here names a system
  imports/<annotator>.json   validated answers;  imports/log.jsonl   every import and replacement
```
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from harness.errors import PrunescopeError
from harness.hashing import content_key
from harness.store import RunStore, read_record

GUIDELINES = Path(__file__).with_name("guidelines.md")

# Column name -> the question shown to annotators. Q1-Q3 ask which summary is worse, Q4 which
# is better; ``analysis.agreement`` turns every answer into "which system was judged worse".
QUESTIONS = {
    "q1_hallucination": "Which summary contains more hallucinations (information not supported by the article)?",
    "q2_omission": "Which summary omits more of the article's important information?",
    "q3_repetition": "Which summary has more repetition?",
    "q4_alignment": "Which summary is more semantically aligned with the article?",
}
BETTER_QUESTIONS = {"q4_alignment"}
ANSWERS = ("A", "B", "tie")
# Columns that tie an answer row to its batch and its item; article and summaries are for
# reading only. ``item_hash`` (``Item.content_hash``) travels with the row's texts, so a row
# whose item_id was changed (a column sorted on its own, a row from another batch) is caught.
ID_COLUMNS = ("batch_id", "batch_hash", "annotator", "item_id", "item_hash")


class BatchError(PrunescopeError):
    """A batch that is missing or cannot be read."""


class FrozenModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Item(FrozenModel):
    """One blinded pair: what an annotator reads."""

    item_id: str
    task: str
    doc_id: str
    article: str
    summary_a: str
    summary_b: str

    @property
    def content_hash(self) -> str:
        """Hash of the item's article and summaries: what its answer row must carry."""
        return content_key({"article": self.article, "summary_a": self.summary_a, "summary_b": self.summary_b})


class Batch(FrozenModel):
    """Everything an annotator file is made from; contains no system identity."""

    batch_id: str
    content_hash: str
    guidelines_version: str
    questions: dict[str, str]
    annotators: list[str]
    overlap: float
    seed: int
    items: list[Item]
    assignment: dict[str, list[str]]  # annotator -> item ids, in the order shown

    def item_ids(self) -> set[str]:
        return {item.item_id for item in self.items}


class BatchKey(FrozenModel):
    """The unblinding: which cell wrote summary A of each item."""

    batch_id: str
    system: str  # label of the system under test, e.g. "llama/wanda-0.5/A"
    baseline: str
    system_cells: dict[str, str]  # task -> cell key
    baseline_cells: dict[str, str]
    a_is: dict[str, Literal["system", "baseline"]]  # item id -> which one is summary A


def guidelines_version() -> str:
    match = re.search(r"^Guidelines version:\s*(\S+)", GUIDELINES.read_text(encoding="utf-8"), re.M)
    if match is None:
        raise BatchError(f"{GUIDELINES}: no 'Guidelines version:' line")
    return match.group(1)


def batch_hash(guidelines: str, items: list[Item], assignment: dict[str, list[str]]) -> str:
    """Hash of what annotators see and who sees it: a file from another export of different
    content cannot be imported into this batch."""
    return content_key({"guidelines": guidelines, "questions": QUESTIONS, "answers": ANSWERS,
                        "items": [i.model_dump() for i in items], "assignment": assignment})


def batch_dir(run_dir: str | Path, batch_id: str) -> Path:
    return RunStore(run_dir).annotation_dir(batch_id)


def list_batches(run_dir: str | Path) -> list[str]:
    base = RunStore(run_dir).annotation_dir()
    return sorted(p.parent.name for p in base.glob("*/batch.json")) if base.is_dir() else []


_NOT_EXPORTED = "no such file (export the batch first)"


def load_batch(directory: Path) -> Batch:
    return read_record(directory / "batch.json", Batch, BatchError, _NOT_EXPORTED)


def load_key(directory: Path) -> BatchKey:
    return read_record(directory / "key" / "key.json", BatchKey, BatchError, _NOT_EXPORTED)
