"""Perplexity on a local text, in non-overlapping windows of ``seqlen`` tokens (as the Wanda
and SparseGPT evaluations do), to compare a dense model with its pruned versions."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch

from harness.devices import resolve_device
from harness.errors import PrunescopeError


class PerplexityError(PrunescopeError):
    """A text that does not fill one window."""


def text_hash(text: str) -> str:
    """The short hash that identifies a perplexity text in ``perplexity.json``."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def perplexity(model_or_dir, text: str, *, seqlen: int, max_windows: int | None = None,
               tokenizer=None, device=None, dtype: str = "auto") -> dict:
    """exp(mean next-token NLL) over the first ``max_windows`` full windows of ``text``
    (tokenized with the tokenizer's special tokens, e.g. a leading BOS, like the references).
    A checkpoint folder loads in ``dtype`` ("auto": its own); logits are scored in fp32."""
    model, tokenizer = _load(model_or_dir, tokenizer, device, dtype)
    ids = torch.tensor(tokenizer(text, verbose=False)["input_ids"], dtype=torch.int64)
    windows = ids.numel() // seqlen
    if max_windows is not None:
        windows = min(windows, max_windows)
    if windows < 1:
        raise PerplexityError(f"perplexity text has {ids.numel()} tokens, fewer than one window of seqlen = {seqlen}")
    device = next(model.parameters()).device
    total_nll, count = 0.0, 0
    with torch.no_grad():
        for window in ids[: windows * seqlen].reshape(windows, seqlen):
            logits = model(input_ids=window.unsqueeze(0).to(device), use_cache=False).logits[0, :-1].float()
            targets = window[1:].to(device)
            total_nll += float(-logits.log_softmax(-1).gather(1, targets.unsqueeze(1)).sum())
            count += targets.numel()
    return {"perplexity": math.exp(total_nll / count),
            "text_hash": text_hash(text),
            "seqlen": seqlen, "windows": windows,
            "dtype": str(next(model.parameters()).dtype).removeprefix("torch.")}


def _load(model_or_dir, tokenizer, device, dtype: str):
    if not isinstance(model_or_dir, (str, Path)):
        if tokenizer is None:
            raise TypeError("perplexity of a loaded model needs its tokenizer")
        return model_or_dir.eval(), tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = resolve_device(device)
    model = AutoModelForCausalLM.from_pretrained(
        model_or_dir, dtype="auto" if dtype == "auto" else getattr(torch, dtype)).to(device).eval()
    return model, tokenizer or AutoTokenizer.from_pretrained(model_or_dir)
