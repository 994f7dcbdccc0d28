"""Sentence chunks for SummaC: NLTK punkt when its data is installed, else a regex splitter.

SummaC's sentence granularity uses NLTK ``sent_tokenize``. Its punkt data cannot be fetched
everywhere, so without it the fallback splits after ., ! or ? (optionally followed by a closing
quote or bracket) plus whitespace, like punkt: not before a lowercase word ('"Go!" he
said.' stays one sentence), not after a few common abbreviations and single initials
("Mr.", "e.g.", "J."), and never at a bare line break (punkt does not split there either).
Which splitter ran is recorded in the scorer provenance, since the two can cut a text
differently.
"""

from __future__ import annotations

import re
from functools import lru_cache

MIN_CHUNK_CHARS = 10  # SummaC keeps chunks longer than this, on both sides
MAX_SOURCE_CHUNKS = 100

_BOUNDARY = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*\s+(?![a-z])")
_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc", "e.g", "i.e",
                  "no", "inc", "ltd", "co", "corp", "gen", "gov", "sen", "rep", "u.s", "u.k"}


@lru_cache(maxsize=1)
def splitter_name() -> str:
    """"nltk-punkt" when punkt data is installed, else "regex-fallback"."""
    import nltk

    for resource in ("tokenizers/punkt_tab/english/", "tokenizers/punkt"):
        try:
            nltk.data.find(resource)
            return "nltk-punkt"
        except LookupError:
            continue
    return "regex-fallback"


def split_sentences(text: str) -> list[str]:
    if splitter_name() == "nltk-punkt":
        import nltk

        return nltk.sent_tokenize(text)
    return regex_sentences(text)


def regex_sentences(text: str) -> list[str]:
    sentences, start = [], 0
    for match in _BOUNDARY.finditer(text):
        head = text[start:match.start()]
        last_word = head.rsplit(None, 1)[-1].lower() if head.strip() else ""
        is_abbreviation = last_word in _ABBREVIATIONS or re.fullmatch(r"[a-z]", last_word)
        if match.group().startswith(".") and is_abbreviation:
            continue
        sentences.append(text[start:match.end()].strip())
        start = match.end()
    sentences.append(text[start:].strip())
    return [s for s in sentences if s]


def chunks(text: str, limit: int | None = None) -> list[str]:
    """SummaC's sentence chunks: sentences longer than 10 characters, the first ``limit``."""
    kept = [s for s in split_sentences(text) if len(s) > MIN_CHUNK_CHARS]
    return kept if limit is None else kept[:limit]
