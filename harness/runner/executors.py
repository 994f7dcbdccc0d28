"""Executors: run a plan's stages locally (default) or as Ray tasks on a cluster.

Both call the same stage functions and return ``Outcome``s; only the driver writes the
manifest, so concurrent workers never race on it. A failed checkpoint or cell is recorded
with its error and traceback and the others continue.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from harness.config import StudyConfig
from harness.runner import stages
from harness.runner.plan import CellJob, CheckpointJob, StudyPlan
from harness.store import RunStore

STAGES = ("prune", "generate", "score", "report")


@dataclass
class Outcome:
    """What happened to one cell (or checkpoint) in one stage."""

    key: str
    stage: str
    status: str  # "done", "cached", "failed", "blocked"
    seconds: float = 0.0
    details: dict = field(default_factory=dict)


def _attempt(key: str, stage: str, fn) -> tuple[Outcome, object]:
    """Run ``fn() -> (worked, value)``; a raised error becomes a "failed" outcome."""
    start = time.perf_counter()
    try:
        worked, value = fn()
    except Exception as exc:  # noqa: BLE001 - recorded with its traceback; the study goes on
        return Outcome(key, stage, "failed", time.perf_counter() - start,
                       {"error": f"{type(exc).__name__}: {exc}",
                        "traceback": traceback.format_exc(limit=20)}), None
    status = "done" if worked else "cached"
    return Outcome(key, stage, status, round(time.perf_counter() - start, 3)), value


def checkpoint_stage(root: Path, job: CheckpointJob, study: StudyConfig, perplexity_text,
                     need_weights: bool) -> tuple[Outcome, stages.ReadyCheckpoint | None]:
    store = RunStore(root)
    return _attempt(job.key, "prune", lambda: stages.ensure_checkpoint(
        store, job, study, perplexity_text, need_weights))


def cell_stages(root: Path, cell: CellJob, ready, study: StudyConfig, task_data, scorers,
                scorer_key: str, only: str | None) -> list[Outcome]:
    """Generate then score one cell; ``ready`` is the checkpoint (None if it failed)."""
    store = RunStore(root)
    key = cell.info.key
    outcomes = []
    if only in (None, "generate"):
        if ready is None and not store.generation_path(key).exists():
            return [Outcome(key, "generate", "blocked", details={"error": "its checkpoint failed"})]
        outcome, _ = _attempt(key, "generate", lambda: (stages.ensure_generation(
            store, cell, ready, study, task_data), None))
        outcomes.append(outcome)
        if outcome.status == "failed":
            return outcomes
    if only in (None, "score"):
        if not store.generation_path(key).exists():
            return outcomes + [Outcome(key, "score", "blocked", details={"error": "no generations yet"})]
        outcome, _ = _attempt(key, "score", lambda: (stages.ensure_scores(
            store, cell, scorers, scorer_key, task_data), None))
        outcome.details["scorer_key"] = scorer_key
        outcomes.append(outcome)
    return outcomes


def run_local(store: RunStore, plan: StudyPlan, study: StudyConfig, *, perplexity_text,
              scorer_key: str, only: str | None, record, progress) -> None:
    """Checkpoint by checkpoint: prune it, then generate and score each of its cells."""
    scorers = _scorers(study)  # one set of scorer models for the whole study
    for job in plan.checkpoints:
        cells = plan.cells_of(job)
        ready = None
        if only != "score":  # scoring alone never prunes
            outcome, ready = checkpoint_stage(store.root, job, study, perplexity_text,
                                              _needs_weights(store, cells, only))
            _record_for_cells(record, outcome, cells)
        if only == "prune":
            progress(len(cells))
            continue
        for cell in cells:
            for outcome in cell_stages(store.root, cell, ready, study, plan.tasks[cell.info.task],
                                       scorers, scorer_key, only):
                record(outcome)
            progress(1)
        _maybe_drop_weights(store, job, cells, study)


def run_ray(store: RunStore, plan: StudyPlan, study: StudyConfig, *, perplexity_text,
            scorer_key: str, only: str | None, record, progress) -> None:
    """One Ray task per checkpoint and one per cell (depending on its checkpoint's task), each
    asking for ``num_gpus_per_cell`` GPUs. Connects to ``RAY_ADDRESS`` if set, else starts a
    local Ray instance."""
    import os

    import ray

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    gpus = study.num_gpus_per_cell
    prune_task = ray.remote(num_gpus=gpus)(checkpoint_stage)
    cell_task = ray.remote(num_gpus=gpus)(_ray_cell)
    ckpt_refs = {}
    for job in plan.checkpoints:
        if only == "score":  # scoring alone never prunes
            ckpt_refs[job.key] = ray.put((None, None))
            continue
        ckpt_refs[job.key] = prune_task.remote(store.root, job, study, perplexity_text,
                                               _needs_weights(store, plan.cells_of(job), only))
    cell_refs = {}
    if only != "prune":
        for cell in plan.cells:
            cell_refs[cell.info.key] = cell_task.remote(
                store.root, cell, ckpt_refs[cell.checkpoint.key], study,
                plan.tasks[cell.info.task], scorer_key, only)
    for job in plan.checkpoints:
        outcome, _ = ray.get(ckpt_refs[job.key])
        if outcome is not None:
            _record_for_cells(record, outcome, plan.cells_of(job))
    for cell in plan.cells:
        if cell.info.key in cell_refs:
            for outcome in ray.get(cell_refs[cell.info.key]):
                record(outcome)
        progress(1)
    for job in plan.checkpoints:
        _maybe_drop_weights(store, job, plan.cells_of(job), study)


def _ray_cell(root, cell, checkpoint_result, study, task_data, scorer_key, only):
    _, ready = checkpoint_result
    return cell_stages(root, cell, ready, study, task_data, _scorers(study), scorer_key, only)


def _scorers(study: StudyConfig):
    """The study's scorers; their models load on first use, so this is cheap."""
    from harness.scoring import Scorers

    return Scorers(study.scoring)


def _needs_weights(store: RunStore, cells, only: str | None) -> bool:
    """Whether a checkpoint's weights must exist: some cell still has to generate from them."""
    return only != "prune" and any(not store.generation_path(c.info.key).exists() for c in cells)


def _record_for_cells(record, outcome: Outcome, cells) -> None:
    """A checkpoint's outcome is recorded under each of its cells (status shows it per cell)."""
    for cell in cells:
        record(Outcome(cell.info.key, "prune", outcome.status, outcome.seconds, outcome.details))


def _maybe_drop_weights(store: RunStore, job: CheckpointJob, cells, study: StudyConfig) -> None:
    if study.keep_checkpoints or job.spec is None:
        return
    if all(store.generation_path(c.info.key).exists() for c in cells):
        stages.drop_weights(store, job)


EXECUTORS = {"local": run_local, "ray": run_ray}
