"""Executors: run a plan's stages locally (default) or as Ray tasks on a cluster.

Both take the run's ``RunContext`` and the plan, call the same stage functions and return
``Outcome``s; only the driver writes the
manifest, so concurrent workers never race on it. A failed checkpoint or cell is recorded
with its error and traceback and the others continue.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from harness.config import StudyConfig
from harness.runner import freshness, stages
from harness.runner.plan import CellJob, CheckpointJob, StudyPlan
from harness.runner.stages import STAGES, RunContext

__all__ = ["EXECUTORS", "STAGES", "Outcome", "cell_stages", "checkpoint_stage", "quality_stage", "run_local",
           "run_ray"]


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


def checkpoint_stage(ctx: RunContext, job: CheckpointJob, need_weights: bool,
                     after=None) -> tuple[Outcome, stages.ReadyCheckpoint | None]:
    """Prune (or recover) one checkpoint. ``after``: unused; under Ray the parent checkpoint's
    result, passed so that Ray runs a recovery only once its pruned parent exists."""
    return _attempt(job.key, "prune", lambda: stages.ensure_checkpoint(ctx, job, need_weights))


def quality_stage(ctx: RunContext, job: CheckpointJob, ready) -> Outcome:
    """The optional quality stage of one checkpoint; ``ready`` is None if it failed."""
    if ready is None:
        return Outcome(job.key, "quality", "blocked", details={"error": "its checkpoint failed"})
    outcome, _ = _attempt(job.key, "quality", lambda: (stages.ensure_quality(ctx, job, ready), None))
    return outcome


def cell_stages(ctx: RunContext, cell: CellJob, ready, scorers) -> list[Outcome]:
    """Generate then score one cell; ``ready`` is the checkpoint (None if it failed)."""
    key, only = cell.info.key, ctx.only
    outcomes = []
    if only in (None, "generate"):
        if ready is None and not freshness.generation_current(ctx.store, key):
            return [Outcome(key, "generate", "blocked", details={"error": "its checkpoint failed"})]
        outcome, _ = _attempt(key, "generate", lambda: (stages.ensure_generation(ctx, cell, ready), None))
        outcomes.append(outcome)
        if outcome.status == "failed":
            return outcomes
    if only in (None, "score"):
        if not freshness.generation_current(ctx.store, key):
            return outcomes + [Outcome(key, "score", "blocked", details={"error": "no generations yet"})]
        outcome, _ = _attempt(key, "score", lambda: (stages.ensure_scores(ctx, cell, scorers), None))
        outcome.details["scorer_key"] = ctx.scorer_key
        outcomes.append(outcome)
    return outcomes


def run_local(ctx: RunContext, plan: StudyPlan, *, record, progress) -> None:
    """Checkpoint by checkpoint: prune it, then generate and score each of its cells."""
    scorers = _scorers(ctx.study)  # one set of scorer models for the whole study
    for job in plan.checkpoints:
        cells = plan.cells_of(job)
        ready = None
        if ctx.only != "score":  # scoring alone never prunes
            outcome, ready = checkpoint_stage(ctx, job, _needs_weights(ctx, job, cells))
            _record_for_cells(record, outcome, cells)
        if _runs_quality(ctx):
            _record_for_cells(record, quality_stage(ctx, job, ready), cells)
        if ctx.only in ("prune", "quality"):
            progress(len(cells))
            continue
        for cell in cells:
            for outcome in cell_stages(ctx, cell, ready, scorers):
                record(outcome)
            progress(1)
        for done in filter(None, (job, job.parent)):  # a parent waits for its recovered systems
            _maybe_drop_weights(ctx, done, plan.cells_needing(done))


def run_ray(ctx: RunContext, plan: StudyPlan, *, record, progress) -> None:
    """One Ray task per checkpoint and one per cell (depending on its checkpoint's task), each
    asking for ``num_gpus_per_cell`` GPUs. Connects to ``RAY_ADDRESS`` if set, else starts a
    local Ray instance."""
    import os

    import ray

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    gpus = ctx.study.num_gpus_per_cell
    prune_task = ray.remote(num_gpus=gpus)(checkpoint_stage)
    quality_task = ray.remote(num_gpus=gpus)(_ray_quality)
    cell_task = ray.remote(num_gpus=gpus)(_ray_cell)
    ckpt_refs = {}
    for job in plan.checkpoints:
        if ctx.only == "score":  # scoring alone never prunes
            ckpt_refs[job.key] = ray.put((None, None))
            continue
        ckpt_refs[job.key] = prune_task.remote(ctx, job, _needs_weights(ctx, job, plan.cells_of(job)),
                                               ckpt_refs[job.parent.key] if job.parent else None)
    quality_refs = {job.key: quality_task.remote(ctx, job, ckpt_refs[job.key])
                    for job in plan.checkpoints if _runs_quality(ctx)}
    cell_refs = {}
    if ctx.only not in ("prune", "quality"):
        for cell in plan.cells:
            cell_refs[cell.info.key] = cell_task.remote(ctx, cell, ckpt_refs[cell.checkpoint.key])
    for job in plan.checkpoints:
        outcome, _ = ray.get(ckpt_refs[job.key])
        if outcome is not None:
            _record_for_cells(record, outcome, plan.cells_of(job))
        if job.key in quality_refs:
            _record_for_cells(record, ray.get(quality_refs[job.key]), plan.cells_of(job))
    for cell in plan.cells:
        if cell.info.key in cell_refs:
            for outcome in ray.get(cell_refs[cell.info.key]):
                record(outcome)
        progress(1)
    for job in plan.checkpoints:
        _maybe_drop_weights(ctx, job, plan.cells_needing(job))


def _ray_quality(ctx: RunContext, job: CheckpointJob, checkpoint_result):
    _, ready = checkpoint_result
    return quality_stage(ctx, job, ready)


def _ray_cell(ctx: RunContext, cell: CellJob, checkpoint_result):
    _, ready = checkpoint_result
    return cell_stages(ctx, cell, ready, _scorers(ctx.study))


def _scorers(study: StudyConfig):
    """The study's scorers; their models load on first use, so this is cheap."""
    from harness.scoring import Scorers

    return Scorers(study.scoring)


def _runs_quality(ctx: RunContext) -> bool:
    return ctx.only in (None, "quality") and ctx.study.quality.enabled


def _needs_weights(ctx: RunContext, job: CheckpointJob, cells) -> bool:
    """Whether a checkpoint's weights must exist: some cell still has to generate from them,
    or its quality results are not current."""
    if ctx.only == "prune":
        return False
    if _runs_quality(ctx) and not stages.quality_current(ctx, job):
        return True
    return ctx.only != "quality" and any(not freshness.generation_current(ctx.store, c.info.key) for c in cells)


def _record_for_cells(record, outcome: Outcome, cells) -> None:
    """A checkpoint's outcome is recorded under each of its cells (status shows it per cell)."""
    for cell in cells:
        record(Outcome(cell.info.key, outcome.stage, outcome.status, outcome.seconds, outcome.details))


def _maybe_drop_weights(ctx: RunContext, job: CheckpointJob, cells) -> None:
    if ctx.study.keep_checkpoints or job.spec is None:
        return
    if all(freshness.generation_current(ctx.store, c.info.key) for c in cells) and (
            not ctx.study.quality.enabled or stages.quality_current(ctx, job)):
        stages.drop_weights(ctx.store, job)


EXECUTORS = {"local": run_local, "ray": run_ray}
