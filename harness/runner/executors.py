"""Executors: run a plan's stages locally (default) or as Ray tasks on a cluster.

Both take the run's ``RunContext`` and the plan and work model by model (prune its
checkpoints, generate its cells with one engine per engine group, score them) through the
same stage functions, returning ``Outcome``s; only the driver writes the manifest, so
concurrent workers never race on it. A failed checkpoint or cell is recorded with its error
and traceback and the others continue.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field

from harness.config import StudyConfig
from harness.runner import freshness, stages
from harness.runner.plan import CellJob, CheckpointJob, StudyPlan
from harness.runner.stages import STAGES, RunContext

__all__ = ["EXECUTORS", "STAGES", "ModelEngines", "Outcome", "checkpoint_stage", "generation_stage", "quality_stage",
           "ray_gpus", "run_local", "run_ray", "score_stage"]


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


def generation_stage(ctx: RunContext, model: str, jobs: list[CheckpointJob], cells: list[CellJob],
                     ready: dict) -> list[Outcome]:
    """Generate a model's pending cells with one engine per engine group
    (``harness.generation.generate_checkpoints``): an ``Outcome`` per cell (stage "generate",
    with the engine that made it) and one per engine start (stage "engine", keyed by the
    engine's id). ``ready``: checkpoint key -> ``ReadyCheckpoint`` (None: it failed)."""
    from harness.generation import generate_checkpoints

    requests, current, blocked = stages.generation_requests(ctx, jobs, cells, ready)
    outcomes = [Outcome(c.info.key, "generate", "cached", details=_engine_record(ctx, c)) for c in current]
    outcomes += [Outcome(c.info.key, "generate", "blocked", details={"error": why}) for c, why in blocked]

    def relay(event: dict) -> None:
        if event["type"] == "cell":
            outcomes.append(Outcome(event["key"], "generate", event["status"], event["seconds"], event["details"]))
        elif event["type"] == "engine":
            details = {k: v for k, v in event.items() if k not in ("type", "engine")}
            outcomes.append(Outcome(event["engine"], "engine", "started", event["engine_start_s"],
                                    {**details, "model": model}))

    if requests:
        generation = cells[0].generation  # the model's settings (its dtype)
        generate_checkpoints(model, requests, generation, relay, engines=generation.engines)
    return outcomes


def _engine_record(ctx: RunContext, cell: CellJob) -> dict:
    """The engine fields of a current cell's generation meta (the engine that made it stays
    on record in the manifest)."""
    import json

    from harness.generation.serve import ENGINE_FIELDS

    path = ctx.store.generation_meta_path(cell.info.key)
    meta = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    return {k: meta[k] for k in ENGINE_FIELDS if k in meta}


def score_stage(ctx: RunContext, cell: CellJob, scorers) -> Outcome:
    """Score one cell (blocked while its generations are not current)."""
    key = cell.info.key
    if not freshness.generation_current(ctx.store, key):
        return Outcome(key, "score", "blocked", details={"error": "no generations yet"})
    outcome, _ = _attempt(key, "score", lambda: (stages.ensure_scores(ctx, cell, scorers), None))
    outcome.details["scorer_key"] = ctx.scorer_key
    return outcome


def run_local(ctx: RunContext, plan: StudyPlan, *, record, progress) -> None:
    """Model by model: prune its checkpoints, generate all its cells with one engine per
    engine group (in a worker process under vLLM, so its memory is free before scoring), then
    score them."""
    scorers = _scorers(ctx.study)  # one set of scorer models for the whole study
    for model, jobs in plan.checkpoints_by_model().items():
        cells = [c for job in jobs for c in plan.cells_of(job)]
        ready = {}
        for job in jobs:
            job_cells = plan.cells_of(job)
            if ctx.only != "score":  # scoring alone never prunes
                outcome, ready[job.key] = checkpoint_stage(ctx, job, _needs_weights(ctx, job, job_cells))
                _record_for_cells(record, outcome, job_cells)
            if _runs_quality(ctx):
                _record_for_cells(record, quality_stage(ctx, job, ready.get(job.key)), job_cells)
        if ctx.only in ("prune", "quality"):
            progress(len(cells))
            continue
        stopped = set()  # cells whose generation failed or was blocked in this run
        if ctx.only in (None, "generate"):
            for outcome in generation_stage(ctx, model, jobs, cells, ready):
                if outcome.status in ("failed", "blocked"):
                    stopped.add(outcome.key)
                record(outcome)
        for cell in cells:
            if ctx.only in (None, "score") and cell.info.key not in stopped:
                record(score_stage(ctx, cell, scorers))
            progress(1)
        for job in jobs:  # after the whole model's generation: a parent's recovered systems are done too
            _maybe_drop_weights(ctx, job, plan.cells_needing(job))


def ray_gpus(study: StudyConfig, cluster: dict) -> float:
    """GPUs per Ray task and engine actor: ``num_gpus_per_cell`` if set, else 1 when the
    cluster (``ray.cluster_resources()``) has GPUs (an engine per GPU: two vLLM engines at
    their memory fraction do not fit one GPU), else 0."""
    if study.num_gpus_per_cell is not None:
        return study.num_gpus_per_cell
    return 1 if cluster.get("GPU", 0) >= 1 else 0


def run_ray(ctx: RunContext, plan: StudyPlan, *, record, progress) -> None:
    """Per model: one Ray task per checkpoint to prune (and one for its quality stage), then
    one actor that holds the model's engines and works through its checkpoints, then one task
    that scores the model's cells (scorer models loaded once per task). Each asks for
    ``ray_gpus`` GPUs. Connects to ``RAY_ADDRESS`` if set, else starts a local Ray instance."""
    import os

    import ray

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    gpus = ray_gpus(ctx.study, ray.cluster_resources())
    prune_task = ray.remote(num_gpus=gpus)(checkpoint_stage)
    quality_task = ray.remote(num_gpus=gpus)(_ray_quality)
    engine_actor = ray.remote(num_gpus=gpus)(ModelEngines)
    score_task = ray.remote(num_gpus=gpus)(_ray_score)
    models = []
    for model, jobs in plan.checkpoints_by_model().items():
        cells = [c for job in jobs for c in plan.cells_of(job)]
        pruned = {}
        if ctx.only != "score":  # scoring alone never prunes
            for job in jobs:
                pruned[job.key] = prune_task.remote(ctx, job, _needs_weights(ctx, job, plan.cells_of(job)),
                                                    pruned[job.parent.key] if job.parent else None)
        quality = {job.key: quality_task.remote(ctx, job, pruned[job.key])
                   for job in jobs if _runs_quality(ctx) and job.key in pruned}
        actor = generated = scored = None
        if ctx.only in (None, "generate"):
            actor = engine_actor.remote()
            generated = actor.generate.remote(ctx, model, jobs, cells, *(pruned[job.key] for job in jobs))
        if ctx.only in (None, "score"):
            scored = score_task.remote(ctx, cells, generated)
        models.append((jobs, pruned, quality, actor, generated, scored, cells))
    for jobs, pruned, quality, actor, generated, scored, cells in models:
        for job in jobs:
            if job.key in pruned:
                _record_for_cells(record, ray.get(pruned[job.key])[0], plan.cells_of(job))
            if job.key in quality:
                _record_for_cells(record, ray.get(quality[job.key]), plan.cells_of(job))
        for outcome in [*(ray.get(generated) if generated else []), *(ray.get(scored) if scored else [])]:
            record(outcome)
        if actor is not None:
            ray.kill(actor)  # its GPU is free for the next model's engines
        progress(len(cells))
        for job in jobs:
            _maybe_drop_weights(ctx, job, plan.cells_needing(job))


class ModelEngines:
    """A Ray actor holding one model's engines while it works through its checkpoints (the
    engines themselves run in child processes that see the actor's GPUs)."""

    def generate(self, ctx: RunContext, model: str, jobs, cells, *pruned) -> list[Outcome]:
        ready = {job.key: result[1] for job, result in zip(jobs, pruned)}
        return generation_stage(ctx, model, jobs, cells, ready)


def _ray_score(ctx: RunContext, cells, generated) -> list[Outcome]:
    stopped = {o.key for o in generated or [] if o.status in ("failed", "blocked")}
    scorers = _scorers(ctx.study)  # once per model's scoring task, not per cell
    return [score_stage(ctx, cell, scorers) for cell in cells if cell.info.key not in stopped]


def _ray_quality(ctx: RunContext, job: CheckpointJob, checkpoint_result):
    _, ready = checkpoint_result
    return quality_stage(ctx, job, ready)


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
