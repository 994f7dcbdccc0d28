"""The demo task's labelled (document, summary, label) pairs for training a SummaC-Conv head.

Each demo record carries, besides its faithful reference (label 1), an ``inconsistent``
summary with one deliberate factual error (label 0).
"""

from __future__ import annotations

from tasks.load import load_task


def labelled_pairs() -> list[dict]:
    """Two pairs per distinct demo document: its reference (1) and its inconsistent summary (0)."""
    pairs, seen = [], set()
    for record in load_task("demo").records:
        if record.document in seen:
            continue
        seen.add(record.document)
        pairs.append({"source": record.document, "summary": record.reference, "label": 1})
        pairs.append({"source": record.document, "summary": record.extra["inconsistent"], "label": 0})
    return pairs
