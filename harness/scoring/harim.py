"""HaRiM+ (Son et al., 2022): hallucination risk of a summary under a seq2seq scorer.

For summary tokens y_i (BART's <s> and </s> included, as in the published module):
p_i = P(y_i | y_<i, source), q_i = P(y_i | y_<i, empty source),
risk_i = (1 - p_i)(1 - (p_i - q_i)) / 2, HaRiM = mean_i risk_i, LL = mean_i log p_i,
HaRiM+ = LL + lambda (1 - HaRiM). Sources are cut to 1024 scorer tokens and summaries to 110,
both counts including the specials; the empty source "" tokenizes to <s></s>.

Unlike the published module, padding never enters a sum: each example's terms are taken
over its own label length, so a score does not depend on batch size or order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LAMBDA = 7.0
SOURCE_TOKENS = 1024
SUMMARY_TOKENS = 110


@dataclass(frozen=True)
class HarimScore:
    harim_plus: float
    harim: float  # mean risk, in [0, 1]
    loglik: float  # mean log p


def harim_from_probs(logp: np.ndarray, logq: np.ndarray, lam: float = LAMBDA) -> HarimScore:
    """The formula, over one example's per-token log-probabilities (float64)."""
    p, q = np.exp(logp), np.exp(logq)
    risk = (1.0 - p) * (1.0 - (p - q)) / 2.0
    mean_risk = float(risk.mean())
    loglik = float(logp.mean())
    return HarimScore(loglik + lam * (1.0 - mean_risk), mean_risk, loglik)


def harim_scores(loaded, sources: list[str], summaries: list[str], *, batch_size: int = 16,
                 source_tokens: int = SOURCE_TOKENS, summary_tokens: int = SUMMARY_TOKENS,
                 lam: float = LAMBDA) -> list[HarimScore]:
    """HaRiM+ of each (source, summary) pair; pairs are batched across documents by length."""
    tok = loaded.tokenizer
    src_ids = tok(sources, truncation=True, max_length=source_tokens)["input_ids"]
    labels = tok(summaries, truncation=True, max_length=summary_tokens)["input_ids"]
    empty_ids = tok("", truncation=True, max_length=source_tokens)["input_ids"]
    order = sorted(range(len(sources)), key=lambda i: (len(src_ids[i]) + len(labels[i]), i))
    scores: list[HarimScore | None] = [None] * len(sources)
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        batch_labels = [labels[i] for i in batch]
        logp = label_logprobs(loaded, [src_ids[i] for i in batch], batch_labels)
        logq = label_logprobs(loaded, [empty_ids] * len(batch), batch_labels)
        for row, i in enumerate(batch):
            n = len(labels[i])
            scores[i] = harim_from_probs(logp[row, :n], logq[row, :n], lam)
    return scores


def label_logprobs(loaded, encoder_ids: list[list[int]], labels: list[list[int]]) -> np.ndarray:
    """log P(label_t | label_<t, encoder input) per position, teacher-forced; rows are padded
    on the right, so the values at real positions do not see the padding (causal decoder,
    masked encoder). Returns float64 (batch, max label length); padded cells are garbage."""
    import torch

    model, device = loaded.model, loaded.device
    pad = loaded.tokenizer.pad_token_id
    start = model.config.decoder_start_token_id
    enc, enc_mask = _pad(encoder_ids, pad)
    lab, _ = _pad(labels, pad)
    decoder_in = torch.cat([torch.full((len(labels), 1), start), lab[:, :-1]], dim=1)
    with torch.inference_mode():
        logits = model(input_ids=enc.to(device), attention_mask=enc_mask.to(device),
                       decoder_input_ids=decoder_in.to(device)).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        picked = logprobs.gather(-1, lab.to(device).unsqueeze(-1)).squeeze(-1)
    return picked.double().cpu().numpy()


def _pad(rows: list[list[int]], pad_id: int):
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, :len(r)] = 1
    return ids, mask


def score(batch, scorers) -> dict[str, list]:
    """Metric-registry entry point: HaRiM+, mean risk and mean log p per summary."""
    cfg = scorers.config
    found = harim_scores(scorers.model("harim"), batch.sources, batch.texts, batch_size=cfg.batch_size,
                         source_tokens=cfg.harim_source_tokens, summary_tokens=cfg.harim_summary_tokens)
    return {"harim_plus": [h.harim_plus for h in found], "harim": [h.harim for h in found],
            "harim_loglik": [h.loglik for h in found]}


def provenance(scorers) -> dict:
    cfg = scorers.config
    return {**scorers.model("harim").provenance, "lambda": LAMBDA,
            "source_tokens": cfg.harim_source_tokens, "summary_tokens": cfg.harim_summary_tokens}
