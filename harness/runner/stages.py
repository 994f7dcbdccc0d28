"""The per-checkpoint and per-cell stages of a study, each skipping what is already current.

Every stage reads the artifacts of the stages before it and writes its own atomically, so a
run killed at any point resumes here without recomputing finished work. Whether an artifact
is current is decided by ``harness.runner.freshness`` alone (the same rule ``status``
uses). Each stage takes the run's ``RunContext`` and one job (``CheckpointJob`` or
``CellJob``); the executors (local, Ray) call these functions, nothing else wires stages
together. Adding a stage: docs/ARCHITECTURE.md, "Adding a stage".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.config import StudyConfig
from harness.hashing import content_key
from harness.models import model_identity
from harness.records import ModelIdentity
from harness.runner import freshness
from harness.runner.plan import CellJob, CheckpointJob
from harness.store import RunStore

STAGES = ("prune", "quality", "generate", "score", "report")  # what `prunescope run --stage` accepts


@dataclass(frozen=True)
class RunContext:
    """What every stage of one run needs, built once from the study and its plan."""

    store: RunStore
    study: StudyConfig
    tasks: dict  # task name -> tasks.TaskData
    perplexity_text: str | None
    scorer_key: str
    only: str | None = None  # run this stage alone (one of STAGES)


@dataclass(frozen=True)
class ReadyCheckpoint:
    """A checkpoint ready to generate from (``directory`` is None once its weights were
    deleted under ``keep_checkpoints: false``); a LoRA-recovered system is its pruned base
    ``directory`` plus the ``adapter`` folder, served unmerged."""

    directory: Path | None
    identity: ModelIdentity
    adapter: Path | None = None


def ensure_checkpoint(ctx: RunContext, job: CheckpointJob, need_weights: bool = True,
                      progress=None) -> tuple[bool, ReadyCheckpoint]:
    """Prune (unless current), write identity.json, measure perplexity (unless current).
    Returns whether any work was done, and the checkpoint. ``progress(1)`` as each decoder
    block is pruned (``harness.pruning.prune_checkpoint``)."""
    store = ctx.store
    if job.spec is None:
        pruned, ready = False, ReadyCheckpoint(job.dense_dir, job.dense_identity)
        identity = ready.identity.model_dump(mode="json")
        if store.read_checkpoint_report(job.model, job.folder, "identity.json") != identity:
            store.write_checkpoint_report(job.model, job.folder, "identity.json", identity)
    elif job.recovery is not None:
        pruned, ready = _recovered_checkpoint(store, job, need_weights)
    else:
        pruned, ready = _pruned_checkpoint(store, job, need_weights, progress)
    measured = False
    if ctx.perplexity_text and ready.directory is not None:
        measured = _ensure_perplexity(ctx, job, ready)
    return pruned or measured, ready


def is_pruned(store: RunStore, job: CheckpointJob) -> bool:
    """Whether this job's pruning is on disk (the folder's key stamp names this very job)."""
    return freshness.checkpoint_current(store, job.model, job.folder, job.key)


def _pruned_checkpoint(store: RunStore, job: CheckpointJob, need_weights: bool,
                       progress=None) -> tuple[bool, ReadyCheckpoint]:
    folder = store.checkpoint_dir(job.model, job.folder)
    cached = is_pruned(store, job)
    has_weights = cached and _has_weights(folder)
    if cached and (has_weights or not need_weights):
        return False, ReadyCheckpoint(folder if has_weights else None, store.read_identity(job.model, job.folder))
    from harness.pruning import prune_checkpoint

    prune_checkpoint(job.dense_dir, job.spec, folder, dtype=job.dtype, calibration_task=job.calibration_task,
                     progress=progress)
    identity = model_identity(job.model, folder, store.relative(folder), job.dense_identity.revision)
    store.write_checkpoint_report(job.model, job.folder, "identity.json", identity)
    store.write_job_key(job.model, job.folder, job.key)
    return True, ReadyCheckpoint(folder, identity)


def _recovered_checkpoint(store: RunStore, job: CheckpointJob, need_weights: bool) -> tuple[bool, ReadyCheckpoint]:
    """Recovery fine-tuning of the parent's pruned checkpoint (pruned again first if its
    weights were dropped); a LoRA system is served as the parent's folder plus the adapter."""
    folder = store.checkpoint_dir(job.model, job.folder)
    lora = job.recovery.method == "lora"
    cached = is_pruned(store, job)
    if cached and not need_weights:
        return False, ReadyCheckpoint(None, store.read_identity(job.model, job.folder))
    _, parent = _pruned_checkpoint(store, job.parent, True)
    if cached and _has_weights(folder):
        return False, ReadyCheckpoint(parent.directory if lora else folder, store.read_identity(job.model, job.folder),
                                      folder if lora else None)
    from harness.recovery import recover

    recover(parent.directory, job.recovery, folder)
    identity = model_identity(job.model, folder, store.relative(folder), job.dense_identity.revision)
    if lora:  # the system is the base and the adapter: both hashes make its identity
        identity = identity.model_copy(update={"checkpoint_hash": content_key(
            [parent.identity.checkpoint_hash, identity.checkpoint_hash])})
    store.write_checkpoint_report(job.model, job.folder, "identity.json", identity)
    store.write_job_key(job.model, job.folder, job.key)
    return True, ReadyCheckpoint(parent.directory if lora else folder, identity, folder if lora else None)


def perplexity_key(ctx: RunContext, job: CheckpointJob) -> str:
    from harness.pruning.perplexity import text_hash

    settings = ctx.study.perplexity
    return freshness.settings_key({"checkpoint": job.key, "text_hash": text_hash(ctx.perplexity_text),
                                   "seqlen": settings.seqlen, "max_windows": settings.max_windows})


def _ensure_perplexity(ctx: RunContext, job: CheckpointJob, ready: ReadyCheckpoint) -> bool:
    from harness.pruning.perplexity import perplexity

    key = perplexity_key(ctx, job)
    if freshness.report_current(ctx.store, job.model, job.folder, "perplexity.json", key):
        return False
    settings = ctx.study.perplexity
    model, tokenizer = ready.directory, None
    if ready.adapter is not None:
        from harness.recovery import load_with_adapter

        model, tokenizer = load_with_adapter(ready.directory, ready.adapter)
    result = perplexity(model, ctx.perplexity_text, seqlen=settings.seqlen,
                        max_windows=settings.max_windows, dtype=job.dtype, tokenizer=tokenizer)
    ctx.store.write_checkpoint_report(job.model, job.folder, "perplexity.json",
                                      {**result, "max_windows": settings.max_windows, "key": key,
                                       "checkpoint": job.key})
    return True


def ensure_quality(ctx: RunContext, job: CheckpointJob, ready: ReadyCheckpoint) -> bool:
    """The optional quality stage (``harness.quality``): lm-eval tasks and standard-corpus
    perplexity of the checkpoint, unless current in its quality.json."""
    from harness.quality.stage import ensure_quality as run

    return run(ctx.store.checkpoint_dir(job.model, job.folder), ready.directory, job.key,
               ctx.study.quality, _quality_settings(ctx, job))


def quality_current(ctx: RunContext, job: CheckpointJob) -> bool:
    """Whether the checkpoint's quality.json holds every result the study asks for, current."""
    config_dir = job.dense_dir if job.spec is None else ctx.store.checkpoint_dir(job.model, job.folder)
    if not (Path(config_dir) / "config.json").exists():  # not pruned yet
        return False
    return freshness.quality_current(ctx.store, job.model, job.folder, job.key, config_dir,
                                     ctx.study.quality, _quality_settings(ctx, job))


def _quality_settings(ctx: RunContext, job: CheckpointJob):
    from harness.quality.stage import study_settings
    from harness.runner.plan import model_generation

    return study_settings(ctx.study.quality, model_generation(ctx.study.generation, job.dtype).engine)


def drop_weights(store: RunStore, job: CheckpointJob) -> None:
    """Delete a pruned checkpoint's weights, keeping its reports (keep_checkpoints: false)."""
    for path in freshness.weight_files(store.checkpoint_dir(job.model, job.folder)):
        path.unlink()


def _has_weights(folder: Path) -> bool:
    return bool(freshness.weight_files(folder))


def generation_requests(ctx: RunContext, jobs: list[CheckpointJob], cells: list[CellJob], ready: dict,
                        ) -> tuple[list, list[CellJob], list[tuple[CellJob, str]]]:
    """A model's cells still to generate, as one ``CheckpointRequest`` per checkpoint (its
    cells together, for one engine to serve in turn); the cells whose generations are
    current; and the cells that cannot be generated, with why. ``ready`` maps a checkpoint
    key to its ``ReadyCheckpoint`` (None or absent: its pruning failed)."""
    from harness.generation import CellRequest, CheckpointRequest

    requests, current, blocked = [], [], []
    for job in jobs:
        pending = []
        checkpoint = ready.get(job.key)
        for cell in (c for c in cells if c.checkpoint.key == job.key):
            if freshness.generation_current(ctx.store, cell.info.key):
                current.append(cell)
            elif checkpoint is None:
                blocked.append((cell, "its checkpoint failed"))
            elif checkpoint.directory is None:
                blocked.append((cell, f"checkpoint {job.folder} has no weights to generate from"))
            else:
                documents = tuple((r.id, r.document) for r in ctx.tasks[cell.info.task].records)
                pending.append(CellRequest(cell.info.key, documents, cell.info.prompt,
                                           ctx.store.generation_path(cell.info.key), cell.chat_family))
        if pending:
            requests.append(CheckpointRequest(job.key, checkpoint.directory, checkpoint.identity,
                                              tuple(pending), checkpoint.adapter))
    return requests, current, blocked


def ensure_scores(ctx: RunContext, cell: CellJob, scorers, progress=None) -> bool:
    """Score the cell's generations unless the score file is stamped with this scorer key
    and these generations' key; ``progress`` as for ``Scorers.score``."""
    store, key = ctx.store, cell.info.key
    if freshness.scores_current(store, key, ctx.scorer_key):
        return False
    from harness.scoring import score_cell

    records = ctx.tasks[cell.info.task].records
    score_cell(store.generation_path(key), {r.id: r.document for r in records},
               {r.id: r.reference for r in records}, scorers, store.score_path(key), cell=cell.info,
               inputs=freshness.score_inputs(store, key, ctx.scorer_key),
               facts={r.id: r.facts for r in records}, progress=progress)
    return True


def write_cell_files(store: RunStore, cells: list[CellJob]) -> None:
    for cell in cells:
        store.write_cell(cell.info)
