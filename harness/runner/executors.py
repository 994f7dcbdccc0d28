"""Executors: run a plan's stages locally (default) or as Ray tasks on a cluster.

Both take the run's ``RunContext`` and the plan and work model by model (prune its
checkpoints, generate its cells with one engine per engine group, score them) through the
same stage functions, returning ``Outcome``s; only the driver writes the manifest, so
concurrent workers never race on it. A failed checkpoint or cell is recorded with its error
and traceback and the others continue.

Progress (``harness.runner.progress``) is counted per stage of each model in pruned decoder
blocks, generation requests (a document of a cell) and scoring batches (``Scorers.batches``).
Locally the stages advance it as they work; under Ray the driver counts each checkpoint's or
cell's units as its task's result arrives.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from functools import cache

from harness.config import StudyConfig
from harness.runner import freshness, stages
from harness.runner.plan import CellJob, CheckpointJob, StudyPlan
from harness.runner.progress import Progress, Stage
from harness.runner.stages import STAGES, RunContext

__all__ = ["EXECUTORS", "STAGES", "ModelEngines", "Outcome", "batch_count", "checkpoint_stage", "generation_stage",
           "pruned_blocks", "quality_stage", "ray_gpus", "request_count", "run_local", "run_ray", "score_stage"]


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
                     after=None, stage: Stage | None = None) -> tuple[Outcome, stages.ReadyCheckpoint | None]:
    """Prune (or recover) one checkpoint, advancing ``stage`` by its ``pruned_blocks`` (all
    at once, as cached, when its pruning was current). ``after``: unused; under Ray the parent
    checkpoint's result, passed so that Ray runs a recovery only once its pruned parent exists."""
    before = None if stage is None else stage.done
    advance = None if stage is None else stage.advance
    outcome, ready = _attempt(job.key, "prune", lambda: stages.ensure_checkpoint(ctx, job, need_weights, advance))
    if stage is not None and outcome.status != "failed" and stage.done == before:  # no block walked
        stage.skip(pruned_blocks(job))
    return outcome, ready


def pruned_blocks(job: CheckpointJob) -> int:
    """The decoder blocks pruning ``job`` walks: the model's layer count for a method the
    pruning driver walks block by block, else 0 (dense, whole-model methods, recovery)."""
    from harness.pruning import registry

    if job.spec is None or job.recovery is not None or registry.get(job.spec.method).level != "linear":
        return 0
    return _layers(str(job.dense_dir))


@cache
def _layers(model_dir: str) -> int:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model_dir).get_text_config().num_hidden_layers


def request_count(ctx: RunContext, cells) -> int:
    """The generation requests of ``cells``: a document of a cell each."""
    return sum(_documents(ctx, cell) for cell in cells)


def batch_count(ctx: RunContext, cells, scorers) -> int:
    """The scoring batches of ``cells`` (``Scorers.batches``)."""
    return sum(scorers.batches(_documents(ctx, cell)) for cell in cells)


def _documents(ctx: RunContext, cell: CellJob) -> int:
    return len(ctx.tasks[cell.info.task].records)


def quality_stage(ctx: RunContext, job: CheckpointJob, ready) -> Outcome:
    """The optional quality stage of one checkpoint; ``ready`` is None if it failed."""
    if ready is None:
        return Outcome(job.key, "quality", "blocked", details={"error": "its checkpoint failed"})
    outcome, _ = _attempt(job.key, "quality", lambda: (stages.ensure_quality(ctx, job, ready), None))
    return outcome


def generation_stage(ctx: RunContext, model: str, jobs: list[CheckpointJob], cells: list[CellJob],
                     ready: dict, stage: Stage | None = None) -> list[Outcome]:
    """Generate a model's pending cells with one engine per engine group
    (``harness.generation.generate_checkpoints``): an ``Outcome`` per cell (stage "generate",
    with the engine that made it) and one per engine start (stage "engine", keyed by the
    engine's id). ``ready``: checkpoint key -> ``ReadyCheckpoint`` (None: it failed).
    ``stage`` is advanced by its ``request_count`` as the engine answers them."""
    from harness.generation import generate_checkpoints

    requests, current, blocked = stages.generation_requests(ctx, jobs, cells, ready)
    outcomes = [Outcome(c.info.key, "generate", "cached", details=_engine_record(ctx, c)) for c in current]
    outcomes += [Outcome(c.info.key, "generate", "blocked", details={"error": why}) for c, why in blocked]
    if stage is not None:
        stage.skip(request_count(ctx, current))

    def relay(event: dict) -> None:
        if event["type"] == "progress" and stage is not None:
            stage.advance(event["n"])
        elif event["type"] == "cell":
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


def score_stage(ctx: RunContext, cell: CellJob, scorers, stage: Stage | None = None) -> Outcome:
    """Score one cell (blocked while its generations are not current), advancing ``stage``
    by its ``batch_count`` as they are scored."""
    key = cell.info.key
    if not freshness.generation_current(ctx.store, key):
        return Outcome(key, "score", "blocked", details={"error": "no generations yet"})
    advance = None if stage is None else stage.advance
    outcome, _ = _attempt(key, "score", lambda: (stages.ensure_scores(ctx, cell, scorers, advance), None))
    outcome.details["scorer_key"] = ctx.scorer_key
    if stage is not None and outcome.status == "cached":
        stage.skip(batch_count(ctx, [cell], scorers))
    return outcome


def run_local(ctx: RunContext, plan: StudyPlan, *, record, progress: Progress) -> None:
    """Model by model: prune its checkpoints, generate all its cells with one engine per
    engine group (in a worker process under vLLM, so its memory is free before scoring), then
    score them."""
    scorers = _scorers(ctx.study)  # one set of scorer models for the whole study
    for model, jobs in plan.checkpoints_by_model().items():
        cells = [c for job in jobs for c in plan.cells_of(job)]
        ready = {}
        if ctx.only != "score":  # scoring alone never prunes
            with _stage(progress, model, "prune", jobs) as stage:
                for job in jobs:
                    job_cells = plan.cells_of(job)
                    outcome, ready[job.key] = checkpoint_stage(ctx, job, _needs_weights(ctx, job, job_cells),
                                                               stage=stage)
                    _record_for_cells(record, outcome, job_cells)
        if _runs_quality(ctx):
            with _stage(progress, model, "quality", jobs) as stage:
                for job in jobs:
                    outcome = quality_stage(ctx, job, ready.get(job.key))
                    _count(stage, outcome, 1)
                    _record_for_cells(record, outcome, plan.cells_of(job))
        if ctx.only in ("prune", "quality"):
            progress.cells_done(len(cells))
            continue
        stopped = set()  # cells whose generation failed or was blocked in this run
        if ctx.only in (None, "generate"):
            with _stage(progress, model, "generate", cells, request_count(ctx, cells)) as stage:
                for outcome in generation_stage(ctx, model, jobs, cells, ready, stage):
                    if outcome.status in ("failed", "blocked"):
                        stopped.add(outcome.key)
                    record(outcome)
        scored = [c for c in cells if ctx.only in (None, "score") and c.info.key not in stopped]
        if ctx.only in (None, "score"):
            with _stage(progress, model, "score", scored, batch_count(ctx, scored, scorers)) as stage:
                for cell in scored:
                    record(score_stage(ctx, cell, scorers, stage))
                    progress.cells_done(1)
        progress.cells_done(len(cells) - len(scored))
        for job in jobs:  # after the whole model's generation: a parent's recovered systems are done too
            _maybe_drop_weights(ctx, job, plan.cells_needing(job))


def _stage(progress: Progress, model: str, name: str, items: list, total: int | None = None):
    """A stage of one model over ``items`` (checkpoint jobs or cells); ``total``: its units
    (default: the jobs' ``pruned_blocks`` for "prune", one per item otherwise)."""
    unit, what = {"prune": ("block", "checkpoint"), "quality": ("checkpoint", "checkpoint"),
                  "generate": ("request", "cell"), "score": ("batch", "cell")}[name]
    if total is None:
        total = sum(map(pruned_blocks, items)) if name == "prune" else len(items)
    counted = f"{len(items)} {what}{'s' * (len(items) != 1)}" if unit != what else ""
    return progress.stage(f"{model} {name}", unit, total, counted)


def _count(stage: Stage, outcome: Outcome, units: int) -> None:
    """Count a finished checkpoint's or cell's ``units``: worked when done, skipped when cached."""
    if outcome.status == "done":
        stage.advance(units)
    elif outcome.status == "cached":
        stage.skip(units)


def ray_gpus(study: StudyConfig, cluster: dict) -> float:
    """GPUs per Ray task and engine actor: ``num_gpus_per_cell`` if set, else 1 when the
    cluster (``ray.cluster_resources()``) has GPUs (an engine per GPU: two vLLM engines at
    their memory fraction do not fit one GPU), else 0."""
    if study.num_gpus_per_cell is not None:
        return study.num_gpus_per_cell
    return 1 if cluster.get("GPU", 0) >= 1 else 0


def run_ray(ctx: RunContext, plan: StudyPlan, *, record, progress: Progress) -> None:
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
        models.append((model, jobs, pruned, quality, actor, generated, scored, cells))
    for model, jobs, pruned, quality, actor, generated, scored, cells in models:
        _gather_model(ctx, plan, progress, record, model, jobs, pruned, quality, generated, scored, cells)
        if actor is not None:
            ray.kill(actor)  # its GPU is free for the next model's engines
        for job in jobs:
            _maybe_drop_weights(ctx, job, plan.cells_needing(job))


def _gather_model(ctx: RunContext, plan: StudyPlan, progress: Progress, record, model: str, jobs, pruned: dict,
                  quality: dict, generated, scored, cells) -> None:
    """Wait for one model's Ray tasks in stage order, recording their outcomes and counting
    each checkpoint's or cell's units as its result arrives."""
    import ray

    if pruned:
        with _stage(progress, model, "prune", jobs) as stage:
            for job in jobs:
                outcome = ray.get(pruned[job.key])[0]
                _count(stage, outcome, pruned_blocks(job))
                _record_for_cells(record, outcome, plan.cells_of(job))
    if quality:
        with _stage(progress, model, "quality", jobs) as stage:
            for job in jobs:
                outcome = ray.get(quality[job.key])
                _count(stage, outcome, 1)
                _record_for_cells(record, outcome, plan.cells_of(job))
    by_key = {cell.info.key: cell for cell in cells}
    stopped = set()
    if generated is not None:
        with _stage(progress, model, "generate", cells, request_count(ctx, cells)) as stage:
            for outcome in ray.get(generated):
                if outcome.stage == "generate":
                    _count(stage, outcome, _documents(ctx, by_key[outcome.key]))
                if outcome.status in ("failed", "blocked"):
                    stopped.add(outcome.key)
                record(outcome)
    if scored is not None:
        scorers = _scorers(ctx.study)  # for counting only: it loads no model
        kept = [cell for cell in cells if cell.info.key not in stopped]
        with _stage(progress, model, "score", kept, batch_count(ctx, kept, scorers)) as stage:
            for outcome in ray.get(scored):
                _count(stage, outcome, batch_count(ctx, [by_key[outcome.key]], scorers))
                record(outcome)
    progress.cells_done(len(cells))


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
