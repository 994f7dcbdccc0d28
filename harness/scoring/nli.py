"""The NLI pass shared by SummaC-ZS and SummaC-Conv: P(entailment) and P(contradiction) for
every (source chunk, summary chunk) pair, batched across all documents and sorted by length.

As in SummaC, the premise is the source chunk and the hypothesis the summary chunk, the pair
is truncated to 500 tokens (longest first) and the probabilities are a softmax over all labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.errors import PrunescopeError

MAX_PAIR_TOKENS = 500
ENTAILMENT_NAMES = ("ENTAILMENT", "SUPPORTS")
CONTRADICTION_NAMES = ("CONTRADICTION", "REFUTES")


@dataclass
class NLIImage:
    """One document's NLI probabilities, shape (source chunks, summary chunks)."""

    entail: np.ndarray
    contra: np.ndarray


def label_indices(config, entailment: int | None = None,
                  contradiction: int | None = None) -> tuple[int, int]:
    """Entailment and contradiction output indices: given ones win, else the model's id2label."""
    names = {int(i): str(name).upper() for i, name in (config.id2label or {}).items()}

    def find(given, wanted, what):
        if given is not None:
            return given
        hits = [i for i, name in names.items() if name in wanted]
        if len(hits) != 1:
            raise PrunescopeError(
                f"NLI model {getattr(config, '_name_or_path', '')}: cannot tell the {what} label "
                f"from id2label {names}; set scoring.nli_{what}_index")
        return hits[0]

    return (find(entailment, ENTAILMENT_NAMES, "entailment"),
            find(contradiction, CONTRADICTION_NAMES, "contradiction"))


def nli_images(loaded, documents: list[tuple[list[str], list[str]]], *, batch_size: int = 16,
               indices: tuple[int, int] | None = None,
               max_tokens: int = MAX_PAIR_TOKENS) -> list[NLIImage]:
    """For each document (source chunks, summary chunks), its NLI image."""
    import torch

    ent_i, con_i = indices or label_indices(loaded.model.config)
    pairs = [(d, s, m) for d, (src, summ) in enumerate(documents)
             for s in range(len(src)) for m in range(len(summ))]
    images = [NLIImage(np.zeros((len(src), len(summ))), np.zeros((len(src), len(summ))))
              for src, summ in documents]
    if not pairs:
        return images
    tok = loaded.tokenizer
    encoded = tok([documents[d][0][s] for d, s, _ in pairs],
                  [documents[d][1][m] for d, _, m in pairs],
                  truncation=True, max_length=max_tokens)
    features = [{k: encoded[k][i] for k in encoded.keys()} for i in range(len(pairs))]
    order = sorted(range(len(pairs)), key=lambda i: (len(features[i]["input_ids"]), i))
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        inputs = tok.pad([features[i] for i in batch], padding_side="right", return_tensors="pt")
        with torch.inference_mode():
            logits = loaded.model(**{k: v.to(loaded.device) for k, v in inputs.items()}).logits
        probs = torch.softmax(logits.float(), dim=-1).double().cpu().numpy()
        for row, i in enumerate(batch):
            d, s, m = pairs[i]
            images[d].entail[s, m] = probs[row, ent_i]
            images[d].contra[s, m] = probs[row, con_i]
    return images
