"""Simulated annotators for the demo: answer files that exercise import and agreement end to
end without people. Every file they write is marked ``simulated``, and so is everything
derived from it (agreement output, report section).

Each simulated annotator judges by simple text statistics of the two summaries (words not in
the article, article words covered, repeated trigrams, word overlap) and, with probability
``NOISE``, answers at random instead, so that annotators agree often but not always.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from annotation.batch import ANSWERS, Item, load_batch
from annotation.formats import FORMATS, file_name, write_annotator_file

NOISE = 0.25
TIE_MARGIN = 0.05


def answer_batch(batch_dir: str | Path, seed: int) -> list[Path]:
    """Write a filled answer file per annotator under ``<batch_dir>/simulated/`` (in the format
    the batch was exported in) and return their paths."""
    batch_dir = Path(batch_dir)
    batch = load_batch(batch_dir)
    fmt = next((f for f in FORMATS if (batch_dir / "export" / file_name(batch.annotators[0], f)).exists()),
               "jsonl")
    items = {item.item_id: item for item in batch.items}
    paths = []
    for annotator in batch.annotators:
        rng = random.Random(f"{seed}/{annotator}")
        answers = {item_id: {**judge(items[item_id], rng), "comment": "simulated annotator"}
                   for item_id in batch.assignment[annotator]}
        path = batch_dir / "simulated" / file_name(annotator, fmt)
        write_annotator_file(path, batch, annotator, fmt, answers, simulated=True)
        paths.append(path)
    return paths


def judge(item: Item, rng: random.Random) -> dict[str, str]:
    article = set(_words(item.article))
    a, b = _stats(item.summary_a, article), _stats(item.summary_b, article)
    answers = {}
    for question in a:
        if rng.random() < NOISE:
            answers[question] = rng.choice(ANSWERS)
        else:
            diff = a[question] - b[question]
            answers[question] = "tie" if abs(diff) < TIE_MARGIN else ("A" if diff > 0 else "B")
    return answers


def _stats(summary: str, article: set[str]) -> dict[str, float]:
    """Per question, a number that is larger for the summary a reader would pick."""
    words = _words(summary)
    if not words:
        return {"q1_hallucination": 0.0, "q2_omission": 1.0, "q3_repetition": 0.0, "q4_alignment": 0.0}
    inside = sum(w in article for w in words)
    trigrams = list(zip(words, words[1:], words[2:]))
    precision, recall = inside / len(words), len(set(words) & article) / max(len(article), 1)
    return {
        "q1_hallucination": 1 - precision,
        "q2_omission": 1 - recall,
        "q3_repetition": 1 - len(set(trigrams)) / len(trigrams) if trigrams else 0.0,
        "q4_alignment": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
    }


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def truth_reader(truth: list[str], error_rate: float, rng: random.Random,
                 choices: tuple[str, ...] = tuple(ANSWERS)) -> list[str]:
    """A simulated annotator who reads the ground truth: each answer is the true one, except
    with probability ``error_rate`` a uniformly random choice (possibly the true one)."""
    return [rng.choice(choices) if rng.random() < error_rate else t for t in truth]


def expected_kappa(truth_shares: dict[str, float], error_rate: float, k: int | None = None) -> float:
    """Cohen's kappa expected between two independent :func:`truth_reader` annotators: with
    q_c = (1 - e) pi_c + e / k the answer shares, p_o = sum_c pi_c [(1 - e + e/k)^2
    + (k - 1)(e/k)^2] and p_e = sum_c q_c^2; kappa = (p_o - p_e) / (1 - p_e)."""
    k = k or len(ANSWERS)
    e = error_rate
    right, wrong = 1 - e + e / k, e / k
    shares = list(truth_shares.values()) + [0.0] * (k - len(truth_shares))
    p_o = sum(pi * (right ** 2 + (k - 1) * wrong ** 2) for pi in shares)
    p_e = sum(((1 - e) * pi + e / k) ** 2 for pi in shares)
    return (p_o - p_e) / (1 - p_e)
