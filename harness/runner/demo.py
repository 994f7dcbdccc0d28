"""The demo study: the whole pipeline on built-in tiny models *trained here* on the synthetic
``facts`` task, so that its findings can be checked against the ground truth. Offline.

The trained Llama-style summarizer (``--family gpt_neox``: the GPT-NeoX one), dense plus
magnitude, Wanda and SparseGPT at 50-80% unstructured, 2:4 and 4:8, the calibrated methods
over three calibration seeds; prompt A on the first ``documents`` documents of ``facts``;
generation with transformers (one process: the tiny model generates a cell in about a
second, where a vLLM engine start per cell would cost more than the whole cell); every
metric with the trained scorers (HaRiM+ with the trained BART, SummaC-ZS/Conv with the
trained NLI model and Conv head; each scorer's held-out accuracy is in its ``training.json``
and shown in the report), the ground-truth metric, risk ratios per seed and pooled over
seeds; annotation answered by simulated annotators who read the ground truth with error rate
``ANNOTATOR_ERROR_RATE`` (their expected kappa is known); the report. The study is marked
``demo: true``, so its report opens with the demo banner.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from harness.config import StudyConfig, parse_study
from harness.runner.study import RunResult, quiet_libraries, run_study

DEMO_ENV = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
FAMILIES = {"llama": "summarizer-llama", "gpt_neox": "summarizer-gpt_neox"}
METHODS = ("magnitude", "wanda", "sparsegpt")  # fixed: methods added later stay out of the demo
SPARSITIES = (0.5, 0.6, 0.7, 0.8)
NM = ("2:4", "4:8")
SEEDS = (0, 1, 2)
DOCUMENTS = 100
MAX_NEW_TOKENS = 64  # the references are two sentences, under 50 tokens
SIMULATED_ANNOTATORS = ["simulated-1", "simulated-2"]
ANNOTATOR_ERROR_RATE = 0.2
# The models have ~157k parameters: one thread computes a step as fast as two, and several
# threads slow down badly when the machine is busy (benchmarks/demo.py measures both).
THREADS = 1
ANNOTATED = ("magnitude-0.8", "wanda-0.8", "sparsegpt-0.8", "wanda-2:4")  # seed 0, vs dense


def demo_models(family: str = "llama", announce: bool = False) -> dict[str, Path]:
    """The demo's trained models by role (summarizer, bart, nli, summac-conv), trained on
    first use and cached (``harness.trained_models``); ``announce``: a line on stderr per model
    trained now, with its time and held-out accuracy."""
    from harness.trained_models import TRAINING_FILE, cache_root, trained_model, training_report

    if family not in FAMILIES:
        raise ValueError(f"unknown demo family {family!r}; choose from {', '.join(FAMILIES)}")
    models = {}
    for role, name in {"summarizer": FAMILIES[family], "bart": "bart", "nli": "nli",
                       "summac-conv": "summac-conv"}.items():
        fresh = not (cache_root() / name / TRAINING_FILE).exists()
        models[role] = trained_model(name)
        if announce and fresh:
            print(training_line(name, training_report(models[role])), file=sys.stderr, flush=True)
    return models


def training_line(name: str, report: dict) -> str:
    """One line on a model just trained: its time and held-out accuracy, FLAGGED at chance."""
    return (f"trained {name} in {report['seconds']:.0f} s (once, cached): {report['accuracy_name']} "
            f"{report['accuracy']:.3f}" + ("" if report["learned"] else ", not above chance: FLAGGED"))


def demo_config(out: str | Path, models: dict[str, Path], documents: int = DOCUMENTS,
                family: str = "llama", backend: str = "hf", methods=METHODS, sparsities=SPARSITIES,
                structures=NM, seeds=SEEDS) -> dict:
    """The demo study as a plain mapping (what ``study.yaml`` would hold), given the paths of
    :func:`demo_models`; the other arguments shrink or change the grid."""
    calibration = {"source": "task:facts", "nsamples": 16, "seqlen": 128}
    prune = []
    for method in methods:
        if sparsities:
            prune.append({"method": method, "sparsity": list(sparsities), "calibration": calibration})
        if structures:
            prune.append({"method": method, "structure": list(structures), "calibration": calibration})
    return {
        "name": "demo",
        "demo": True,
        "out": str(out),
        "models": [{"name": f"{family}-summarizer", "path": str(models["summarizer"]), "dtype": "float32"}],
        "prune": prune,
        "seeds": list(seeds),
        "tasks": [{"name": "facts", "limit": documents}],
        "prompts": ["A"],
        "generation": {"backend": backend, "max_new_tokens": MAX_NEW_TOKENS, "seed": 0,
                       "batch_size": documents,
                       "engine": {"max_model_len": 512, "dtype": "float32", "enforce_eager": True}},
        "scoring": {"metrics": ["harim", "summac_zs", "summac_conv", "rouge", "overlap", "ground_truth"],
                    "harim_model": str(models["bart"]), "nli_model": str(models["nli"]),
                    "summac_conv_weights": str(Path(models["summac-conv"]) / "head.bin"),
                    "batch_size": 64},
        "perplexity": {"seqlen": 128, "max_windows": 8},
        "analysis": {"bootstrap": 500, "seed": 0},
    }


def demo_study(out: str | Path, documents: int = DOCUMENTS, family: str = "llama",
               models: dict[str, Path] | None = None, **grid) -> StudyConfig:
    """The demo's validated study config (``models``: paths by role, default
    :func:`demo_models`; ``grid``: the optional arguments of :func:`demo_config`)."""
    raw = demo_config(out, models or demo_models(family), documents, family, **grid)
    return parse_study(raw, source="demo study")


def simulate_annotation(run_dir: Path, documents: int, systems=ANNOTATED) -> list[Path]:
    """Export one blinded batch per system in ``systems`` (against dense) and answer it with
    simulated annotators who read the ground truth with error rate ``ANNOTATOR_ERROR_RATE``."""
    from annotation.export import export_batches
    from annotation.importer import import_answers
    from annotation.simulate import answer_batch_from_truth

    batches = export_batches(run_dir, n=documents, annotators=SIMULATED_ANNOTATORS, overlap=1.0,
                             fmt="csv", seed=0, pairs=[(s, "dense") for s in systems])
    answers = [path for batch in batches
               for path in answer_batch_from_truth(run_dir, batch, ANNOTATOR_ERROR_RATE, seed=0)]
    import_answers(run_dir, answers)
    return batches


def run_demo(out: str | Path = "runs/demo", documents: int = DOCUMENTS, family: str = "llama",
             show_progress: bool = True, threads: int | None = THREADS,
             models: dict[str, Path] | None = None, **grid) -> RunResult:
    """Run the demo study end to end and return its result (``result.report`` is the report).
    ``threads``: torch's CPU threads meanwhile (None: leave as is); ``models``: as
    :func:`demo_study`; ``grid``: the optional arguments of :func:`demo_config` (``backend``,
    a smaller grid)."""
    import torch

    for key, value in DEMO_ENV.items():
        os.environ.setdefault(key, value)
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        out = Path(out).resolve()
        quiet_libraries()
        study = demo_study(out, documents, family, models or demo_models(family, show_progress), **grid)
        result = run_study(study, out, show_progress=show_progress, report=False)
        if not result.failed:
            annotated = [s for s in ANNOTATED if any(p.key == s.replace(":", "of") for p in study.prune)]
            if annotated:
                simulate_annotation(out, documents, annotated)
            from analysis.report import write_report

            result.report = write_report(out)
        return result
    finally:
        torch.set_num_threads(before)
