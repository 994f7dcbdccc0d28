"""The quality stage for one checkpoint: lm-eval tasks and standard-corpus perplexity,
each cached in ``quality.json`` under its own key, so adding a task runs that task alone."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness import atomic
from harness.config import EngineOptions, QualityConfig, StudyConfig
from harness.errors import PrunescopeError
from harness.hashing import content_key
from harness.jsonl import json_objects
from harness.quality.records import (QUALITY_FILE, SAMPLES_FILE, CorpusScore, QualityRecord,
                                     QualityRecordError, TaskScore, read_quality)
from harness.quality.zero_shot import LMEvalSettings, TaskSpec

DEFAULT_SEQLEN = 2048


class QualityStageError(PrunescopeError):
    """A quality stage that cannot run (e.g. the checkpoint's weights are gone)."""


@dataclass
class QualityPlan:
    """What a checkpoint's quality.json holds that is current, and what must be computed."""

    specs: list[TaskSpec]
    version: str  # lm-eval's, "" when no task is named
    task_keys: dict[str, str]
    tasks: dict[str, TaskScore]  # current entries
    stale: list[TaskSpec]
    corpora: dict[str, CorpusScore]  # current entries
    stale_corpora: dict[str, tuple[str, str]]  # name -> (key, text)
    seqlen: int
    dropped: bool  # entries the config no longer names

    @property
    def current(self) -> bool:
        return not self.stale and not self.stale_corpora and not self.dropped


def plan_quality(folder: str | Path, config_dir: str | Path, checkpoint_key: str,
                 config: QualityConfig, settings: LMEvalSettings) -> QualityPlan:
    """Compare ``folder/quality.json`` with the keys computed now (``config_dir``: a folder
    holding the checkpoint's config.json). Reads the corpora (their text is in the key)."""
    from harness.quality.corpora import corpus_text
    from harness.quality.zero_shot import lm_eval_version, require_lm_eval, task_spec

    if config.tasks:
        require_lm_eval()
    old = read_quality(Path(folder) / QUALITY_FILE) or QualityRecord()
    specs = [task_spec(t) for t in config.tasks]
    version = lm_eval_version() if specs else ""
    fields = settings.result_fields(config_dir)
    keys = {s.name: task_key(checkpoint_key, s, version, fields) for s in specs}
    tasks = {n: old.tasks[n] for n in keys if n in old.tasks and old.tasks[n].key == keys[n]}
    seqlen = config.seqlen or min(_context_length(Path(config_dir)), DEFAULT_SEQLEN)
    corpora, stale_corpora = {}, {}
    for corpus in config.corpora:
        text = corpus_text(corpus.name, corpus.path)
        key = corpus_key(checkpoint_key, corpus.name, text, seqlen)
        if corpus.name in old.corpora and old.corpora[corpus.name].key == key:
            corpora[corpus.name] = old.corpora[corpus.name]
        else:
            stale_corpora[corpus.name] = (key, text)
    dropped = bool(set(old.tasks) - set(keys)) or bool(set(old.corpora) - {c.name for c in config.corpora})
    return QualityPlan(specs, version, keys, tasks, [s for s in specs if s.name not in tasks],
                       corpora, stale_corpora, seqlen, dropped)


def ensure_quality(folder: str | Path, model_dir: str | Path | None, checkpoint_key: str,
                   config: QualityConfig, settings: LMEvalSettings) -> bool:
    """Bring ``folder/quality.json`` up to date for ``model_dir`` (a checkpoint whose content
    key is ``checkpoint_key``; None when its weights are gone); True if anything was computed.

    Entries whose key is current are kept; stale or missing ones are computed (all stale
    tasks in one lm-eval run); entries the config no longer names are dropped."""
    folder = Path(folder)
    plan = plan_quality(folder, model_dir if model_dir is not None else folder, checkpoint_key,
                        config, settings)
    if plan.current:
        return False
    if (plan.stale or plan.stale_corpora) and model_dir is None:
        raise QualityStageError(f"{folder}: the checkpoint's weights are gone (keep_checkpoints: false) "
                                "and its quality results are not current; rerun to prune it again")
    tasks, corpora = dict(plan.tasks), dict(plan.corpora)
    samples = _kept_samples(folder / SAMPLES_FILE, set(tasks))
    if plan.stale:
        tasks.update(_run_tasks(model_dir, plan.stale, plan.task_keys, plan.version, settings, samples))
    for name, (key, text) in plan.stale_corpora.items():
        corpora[name] = _measure_corpus(model_dir, name, text, plan.seqlen, key, settings)
    ordered = QualityRecord(tasks={s.name: tasks[s.name] for s in plan.specs},
                            corpora={c.name: corpora[c.name] for c in config.corpora})
    atomic.write_jsonl(folder / SAMPLES_FILE, [s for s in samples if s["task_key"] in ordered.tasks])
    atomic.write_json(folder / QUALITY_FILE, ordered)
    return True


def study_settings(quality: QualityConfig, engine: EngineOptions) -> LMEvalSettings:
    """lm-eval's settings in a study: the quality section's, with the model's generation
    engine settings (dtype, context, parallelism, memory share)."""
    return LMEvalSettings(
        backend=quality.backend, dtype=engine.dtype, max_length=engine.max_model_len,
        batch_size=quality.batch_size, num_fewshot=quality.num_fewshot, limit=quality.limit,
        device=quality.device, tensor_parallel_size=engine.tensor_parallel_size,
        gpu_memory_utilization=engine.gpu_memory_utilization, enforce_eager=engine.enforce_eager)


def check_available(study: StudyConfig) -> None:
    """Refuse a study whose quality stage cannot run here (lm-eval, or lm-eval's vLLM model,
    missing), before any work starts: the stage is never skipped silently."""
    from harness.quality.zero_shot import require_lm_eval, require_vllm_backend

    if study.quality.tasks:
        require_lm_eval()
        if study.quality.backend == "vllm":
            require_vllm_backend()


def evaluate_checkpoint(model_dir: str | Path, config: QualityConfig, settings: LMEvalSettings,
                        out: str | Path | None = None) -> QualityRecord:
    """The quality stage for one checkpoint outside a study (``prunescope quality``): results
    go to ``out`` (default: the checkpoint folder), keyed by the checkpoint's content hash."""
    from harness.hashing import hash_checkpoint

    folder = Path(out or model_dir)
    folder.mkdir(parents=True, exist_ok=True)
    ensure_quality(folder, model_dir, hash_checkpoint(model_dir), config, settings)
    return read_quality(folder / QUALITY_FILE)


def task_key(checkpoint_key: str, spec: TaskSpec, lm_eval_version: str, settings: dict) -> str:
    """The key a task's result is current under (``settings``: ``LMEvalSettings.result_fields``)."""
    return content_key({"checkpoint": checkpoint_key, "task": spec.fingerprint,
                        "lm_eval": lm_eval_version, "settings": settings})


def corpus_key(checkpoint_key: str, corpus: str, text: str, seqlen: int) -> str:
    """The key a corpus perplexity is current under."""
    return content_key({"checkpoint": checkpoint_key, "corpus": corpus, "text": content_key(text),
                        "seqlen": seqlen})


def _run_tasks(model_dir, stale: list[TaskSpec], keys: dict, version: str, settings: LMEvalSettings,
               samples: list[dict]) -> dict[str, TaskScore]:
    from harness.quality.zero_shot import evaluate_tasks

    results = evaluate_tasks(model_dir, stale, settings)
    scores = {}
    for spec in stale:
        result = results[spec.name]
        samples.extend({"task_key": spec.name, **s} for s in result.samples)
        scores[spec.name] = TaskScore(
            key=keys[spec.name], task=spec.name, source=Path(spec.source).name if spec.is_file else spec.source,
            lm_eval_version=version, backend=settings.backend, metrics=result.metrics,
            primary=result.primary, kind=result.kind, documents=result.documents,
            num_fewshot=result.num_fewshot, task_version=result.task_version)
    return scores


def _measure_corpus(model_dir, name: str, text: str, seqlen: int, key: str,
                    settings: LMEvalSettings) -> CorpusScore:
    from harness.quality.corpora import corpus_perplexity

    result = corpus_perplexity(model_dir, name, text, seqlen=seqlen, device=settings.device)
    return CorpusScore(key=key, corpus=name, protocol=result["protocol"], perplexity=result["perplexity"],
                       seqlen=result["seqlen"], windows=result["windows"], text_hash=result["text_hash"])


def _kept_samples(path: Path, tasks: set[str]) -> list[dict]:
    if not path.exists():
        return []
    return [record for _, record in json_objects(path, QualityRecordError) if record.get("task_key") in tasks]


def _context_length(model_dir: Path) -> int:
    from harness.generation.backends import model_context_length

    return model_context_length(model_dir)
