"""Expand a study into its grid: checkpoints (model x dense-or-prune-spec) and cells
(checkpoint x task x prompt), each with a content key.

A checkpoint's key hashes the dense model's identity and the full prune spec (calibration
included); a cell's key hashes its checkpoint key, the task's selected data, the prompt and
the generation settings. Scores are cached per cell under a separate scorer key, so a changed
scorer setting rescores without regenerating.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.config import StudyConfig, TaskConfig
from harness.hashing import content_key
from harness.models import model_identity, resolve_model_dir
from harness.pruning.spec import PruneSpec
from harness.records import CellInfo, ModelIdentity, PruneSpecInfo

DENSE = "dense"
# Engine settings that change memory use or speed but not the generated tokens.
_NOT_RESULT_FIELDS = {"gpu_memory_utilization"}


@dataclass(frozen=True)
class CheckpointJob:
    """One checkpoint of the grid: the dense model or one pruning of it."""

    model: str
    spec: PruneSpec | None  # None: the dense baseline
    key: str
    dense_dir: Path
    dense_identity: ModelIdentity

    @property
    def folder(self) -> str:
        return DENSE if self.spec is None else self.spec.key

    @property
    def prune_info(self) -> PruneSpecInfo:
        if self.spec is None:
            return PruneSpecInfo()
        return PruneSpecInfo(method=self.spec.method, sparsity=self.spec.sparsity,
                             structure=self.spec.structure, owl=self.spec.owl is not None)


@dataclass(frozen=True)
class CellJob:
    info: CellInfo
    checkpoint: CheckpointJob
    task: TaskConfig


@dataclass
class StudyPlan:
    checkpoints: list[CheckpointJob]
    cells: list[CellJob]
    tasks: dict  # task name -> tasks.TaskData
    skipped_records: dict[str, list] = field(default_factory=dict)

    def cells_of(self, checkpoint: CheckpointJob) -> list[CellJob]:
        return [c for c in self.cells if c.checkpoint.key == checkpoint.key]


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
    checkpoints, cells = [], []
    for model in study.models:
        directory, revision = resolve_model_dir(model, study.allow_downloads)
        source = model.hub_id or str(model.path)
        identity = model_identity(model.name, directory, source, revision, hash_cache)
        dense_cells = {}
        for spec in [None, *study.prune]:
            key = content_key({"model": identity.checkpoint_hash, "dtype": model.dtype,
                               "prune": spec.to_dict() if spec else DENSE})
            ckpt = CheckpointJob(model.name, spec, key, directory, identity)
            checkpoints.append(ckpt)
            for task in study.tasks:
                for prompt in study.prompts:
                    cell_key = content_key({
                        "checkpoint": key, "task": _task_key(task, tasks[task.name]),
                        "prompt": [prompt, study.generation.templates.get(prompt)],
                        "generation": _generation_key(study), "chat_family": model.chat_family,
                    })
                    baseline = dense_cells.get((task.name, prompt))
                    info = CellInfo(key=cell_key, model=model.name, prune=ckpt.prune_info,
                                    task=task.name, prompt=prompt, baseline_key=baseline)
                    if spec is None:
                        dense_cells[(task.name, prompt)] = cell_key
                    cells.append(CellJob(info, ckpt, task))
    skipped = {name: list(map(_jsonable, data.skipped)) for name, data in tasks.items() if data.skipped}
    return StudyPlan(checkpoints, cells, tasks, skipped)


def scorer_key(study: StudyConfig) -> str:
    """Everything about scoring that changes a score, including the conv head's contents."""
    from harness.hashing import hash_file

    config = study.scoring.model_dump(mode="json")
    weights = study.scoring.summac_conv_weights
    config["summac_conv_weights"] = hash_file(weights) if weights and Path(weights).exists() else None
    return content_key(config)


def _task_key(task: TaskConfig, data) -> dict:
    return {"name": task.name, "data": data.content_hash, "ids": [r.id for r in data.records],
            "fields": task.fields}


def _generation_key(study: StudyConfig) -> dict:
    config = study.generation.model_dump(mode="json")
    config["engine"] = {k: v for k, v in config["engine"].items() if k not in _NOT_RESULT_FIELDS}
    return config


def _jsonable(item):
    if hasattr(item, "model_dump"):
        return item.model_dump(mode="json")
    try:
        return asdict(item)
    except TypeError:
        return item if isinstance(item, (dict, str)) else str(item)
