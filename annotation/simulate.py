"""Simulated annotators: answer files that exercise import and agreement end to end without
people. Every file they write is marked ``simulated``, and so is everything derived from it
(agreement output, report section). Two kinds:

- :func:`answer_batch` (``prunescope annotate simulate``): each annotator judges by simple text
  statistics of the two summaries (words not in the article, article words covered, repeated
  trigrams, word overlap) and, with probability ``NOISE``, answers at random instead.
- :func:`answer_batch_from_truth` (the demo, on tasks with gold facts): each annotator reads the
  true answer from the ground-truth columns of the two cells' score files (:func:`true_answers`)
  and, with a stated error rate, answers uniformly at random instead (:func:`truth_reader`), so
  the kappa two of them should reach is known (:func:`expected_kappa`); it is written beside
  their answers (``expected.json``) and the report prints it beside the measured kappa.
"""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path

from annotation.batch import ANSWERS, QUESTIONS, Batch, Item, load_batch, load_key
from annotation.formats import FORMATS, file_name, write_annotator_file
from harness import atomic
from harness.store import RunStore

NOISE = 0.25
TIE_MARGIN = 0.05
SIMULATED = "simulated"  # the batch's subfolder of simulated answer files
EXPECTED_FILE = "expected.json"
# The ground-truth column each question reads, and the sign that makes a larger value the
# summary the question picks (Q1-Q3: the worse one; Q4, "more aligned": the one with fewer
# hallucinated facts, then the higher fact recall).
TRUTH_COLUMNS = {"q1_hallucination": (("gt_hallucinated_facts", 1),),
                 "q2_omission": (("gt_fact_recall", -1),),
                 "q3_repetition": (("gt_repetition", 1),),
                 "q4_alignment": (("gt_hallucinated_facts", -1), ("gt_fact_recall", 1))}


def answer_batch(batch_dir: str | Path, seed: int) -> list[Path]:
    """Write a filled answer file per annotator under ``<batch_dir>/simulated/`` (in the format
    the batch was exported in) and return their paths."""
    batch_dir = Path(batch_dir)
    batch = load_batch(batch_dir)
    items = {item.item_id: item for item in batch.items}
    return _write_answers(batch_dir, batch, seed, lambda item_id, rng: judge(items[item_id], rng))


def _write_answers(batch_dir: Path, batch: Batch, seed: int, answer) -> list[Path]:
    """A filled, simulated answer file per annotator (in the batch's export format);
    ``answer(item_id, rng) -> {question: answer}``."""
    fmt = next((f for f in FORMATS if (batch_dir / "export" / file_name(batch.annotators[0], f)).exists()),
               "jsonl")
    paths = []
    for annotator in batch.annotators:
        rng = random.Random(f"{seed}/{annotator}")
        answers = {item_id: {**answer(item_id, rng), "comment": "simulated annotator"}
                   for item_id in batch.assignment[annotator]}
        path = batch_dir / SIMULATED / file_name(annotator, fmt)
        write_annotator_file(path, batch, annotator, fmt, answers, simulated=True)
        paths.append(path)
    return paths


def answer_batch_from_truth(run_dir: str | Path, batch_dir: str | Path, error_rate: float,
                            seed: int = 0) -> list[Path]:
    """Answer files of annotators who read the ground truth (:func:`true_answers`) and err
    with probability ``error_rate`` (:func:`truth_reader`); also writes ``expected.json``:
    the error rate and, per question, the true answers' shares and :func:`expected_kappa`."""
    if not 0 <= error_rate <= 1:
        raise ValueError(f"error_rate must be in [0, 1] (got {error_rate})")
    batch_dir = Path(batch_dir)
    batch = load_batch(batch_dir)
    truth = true_answers(run_dir, batch_dir)
    paths = _write_answers(batch_dir, batch, seed, lambda item_id, rng: {
        q: truth_reader([truth[item_id][q]], error_rate, rng)[0] for q in QUESTIONS})
    shared = set.intersection(*(set(batch.assignment[a]) for a in batch.annotators))
    expected = {}
    for question in QUESTIONS:
        answers = [truth[i][question] for i in sorted(shared)]
        shares = {c: answers.count(c) / len(answers) for c in ANSWERS} if answers else {}
        expected[question] = {"truth_shares": shares, "items": len(answers),
                              "expected_kappa": expected_kappa(shares, error_rate) if answers else None}
    atomic.write_json(batch_dir / SIMULATED / EXPECTED_FILE,
                      {"error_rate": error_rate, "annotators": batch.annotators, "questions": expected})
    return paths


def read_expected(batch_dir: str | Path) -> dict | None:
    """A batch's ``expected.json`` (written by :func:`answer_batch_from_truth`), if any."""
    path = Path(batch_dir) / SIMULATED / EXPECTED_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def true_answers(run_dir: str | Path, batch_dir: str | Path) -> dict[str, dict[str, str]]:
    """Item id -> question -> the answer the ground truth gives, read from the score files of
    the two cells the batch key names (``TRUTH_COLUMNS``: e.g. Q1 picks the summary with more
    hallucinated facts; equal values are a tie; a missing repetition counts as none)."""
    batch_dir = Path(batch_dir)
    batch, key, store = load_batch(batch_dir), load_key(batch_dir), RunStore(run_dir)
    frames = {}

    def truth_of(cell: str, doc_id: str) -> dict:
        if cell not in frames:
            frame, _ = store.read_scores(cell)
            missing = {c for pairs in TRUTH_COLUMNS.values() for c, _ in pairs} - set(frame.columns)
            if missing:
                raise ValueError(f"{store.score_path(cell)}: no ground-truth column {sorted(missing)[0]} "
                                 "(score the run with the ground_truth metric on a task with gold facts)")
            frames[cell] = frame.set_index(frame["doc_id"].astype(str))
        return frames[cell].loc[doc_id].to_dict()

    out = {}
    for item in batch.items:
        system = truth_of(key.system_cells[item.task], item.doc_id)
        baseline = truth_of(key.baseline_cells[item.task], item.doc_id)
        a, b = (system, baseline) if key.a_is[item.item_id] == "system" else (baseline, system)
        out[item.item_id] = {q: _pick(a, b, TRUTH_COLUMNS[q]) for q in QUESTIONS}
    return out


def _pick(a: dict, b: dict, columns) -> str:
    for column, sign in columns:
        x, y = (0.0 if math.isnan(v) else sign * v for v in (float(a[column]), float(b[column])))
        if x != y:
            return "A" if x > y else "B"
    return "tie"


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
