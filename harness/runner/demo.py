"""The demo study: the whole pipeline on built-in tiny models, offline, in a few minutes.

One tiny Llama-style model; dense plus magnitude, Wanda and SparseGPT at 50% unstructured
and 2:4 (7 checkpoints); prompt A on up to 30 documents of the `demo` task; vLLM (CPU)
generation; every metric, with a SummaC-Conv head trained on the demo's labelled pairs
(marked as a demo head); risk ratios; one annotation batch per pruned system answered by two
*simulated* annotators; the report.
"""

from __future__ import annotations

import os
from pathlib import Path

from harness import atomic
from harness.config import StudyConfig, parse_study
from harness.runner.study import RunResult, check_run_dir, quiet_libraries, run_study
from harness.store import RunStore
from harness.tiny_models import tiny_model

# One small KV cache, and the engine core inside each cell's worker process rather than in
# a second process of its own (saves a process start per cell).
DEMO_ENV = {"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "TOKENIZERS_PARALLELISM": "false",
            "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
DEMO_METHODS = ("magnitude", "wanda", "sparsegpt")  # fixed: methods added later stay out of the demo
SIMULATED_ANNOTATORS = ["simulated-1", "simulated-2"]
DEMO_HEAD_NOTE = ("demo head: trained on the synthetic demo task's labelled pairs with the tiny "
                  "NLI model; not the published SummaC-Conv")


def demo_study(out: Path, documents: int = 30, backend: str = "vllm") -> StudyConfig:
    """The demo's study config (tiny models are built on first use)."""
    calibration = {"source": "task:demo", "nsamples": 16, "seqlen": 128, "seed": 0}
    prune = [{"method": m, "sparsity": 0.5, "structure": s, "calibration": calibration}
             for m in DEMO_METHODS for s in ("unstructured", "2:4")]
    raw = {
        "name": "demo",
        "out": str(out),
        "models": [{"name": "tiny-llama", "path": str(tiny_model("llama")), "dtype": "float32"}],
        "prune": prune,
        "tasks": [{"name": "demo", "limit": documents}],
        "prompts": ["A"],
        "generation": {"backend": backend, "max_new_tokens": 48, "seed": 0,
                       "engine": {"max_model_len": 1024, "dtype": "float32", "enforce_eager": True}},
        "scoring": {"metrics": ["harim", "summac_zs", "summac_conv", "rouge", "overlap"],
                    "harim_model": str(tiny_model("bart")), "nli_model": str(tiny_model("nli")),
                    "summac_conv_weights": str(out / "summac-conv-demo-head.bin"), "batch_size": 16},
        "perplexity": {"seqlen": 128, "max_windows": 16},
        "analysis": {"bootstrap": 200, "seed": 0},  # fewer resamples than a study's 1000: a demo
    }
    return parse_study(raw, source="demo study")


def train_demo_head(study: StudyConfig) -> Path:
    """Train the SummaC-Conv head on the demo's labelled pairs (once; cached in the run)."""
    weights = Path(study.scoring.summac_conv_weights)
    if weights.exists():
        return weights
    from harness.scoring.summac_conv import train_summac_conv
    from tasks.demo import labelled_pairs

    pairs = weights.with_name("summac-conv-demo-pairs.jsonl")
    atomic.write_jsonl(pairs, labelled_pairs())
    train_summac_conv(pairs, study.scoring.nli_model, weights, seed=0, note=DEMO_HEAD_NOTE)
    return weights


def simulate_annotation(run_dir: Path, documents: int) -> list[Path]:
    """Export one blinded batch per pruned system and answer it with simulated annotators."""
    from annotation.export import export_batches
    from annotation.importer import import_answers
    from annotation.simulate import answer_batch

    batches = export_batches(run_dir, n=documents, annotators=SIMULATED_ANNOTATORS, overlap=1.0,
                             fmt="csv", seed=0)
    answers = [path for batch in batches for path in answer_batch(batch, seed=0)]
    import_answers(run_dir, answers)
    return batches


def run_demo(out: str | Path = "runs/demo", documents: int = 30, backend: str = "vllm",
             show_progress: bool = True) -> RunResult:
    """Run the demo study end to end and return its result (``result.report`` is the report)."""
    for key, value in DEMO_ENV.items():
        os.environ.setdefault(key, value)
    out = Path(out).resolve()
    study = demo_study(out, documents, backend)
    if out.is_dir():
        check_run_dir(RunStore(out), study)
    quiet_libraries()
    train_demo_head(study)
    # checked above: the head it has just written is no reason to refuse the folder
    result = run_study(study, out, show_progress=show_progress, report=False, add=True)
    if not result.failed:
        simulate_annotation(out, documents)
        from analysis.report import write_report

        result.report = write_report(out)
    return result
