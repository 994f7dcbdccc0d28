"""The per-checkpoint and per-cell stages of a study, each skipping what is already complete.

Every stage reads the artifacts of the stages before it and writes its own atomically, so
a run killed at any point resumes here without recomputing finished work. The executors
(local, Ray) call these functions; nothing else wires stages together.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from harness import atomic
from harness.config import StudyConfig
from harness.models import model_identity
from harness.records import ModelIdentity
from harness.runner.plan import CellJob, CheckpointJob
from harness.store import RunStore

_KEY_FILE = ".job-key"  # dotfiles are not part of a checkpoint's content hash
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")


@dataclass(frozen=True)
class ReadyCheckpoint:
    """A checkpoint ready to generate from (``directory`` is None once its weights were
    deleted under ``keep_checkpoints: false``)."""

    directory: Path | None
    identity: ModelIdentity


def ensure_checkpoint(store: RunStore, job: CheckpointJob, study: StudyConfig,
                      perplexity_text: str | None, need_weights: bool = True) -> tuple[bool, ReadyCheckpoint]:
    """Prune (unless cached), write identity.json, measure perplexity (unless cached).
    Returns whether any work was done, and the checkpoint."""
    folder = store.checkpoint_dir(job.model, job.folder)
    if job.spec is None:
        pruned, ready = False, ReadyCheckpoint(job.dense_dir, job.dense_identity)
        atomic.write_json(folder / "identity.json", ready.identity)
    else:
        pruned, ready = _pruned_checkpoint(store, job, folder, need_weights)
    measured = False
    if perplexity_text and ready.directory is not None:
        measured = _ensure_perplexity(folder, ready.directory, perplexity_text, study)
    return pruned or measured, ready


def is_pruned(store: RunStore, job: CheckpointJob) -> bool:
    """Whether this job's pruning is on disk (the folder's key file names this very job)."""
    key_file = store.checkpoint_dir(job.model, job.folder) / _KEY_FILE
    return key_file.exists() and key_file.read_text() == job.key


def _pruned_checkpoint(store, job, folder: Path, need_weights: bool) -> tuple[bool, ReadyCheckpoint]:
    cached = is_pruned(store, job)
    has_weights = cached and _has_weights(folder)
    if cached and (has_weights or not need_weights):
        identity = ModelIdentity.model_validate_json((folder / "identity.json").read_text())
        return False, ReadyCheckpoint(folder if has_weights else None, identity)
    from harness.pruning import prune_checkpoint

    prune_checkpoint(job.dense_dir, job.spec, folder)
    source = folder.relative_to(store.root).as_posix()
    identity = model_identity(job.model, folder, source, job.dense_identity.revision)
    atomic.write_json(folder / "identity.json", identity)
    atomic.write_text(folder / _KEY_FILE, job.key)
    return True, ReadyCheckpoint(folder, identity)


def _ensure_perplexity(folder: Path, model_dir: Path, text: str, study: StudyConfig) -> bool:
    from harness.pruning.perplexity import perplexity, text_hash

    path = folder / "perplexity.json"
    settings = {"text_hash": text_hash(text), "seqlen": study.perplexity.seqlen,
                "max_windows": study.perplexity.max_windows}
    if path.exists() and settings.items() <= json.loads(path.read_text()).items():
        return False
    result = perplexity(model_dir, text, seqlen=settings["seqlen"], max_windows=settings["max_windows"])
    atomic.write_json(path, {**result, **settings})
    return True


def drop_weights(store: RunStore, job: CheckpointJob) -> None:
    """Delete a pruned checkpoint's weights, keeping its reports (keep_checkpoints: false)."""
    folder = store.checkpoint_dir(job.model, job.folder)
    for path in folder.iterdir():
        if path.suffix in _WEIGHT_SUFFIXES:
            path.unlink()


def _has_weights(folder: Path) -> bool:
    return any(p.suffix in _WEIGHT_SUFFIXES for p in folder.iterdir())


def ensure_generation(store: RunStore, cell: CellJob, ready: ReadyCheckpoint,
                      study: StudyConfig, task_data) -> bool:
    """Generate the cell's summaries unless they exist; True if work was done.

    With the vLLM backend the cell runs in a fresh process: vLLM neither releases GPU memory
    reliably nor starts a second engine in a process whose first engine was dropped."""
    path = store.generation_path(cell.info.key)
    if path.exists():
        return False
    if ready.directory is None:
        raise RuntimeError(f"checkpoint {cell.checkpoint.folder} has no weights to generate from")
    from harness.generation import generate_cell, generate_cell_in_subprocess

    documents = [(r.id, r.document) for r in task_data.records]
    model = next(m for m in study.models if m.name == cell.info.model)
    run = generate_cell_in_subprocess if study.generation.backend == "vllm" else generate_cell
    run(ready.directory, documents, cell.info.prompt, study.generation, ready.identity, path,
        chat_family=model.chat_family)
    return True


def ensure_scores(store: RunStore, cell: CellJob, scorers, scorer_key: str, task_data) -> bool:
    """Score the cell's generations unless scores newer than them, made with this scorer key,
    exist."""
    path, generations = store.score_path(cell.info.key), store.generation_path(cell.info.key)
    done = store.read_manifest().get("cells", {}).get(cell.info.key, {}).get("score", {})
    fresh = path.exists() and path.stat().st_mtime_ns >= generations.stat().st_mtime_ns
    if fresh and done.get("status") in ("done", "cached") and done.get("scorer_key") == scorer_key:
        return False
    from harness.scoring import score_cell

    sources = {r.id: r.document for r in task_data.records}
    references = {r.id: r.reference for r in task_data.records}
    score_cell(generations, sources, references, scorers, path, cell=cell.info)
    return True


def write_cell_files(store: RunStore, cells: list[CellJob]) -> None:
    for cell in cells:
        path = store.cell_path(cell.info.key)
        if not path.exists():
            atomic.write_json(path, cell.info)

