"""What every trained tiny model shares: a tokenizer of the facts task's text and a plain
AdamW training loop, run on one thread."""

from __future__ import annotations

from contextlib import contextmanager

import torch

from harness import tiny_models

CONTEXT, VOCAB_SIZE = 512, 1024
WEIGHT = 20  # the prompts' and slot words' share of the tokenizer's corpus: each becomes a token


def task_tokenizer(kind: str = "causal", vocab_size: int = VOCAB_SIZE):
    """The trained models' tokenizer: byte-level BPE (:func:`harness.tiny_models.build_tokenizer`,
    ``kind`` causal, seq2seq or pair) learned on the facts task's own text and prompts.

    With 1024 tokens and the slot words weighted, every name, organisation word, place,
    number and month of the task is one token, so copying a fact is copying one token (with
    640, names were 3-7 pieces, rows 1.5 times longer, and the summarizer needed 277 s of
    CPU for recall 1.0, against 100 s now); the prompts, weighted, take few tokens too."""
    from harness.generation.prompts import INSTRUCTIONS, LAYOUT, SYSTEM_MESSAGE
    from tasks.synthetic import records, slot_words

    corpus = [t for r in records(600, 1) for t in (r["document"], r["reference"])]
    corpus += [SYSTEM_MESSAGE, *INSTRUCTIONS.values(), LAYOUT, " ".join(slot_words())] * WEIGHT
    return tiny_models.build_tokenizer(kind, chat=True, corpus=corpus, vocab_size=vocab_size,
                                       context=CONTEXT)


@contextmanager
def one_thread():
    """Torch on one thread inside, restored afterwards: on this shared 2-core machine a
    summarizer step took 1.3-3.2 s on two threads against 0.25 s on one (measured side by
    side while others ran); one thread is predictable and leaves the other core free."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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
