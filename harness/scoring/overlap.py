"""Lexical overlap of a summary with its source: extractive fragment coverage, density and
compression (Grusky et al., 2018, Newsroom), novel n-gram ratios and 3-gram repetition.

Text is lower-cased and cut into word tokens (letters/digits, inner apostrophes kept;
punctuation dropped). Every value is a ratio; a ratio whose denominator is zero (an empty
summary; fewer than n summary words for novel_n; fewer than 3 words for repetition; an empty
source for compression) is NaN rather than a made-up number.
"""

from __future__ import annotations

import math
import re

_WORD = re.compile(r"\w+(?:'\w+)*")
NAN = math.nan


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def fragments(summary: list[str], source: list[str]) -> list[list[str]]:
    """Grusky et al.'s greedy extractive fragments: from each summary position, the longest
    token run shared with the source; then jump past it (or one token if none)."""
    found, i = [], 0
    while i < len(summary):
        best: list[str] = []
        j = 0
        while j < len(source):
            if summary[i] == source[j]:
                a, b = i, j
                while a < len(summary) and b < len(source) and summary[a] == source[b]:
                    a, b = a + 1, b + 1
                if a - i > len(best):
                    best = summary[i:a]
                j = b
            else:
                j += 1
        i += max(len(best), 1)
        if best:
            found.append(best)
    return found


def ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[k:k + n]) for k in range(len(tokens) - n + 1)]


def overlap_scores(summary_text: str, source_text: str) -> dict[str, float]:
    summary, source = words(summary_text), words(source_text)
    lengths = [len(f) for f in fragments(summary, source)]
    n = len(summary)
    scores = {
        "coverage": sum(lengths) / n if n else NAN,
        "density": sum(x * x for x in lengths) / n if n else NAN,
        "compression": len(source) / n if n and source else NAN,
    }
    for k in range(1, 5):
        # distinct summary n-grams absent from the source, over distinct summary n-grams
        grams = set(ngrams(summary, k))
        novel = grams - set(ngrams(source, k))
        scores[f"novel_{k}"] = len(novel) / len(grams) if grams else NAN
    trigrams = ngrams(summary, 3)
    scores["repetition"] = 1 - len(set(trigrams)) / len(trigrams) if trigrams else NAN
    return scores


def score(batch, scorers) -> dict[str, list]:
    """Metric-registry entry point."""
    found = [overlap_scores(text, source) for text, source in zip(batch.texts, batch.sources)]
    return {column: [f[column] for f in found] for column in found[0]} if found else {}


def provenance(scorers) -> dict:
    return {"tokens": _WORD.pattern}
