"""Tiny models *trained* here on the synthetic facts task (``tasks/synthetic.py``), so the demo
and the tests have summaries and scorers that mean something. Never downloaded; trained once
(deterministic per seed) and cached like ``harness.tiny_models``, keyed by the content of the
files that define them. The trainers live in ``harness/trained/``:

- ``summarizer-llama`` and ``summarizer-gpt_neox``: two causal-LM families (``summarizers``);
- ``bart``: a seq2seq BART trained on document -> reference, the HaRiM+ scorer;
- ``nli``: a BERT pair classifier, the SummaC NLI stand-in, trained on sentence pairs of the
  task's grammar (entailed, entity swapped, number or date changed, another sentence);
- ``summac-conv``: a SummaC-Conv head (``head.bin``) trained with the ``nli`` model.

Each folder holds ``training.json``: the held-out "scorer accuracy" (summarizers: fact
recall, with hallucination beside it), its chance level, and ``learned``: false when the
accuracy does not clear chance by ``LEARNED_MARGIN`` (a summarizer: when it is not
``summarizers.faithful``); such a model ships flagged, never
hidden (:func:`scorer_accuracy` gives the rows a report shows). Beside them: ``seconds``,
``cpu_seconds`` and the 1-minute ``load_average`` at the start, since wall time on a shared
machine grows with the load (``benchmarks/trained_models.py`` times the demo's four).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from harness import tiny_models
from harness.atomic import write_json

SUMMARIZERS = ("summarizer-llama", "summarizer-gpt_neox")
SCORERS = ("bart", "nli", "summac-conv")
NAMES = (*SUMMARIZERS, *SCORERS)
LEARNED_MARGIN = 0.1  # accuracy must beat chance by this much to count as learned
TRAINING_FILE = "training.json"
_SOURCES = ("harness/trained_models.py", "harness/trained/fitting.py",
            "harness/trained/summarizers.py", "harness/trained/scorers.py",
            "harness/tiny_models.py", "tasks/synthetic.py", "harness/generation/prompts.py")


def cache_root() -> Path:
    """Where trained models live: $PRUNESCOPE_CACHE or <repo>/.cache, per trainer version."""
    repo = Path(__file__).resolve().parents[1]
    base = os.environ.get("PRUNESCOPE_CACHE") or repo / ".cache"
    digest = hashlib.sha256(b"".join((repo / p).read_bytes() for p in _SOURCES)).hexdigest()[:10]
    return Path(base) / f"trained-models-{digest}"


def trained_model(name: str) -> Path:
    """Path of a trained tiny model, trained on first use (seed 0) and cached."""
    if name not in NAMES:
        raise ValueError(f"unknown trained model {name!r}; choose from {', '.join(NAMES)}")
    return tiny_models.build_once(cache_root() / name, TRAINING_FILE, lambda tmp: train(name, tmp))


def train(name: str, out: str | Path, seed: int = 0) -> Path:
    """Train ``name`` into ``out`` with ``seed`` (same seed, same weights on one machine) and
    write its ``training.json``; ``summac-conv`` uses the cached ``nli`` model."""
    from harness.trained import scorers, summarizers
    from harness.trained.fitting import one_thread

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    nli = trained_model("nli") if name == "summac-conv" else None  # trained and timed apart
    torch.manual_seed(seed)
    load, started, cpu = os.getloadavg()[0], time.perf_counter(), time.process_time()
    with one_thread():
        if name in SUMMARIZERS:
            report = summarizers.train_summarizer(name.split("-", 1)[1], out, seed)
        elif name == "bart":
            report = scorers.train_bart(out, seed)
        elif name == "nli":
            report = scorers.train_nli(out, seed)
        elif name == "summac-conv":
            report = scorers.train_conv(out, seed, nli)
        else:
            raise ValueError(f"unknown trained model {name!r}; choose from {', '.join(NAMES)}")
    report.setdefault("learned", bool(report["accuracy"] >= report["chance"] + LEARNED_MARGIN))
    report.update(seed=seed, seconds=round(time.perf_counter() - started, 1),
                  cpu_seconds=round(time.process_time() - cpu, 1), load_average=round(load, 2))
    write_json(out / TRAINING_FILE, report)
    return out


def training_report(path: str | Path) -> dict | None:
    """The ``training.json`` of a trained model folder (or of a conv head's folder), if any."""
    file = Path(path) / TRAINING_FILE if Path(path).is_dir() else Path(path).parent / TRAINING_FILE
    return json.loads(file.read_text()) if file.exists() else None


def summarizer_quality(path: str | Path, n: int = 100) -> dict:
    """Held-out fact recall and hallucination of a summarizer folder (greedy, transformers)."""
    from harness.trained.summarizers import summarizer_quality as measure

    return measure(path, n)


@dataclass(frozen=True)
class ScorerAccuracy:
    """One scorer model's "scorer accuracy" row: ``accuracy`` on held-out data of the facts
    task (``what`` says which), ``chance`` and ``learned`` (accuracy >= chance +
    ``LEARNED_MARGIN``); ``accuracy``, ``chance`` and ``learned`` are None for a model not
    trained here (a hub model or another folder: nothing measured, said so in ``what``)."""

    metric: str  # "harim", "summac_zs", "summac_conv"
    model: str
    accuracy: float | None
    chance: float | None
    learned: bool | None
    what: str


def scorer_accuracy(config) -> list[ScorerAccuracy]:
    """The scorer-accuracy rows of a ``ScoringConfig``: HaRiM+'s BART, SummaC-ZS's NLI model
    and SummaC-Conv's head with its NLI model (the lower of the two, flagged if either is),
    read from the models' ``training.json``. A report shows them beside the metrics."""
    nli = training_report(config.nli_model) if Path(config.nli_model).is_dir() else None
    rows = [_row("harim", config.harim_model), _row("summac_zs", config.nli_model)]
    conv = config.summac_conv_weights
    head = training_report(conv) if conv is not None and Path(conv).exists() else None
    if head is None or nli is None:
        rows.append(_row("summac_conv", conv))
    else:
        worst = min((head, nli), key=lambda r: r["accuracy"] - r["chance"])
        rows.append(ScorerAccuracy(
            "summac_conv", str(conv), worst["accuracy"], worst["chance"],
            head["learned"] and nli["learned"],
            f"{head['accuracy_name']}: {head['accuracy']:.3f}; its NLI model's "
            f"{nli['accuracy_name']}: {nli['accuracy']:.3f}"))
    return rows


def _row(metric: str, source) -> ScorerAccuracy:
    report = training_report(source) if source is not None and Path(source).exists() else None
    if report is None:
        return ScorerAccuracy(metric, str(source), None, None, None,
                              "not measured: not a model trained by harness.trained_models")
    return ScorerAccuracy(metric, str(source), report["accuracy"], report["chance"],
                          report["learned"], report["accuracy_name"])
