"""Fit a prompt into the model's context by cutting the document, never by skipping it.

The budget is ``context - max_new_tokens``. Tokenizing a cut document again can merge or
split tokens at the cut, so the cut is repeated on the rendered prompt until it fits.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import PrunescopeError
from harness.generation.prompts import PromptTemplate, render_ids


class ContextTooSmallError(PrunescopeError):
    """Even an empty document does not leave room for max_new_tokens."""


@dataclass(frozen=True)
class FittedPrompt:
    ids: list[int]
    truncated: bool


def fit_prompt(tokenizer, template: PromptTemplate, document: str, layout: str,
               context: int, max_new_tokens: int, doc_id: str = "?") -> FittedPrompt:
    """The prompt ids for ``document``, cutting its tail by tokens if the prompt is too long."""
    budget = context - max_new_tokens
    ids = render_ids(tokenizer, template, document, layout)
    if len(ids) <= budget:
        return FittedPrompt(ids, truncated=False)
    overhead = len(render_ids(tokenizer, template, "", layout))
    if overhead >= budget:
        raise ContextTooSmallError(
            f"document {doc_id!r}: the prompt without the document takes {overhead} tokens, "
            f"leaving no room in a context of {context} for max_new_tokens={max_new_tokens}")
    doc_ids = tokenizer(document, add_special_tokens=False, verbose=False).input_ids
    keep = len(doc_ids)
    while len(ids) > budget and keep > 0:
        keep = max(0, keep - (len(ids) - budget))
        ids = render_ids(tokenizer, template, tokenizer.decode(doc_ids[:keep]), layout)
    return FittedPrompt(ids, truncated=True)
