"""``check_task``: what a task's data holds and every problem in it, before a study runs."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from tasks.errors import DataError
from tasks.load import read_records, task_definition
from tasks.types import Problem


@dataclass(frozen=True)
class LengthStats:
    count: int
    min: int
    median: float
    mean: float
    max: int

    @classmethod
    def of(cls, lengths: list[int]) -> LengthStats | None:
        if not lengths:
            return None
        return cls(len(lengths), min(lengths), statistics.median(lengths),
                   statistics.fmean(lengths), max(lengths))


@dataclass(frozen=True)
class CheckReport:
    task: str
    usable_records: int
    bad_records: int  # records with at least one problem
    distinct_documents: int  # among usable records; several may share one document
    with_reference: int
    document_words: LengthStats | None
    reference_words: LengthStats | None
    document_tokens: LengthStats | None  # only with a tokenizer
    reference_tokens: LengthStats | None
    problems: list[Problem]

    def format(self) -> str:
        lines = [f"task {self.task}: {self.usable_records} usable records, "
                 f"{self.bad_records} with problems",
                 f"distinct documents: {self.distinct_documents}",
                 f"records with a reference: {self.with_reference}"]
        for label, stats in (("document words", self.document_words),
                             ("reference words", self.reference_words),
                             ("document tokens", self.document_tokens),
                             ("reference tokens", self.reference_tokens)):
            if stats is not None:
                lines.append(f"{label}: min {stats.min}, median {stats.median:g}, "
                             f"mean {stats.mean:.1f}, max {stats.max}")
        lines.append(f"problems: {len(self.problems)}")
        lines.extend(f"  {problem}" for problem in self.problems)
        return "\n".join(lines)


def check_task(name: str, data: str | Path | None = None, fields: dict[str, str] | None = None,
               split: str | None = None, tokenizer: str | Path | None = None) -> CheckReport:
    """Read all of a task's data and report its size, lengths and every problem found.

    ``tokenizer`` is a local tokenizer folder; token counts exclude special tokens.
    A file that cannot be read at all raises DataError.
    """
    definition = task_definition(name, fields)
    records, problems = read_records(definition, data, split)
    documents = [r.document for r in records]
    references = [r.reference for r in records if r.reference is not None]
    count_tokens = _token_counter(tokenizer) if tokenizer else None
    return CheckReport(
        task=name,
        usable_records=len(records),
        bad_records=len({p.record for p in problems}),
        distinct_documents=len(set(documents)),
        with_reference=len(references),
        document_words=LengthStats.of([len(t.split()) for t in documents]),
        reference_words=LengthStats.of([len(t.split()) for t in references]),
        document_tokens=LengthStats.of(count_tokens(documents)) if count_tokens else None,
        reference_tokens=LengthStats.of(count_tokens(references)) if count_tokens else None,
        problems=problems,
    )


def _token_counter(tokenizer: str | Path):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(tokenizer))
    except (OSError, ValueError) as exc:
        raise DataError(f"{tokenizer}: cannot load a tokenizer: {exc}") from None

    def count(texts: list[str]) -> list[int]:
        return [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]] if texts else []

    return count
