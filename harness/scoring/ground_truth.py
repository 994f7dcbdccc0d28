"""Ground-truth metrics of one summary, for tasks whose records carry gold facts.

Matching rules (exact; all comparisons ignore case, and a value "occurs" in a text when it
appears with no letter or digit directly before or after it):

- Sentences: a text is split after ``.``, ``!`` or ``?`` followed by white space or the end.
- Fact mentions of a summary sentence, found in this order, each span taken once:
  1. dates: a day and a month name, ``12 March`` or ``March 12``;
  2. the values of the record's gold facts that occur in the sentence;
  3. numbers: runs of digits (``1,200`` and ``3.5`` are one number);
  4. names: runs of capitalised words; a run of one word at the start of a sentence is not a
     name (it is capitalised because it starts the sentence).
- ``gt_hallucinated_facts``: the number of distinct mentions (by lower-cased value) that are
  *absent* from the document, or that *contradict* it: in a summary sentence with two or more
  mentions, the document sentence holding the most of them (the first on a tie) is the one it
  restates, and a mention that occurs in the document but not in that sentence is attached to
  the wrong event (a swapped entity, a number moved from another sentence).
- ``gt_hallucination``: 1 when ``gt_hallucinated_facts`` > 0, else 0.
- ``gt_fact_recall``: the share of the record's key gold facts (``key`` true) whose value
  occurs in the summary; with no key facts, the share of all gold facts; NaN with none.
- ``gt_repetition``: the share of summary sentences that repeat an earlier sentence of the
  same summary (compared lower-cased, with runs of non-word characters as one space).

An empty summary states nothing: 0 hallucinated facts, recall 0, repetition NaN. On a record
without gold facts every ground-truth column is NaN.
"""

from __future__ import annotations

import math
import re

COLUMNS = ("gt_hallucinated_facts", "gt_hallucination", "gt_fact_recall", "gt_repetition")
_MONTH = ("January|February|March|April|May|June|July|August|September|October|November|"
          "December")
_DATE = re.compile(rf"\b(?:\d{{1,2}} (?:{_MONTH})|(?:{_MONTH}) \d{{1,2}})\b")
_NUMBER = re.compile(r"\b\d+(?:[.,]\d+)*\b")
_NAME = re.compile(r"\b[A-Z][a-z]+(?: [A-Z][a-z]+)*\b")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def sentences(text: str) -> list[str]:
    return [s for s in (part.strip() for part in _SENTENCE_END.split(text)) if s]


def occurs(value: str, text: str) -> bool:
    """``value`` appears in ``text``, ignoring case, not inside a longer word or number."""
    return re.search(rf"(?<![^\W_]){re.escape(value)}(?![^\W_])", text, re.IGNORECASE) is not None


def mentions(sentence: str, fact_values: list[str]) -> list[str]:
    """The fact mentions of one sentence, in the rule order of this module's docstring."""
    found, taken = [], [False] * len(sentence)

    def take(start: int, end: int) -> None:
        if not any(taken[start:end]):
            found.append(sentence[start:end])
            taken[start:end] = [True] * (end - start)

    for match in _DATE.finditer(sentence):
        take(*match.span())
    for value in sorted(fact_values, key=len, reverse=True):
        for match in re.finditer(rf"(?<![^\W_]){re.escape(value)}(?![^\W_])", sentence, re.IGNORECASE):
            take(*match.span())
    for match in _NUMBER.finditer(sentence):
        take(*match.span())
    for match in _NAME.finditer(sentence):
        sentence_start = not sentence[:match.start()].strip()
        if not (sentence_start and " " not in match.group()):
            take(*match.span())
    return found


def hallucinated_facts(summary: str, document: str, fact_values: list[str]) -> set[str]:
    """Lower-cased mentions of ``summary`` absent from or contradicting ``document``."""
    doc_sentences = sentences(document)
    bad = set()
    for sentence in sentences(summary):
        found = mentions(sentence, fact_values)
        bad |= {m.lower() for m in found if not occurs(m, document)}
        present = [m for m in found if occurs(m, document)]
        if len(found) >= 2 and present:
            best = max(doc_sentences, key=lambda d: sum(occurs(m, d) for m in present))
            bad |= {m.lower() for m in present if not occurs(m, best)}
    return bad


def repetition(summary: str) -> float:
    normal = [re.sub(r"\W+", " ", s.lower()).strip() for s in sentences(summary)]
    if not normal:
        return math.nan
    return sum(s in normal[:i] for i, s in enumerate(normal)) / len(normal)


def score(batch, scorers) -> dict[str, list]:
    """The registry's entry point: the ground-truth columns of every summary of ``batch``."""
    found = [ground_truth(t, s, f) for t, s, f in
             zip(batch.texts, batch.sources, batch.facts or [None] * len(batch.texts))]
    return {column: [f[column] for f in found] for column in COLUMNS}


def provenance(scorers) -> dict:
    return {"rules": "harness/scoring/ground_truth.py", "needs": "gold facts (task field 'facts')"}


def ground_truth(summary: str, document: str, facts: list[dict] | None) -> dict[str, float]:
    """The four ground-truth columns of one summary (all NaN when ``facts`` is None)."""
    if facts is None:
        return dict.fromkeys(COLUMNS, math.nan)
    values = [f["value"] for f in facts]
    bad = hallucinated_facts(summary, document, values)
    key = [f["value"] for f in facts if f.get("key", True)] or values
    recall = sum(occurs(v, summary) for v in key) / len(key) if key else math.nan
    return {"gt_hallucinated_facts": float(len(bad)), "gt_hallucination": float(bool(bad)),
            "gt_fact_recall": recall, "gt_repetition": repetition(summary)}
