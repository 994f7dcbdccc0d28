"""What every trained tiny model shares: a tokenizer of the facts task's text and a plain
AdamW training loop."""

from __future__ import annotations

import torch

from harness import tiny_models

CONTEXT, VOCAB_SIZE = 512, 640


def task_tokenizer(kind: str = "causal", vocab_size: int = VOCAB_SIZE):
    """The trained models' tokenizer: byte-level BPE (:func:`harness.tiny_models.build_tokenizer`,
    ``kind`` causal, seq2seq or pair) learned on the facts task's own text and prompts.

    A word-level tokenizer (every name and number one token) was tried for the summarizer and
    the NLI stand-in: neither learned faster (recall 0.61 after 600 steps; NLI as below)."""
    from harness.generation.prompts import INSTRUCTIONS, LAYOUT, SYSTEM_MESSAGE
    from tasks.synthetic import records

    corpus = [t for r in records(600, 1) for t in (r["document"], r["reference"])]
    corpus += [SYSTEM_MESSAGE, *INSTRUCTIONS.values(), LAYOUT]
    return tiny_models.build_tokenizer(kind, chat=True, corpus=corpus, vocab_size=vocab_size,
                                       context=CONTEXT)


def fit(model, loss_at, steps: int, lr: float, weight_decay: float = 0.0, warmup: int = 0) -> float:
    """AdamW over ``loss_at(step)`` with ``warmup`` linear warm-up steps, then linear decay to
    0, gradients clipped at 1; leaves the model in eval mode and returns the last loss."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup if warmup else 1.0, 1 - s / steps))
    model.train()
    loss = torch.tensor(float("nan"))
    for step in range(steps):
        loss = loss_at(step)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    model.eval()
    return float(loss.detach())


def pad_rows(rows: list[list[int]], value: int) -> torch.Tensor:
    """Rows right-padded with ``value`` to the longest."""
    width = max(map(len, rows))
    return torch.tensor([row + [value] * (width - len(row)) for row in rows])
