"""ROUGE-1/2/L F1 with Google's `rouge-score` package (Porter stemming on, as in most
summarization papers), against the reference and against the source."""

from __future__ import annotations

import math
from functools import lru_cache

TYPES = ("rouge1", "rouge2", "rougeL")


@lru_cache(maxsize=1)
def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(TYPES), use_stemmer=True)


def rouge_f1(summary: str, target: str | None) -> dict[str, float]:
    """F1 per ROUGE type; NaN for every type when there is no target (a task without
    references). An empty summary or target scores 0, as rouge-score gives."""
    if target is None:
        return {t: math.nan for t in TYPES}
    scores = _scorer().score(target, summary)
    return {t: scores[t].fmeasure for t in TYPES}


def score(batch, scorers) -> dict[str, list]:
    """Metric-registry entry point: F1 against the reference (``_ref``) and the source (``_src``)."""
    out = {}
    for suffix, targets in (("ref", batch.references), ("src", batch.sources)):
        found = [rouge_f1(text, target) for text, target in zip(batch.texts, targets)]
        for kind in TYPES:
            out[f"{kind}_{suffix}"] = [f[kind] for f in found]
    return out


def provenance(scorers) -> dict:
    return {"package": "rouge-score", "use_stemmer": True}
