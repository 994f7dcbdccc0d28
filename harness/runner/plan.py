"""Expand a study into its grid: checkpoints (model x dense-or-prune-spec, plus each prune
spec x the recover specs that apply to it) and cells (checkpoint x task x prompt), each with a
content key.

A checkpoint's key hashes the dense model's identity and the full prune spec (calibration
included); a recovered checkpoint's key hashes its pruned parent's key and the recover spec; a
cell's key hashes its checkpoint key, the task's selected data, the prompt and the generation
settings. Scores are cached per cell under a separate scorer key, so a changed
scorer setting rescores without regenerating.

The jobs are small explicit context objects: a ``CheckpointJob`` carries everything pruning
needs (dense directory and identity, dtype, the calibration task's data), a ``CellJob``
everything generating and scoring need (its checkpoint, task, the model's chat family and
the generation settings with the model's dtype). Calibration sources are resolved here, so
``--dry-run`` reports a bad one before any work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from harness.config import GenerationConfig, ScoringConfig, StudyConfig, TaskConfig
from harness.errors import PrunescopeError
from harness.hashing import content_key
from harness.models import model_identity, resolve_model_dir
from harness.pruning.spec import PruneSpec
from harness.records import CellInfo, ModelIdentity, PruneSpecInfo, checkpoint_folder
from harness.recovery.spec import RecoverySpec

DENSE = "dense"
# Engine settings that change memory use or speed but not the generated tokens.
_NOT_RESULT_FIELDS = {"gpu_memory_utilization"}
_NOT_RESULT_GENERATION = {"engines"}  # how many engines serve the checkpoints


class PlanError(PrunescopeError):
    """A study whose grid cannot be built (e.g. a calibration source that does not resolve)."""


@dataclass(frozen=True)
class CalibrationTask:
    """Where a ``task:NAME`` calibration source reads its documents: the study's data for
    NAME (path, field mapping, split), or the task's own data when the study lacks NAME."""

    name: str
    data: Path | None = None
    fields: dict | None = None
    split: str | None = None


@dataclass(frozen=True)
class CheckpointJob:
    """One checkpoint of the grid: the dense model, one pruning of it, or one recovery
    fine-tuning of a pruning (then ``parent`` is the pruned checkpoint's job)."""

    model: str
    spec: PruneSpec | None  # None: the dense baseline
    key: str
    dense_dir: Path
    dense_identity: ModelIdentity
    dtype: str = "auto"  # the model's dtype: pruning loads (and perplexity measures) in it
    calibration_task: CalibrationTask | None = None
    recovery: RecoverySpec | None = None
    parent: CheckpointJob | None = None

    @property
    def folder(self) -> str:
        """Its folder under ``checkpoints/<model>/``: label and content key, so that another
        study's spec with the same label never shares it (equal to its cells' ``CellInfo.folder``)."""
        label = DENSE if self.spec is None else self.spec.key + (f"+{self.recovery.key}" if self.recovery else "")
        return checkpoint_folder(label, self.key)

    @property
    def prune_info(self) -> PruneSpecInfo:
        if self.spec is None:
            return PruneSpecInfo()
        return PruneSpecInfo(method=self.spec.method, sparsity=self.spec.sparsity,
                             structure=self.spec.structure, owl=self.spec.owl is not None,
                             seed=self.spec.seed)


@dataclass(frozen=True)
class CellJob:
    """One cell: generate ``task``'s documents from ``checkpoint`` with ``generation`` (the
    study's settings with the model's dtype), then score them."""

    info: CellInfo
    checkpoint: CheckpointJob
    task: TaskConfig
    chat_family: str = "auto"
    generation: GenerationConfig = field(default_factory=GenerationConfig)


@dataclass
class StudyPlan:
    checkpoints: list[CheckpointJob]
    cells: list[CellJob]
    tasks: dict  # task name -> tasks.TaskData

    def cells_of(self, checkpoint: CheckpointJob) -> list[CellJob]:
        return [c for c in self.cells if c.checkpoint.key == checkpoint.key]

    def checkpoints_by_model(self) -> dict[str, list[CheckpointJob]]:
        """The checkpoints of each model, in plan order (a model's engines serve them in turn)."""
        models: dict[str, list[CheckpointJob]] = {}
        for job in self.checkpoints:
            models.setdefault(job.model, []).append(job)
        return models

    def cells_needing(self, checkpoint: CheckpointJob) -> list[CellJob]:
        """The cells generated from this checkpoint's weights: its own and those of the
        systems recovered from it (a LoRA system is served on its parent's weights)."""
        return [c for c in self.cells if checkpoint.key in (c.checkpoint.key, getattr(c.checkpoint.parent, "key", None))]


def plan_study(study: StudyConfig, limit: int | None = None, hash_cache: dict | None = None) -> StudyPlan:
    """The study's grid. ``limit`` caps documents per task (smoke runs); ``hash_cache`` spares
    rehashing unchanged dense checkpoints (``harness.hashing.hash_checkpoint``)."""
    from tasks import load_task

    tasks = {}
    for task in study.tasks:
        cap = min(filter(None, (task.limit, limit)), default=None)
        tasks[task.name] = load_task(
            task.name, data=task.data, fields=task.fields or None, split=task.split,
            limit=cap, sample_seed=task.sample_seed, on_bad_record=task.on_bad_record,
        )
    calibration = [calibration_task(study, i) for i in range(len(study.prune))]
    checkpoints, cells = [], []
    for model in study.models:
        directory, revision = resolve_model_dir(model, study.allow_downloads)
        source = model.hub_id or str(model.path)
        identity = model_identity(model.name, directory, source, revision, hash_cache)
        generation = model_generation(study.generation, model.dtype)
        pruned = []
        for spec, calib in [(None, None), *zip(study.prune, calibration)]:
            inputs = {"model": identity.checkpoint_hash, "dtype": model.dtype,
                      "prune": spec.to_dict() if spec else DENSE}
            if calib is not None and calib.data is not None:  # the study's own data for it
                inputs["calibration_data"] = _calibration_key(calib)
            key = content_key(inputs)
            pruned.append(CheckpointJob(model.name, spec, key, directory, identity, model.dtype, calib))
        recovered = [CheckpointJob(model.name, parent.spec, content_key({"parent": parent.key, "recover": rec.to_dict()}),
                                   directory, identity, model.dtype, None, rec, parent)
                     for parent in pruned[1:] for rec in study.recover
                     if not rec.apply_to or parent.spec.key in rec.apply_to]
        cell_keys = {}  # (checkpoint key, task, prompt) -> cell key
        for ckpt in pruned + recovered:  # parents before the checkpoints recovered from them
            checkpoints.append(ckpt)
            for task in study.tasks:
                for prompt in study.prompts:
                    cell_key = content_key({
                        "checkpoint": ckpt.key, "task": _task_key(task, tasks[task.name]),
                        "prompt": [prompt, study.generation.templates.get(prompt)],
                        "generation": _generation_key(study), "chat_family": model.chat_family,
                    })
                    cell_keys[ckpt.key, task.name, prompt] = cell_key
                    parent = cell_keys.get((ckpt.parent.key, task.name, prompt)) if ckpt.parent else None
                    dense = cell_keys[pruned[0].key, task.name, prompt] if ckpt.spec else None
                    info = CellInfo(key=cell_key, model=model.name, prune=ckpt.prune_info,
                                    recovery=ckpt.recovery.key if ckpt.recovery else None,
                                    task=task.name, prompt=prompt, baseline_key=dense, parent_key=parent,
                                    checkpoint=ckpt.key, doc_ids=tuple(r.id for r in tasks[task.name].records))
                    cells.append(CellJob(info, ckpt, task, model.chat_family, generation))
    return StudyPlan(checkpoints, cells, tasks)


def limited_study(study: StudyConfig, limit: int | None) -> StudyConfig:
    """The study with each task capped at ``limit`` documents (a ``--limit`` smoke run; the
    study itself for None)."""
    if limit is None:
        return study
    tasks = [t.model_copy(update={"limit": min(filter(None, (t.limit, limit)))}) for t in study.tasks]
    return study.model_copy(update={"tasks": tasks})


def calibration_task(study: StudyConfig, index: int) -> CalibrationTask | None:
    """The ``task:NAME`` calibration source of ``study.prune[index]`` resolved against the
    study's tasks and checked to load; None for a file source. Raises PlanError naming the
    prune spec."""
    spec = study.prune[index]
    source = spec.calibration.source
    where = f"prune[{index}] ({spec.key}): calibration.source {source!r}"
    if not source.startswith("task:"):
        if not Path(source).is_file():
            raise PlanError(f"{where}: no such file")
        return None
    name = source.removeprefix("task:")
    own = next((t for t in study.tasks if t.name == name), None)
    found = CalibrationTask(name) if own is None else CalibrationTask(
        name, own.data, dict(own.fields) or None, own.split)
    from tasks import load_task
    from tasks.errors import DataError

    try:
        load_task(name, data=found.data, fields=found.fields, split=found.split, limit=1)
    except (DataError, PrunescopeError) as exc:
        raise PlanError(f"{where}: {exc}") from None
    return found


def model_generation(generation: GenerationConfig, dtype: str) -> GenerationConfig:
    """The generation settings of one model: its ``dtype`` (unless auto) overrides the engine's."""
    if dtype == "auto":
        return generation
    return generation.model_copy(update={"engine": generation.engine.model_copy(update={"dtype": dtype})})


def _calibration_key(calib: CalibrationTask) -> dict:
    from harness.hashing import hash_file

    data = hash_file(calib.data) if Path(calib.data).is_file() else Path(calib.data).name
    return {"data": data, "fields": calib.fields, "split": calib.split}


def scorer_key(scoring: ScoringConfig) -> str:
    """Everything about scoring that changes a score, including the conv head's contents."""
    from harness.hashing import hash_file

    config = scoring.model_dump(mode="json")
    weights = scoring.summac_conv_weights
    config["summac_conv_weights"] = hash_file(weights) if weights and Path(weights).exists() else None
    return content_key(config)


def _task_key(task: TaskConfig, data) -> dict:
    return {"name": task.name, "data": data.content_hash, "ids": [r.id for r in data.records],
            "fields": task.fields}


def _generation_key(study: StudyConfig) -> dict:
    config = study.generation.model_dump(mode="json", exclude=_NOT_RESULT_GENERATION)
    config["engine"] = {k: v for k, v in config["engine"].items() if k not in _NOT_RESULT_FIELDS}
    return config
