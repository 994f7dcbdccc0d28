"""What a study will do (``--dry-run``) and what a run directory holds (``prunescope status``).

Both judge artifacts with ``harness.runner.freshness``, the rule ``prunescope run`` uses;
the manifest only adds the logged failures, seconds and errors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from harness.config import QualityConfig, ScoringConfig, StudyConfig
from harness.errors import PrunescopeError
from harness.runner import freshness
from harness.runner.plan import plan_study, scorer_key
from harness.runner.stages import is_pruned
from harness.runner.study import run_dir_for
from harness.store import RunStore

_BYTES_PER_GENERATION = 2_000  # one JSONL record with token ids, generous


@dataclass
class CellRow:
    key: str
    system: str
    task: str
    prompt: str
    prune: str
    quality: str  # "-" when the study has no quality stage
    generate: str
    score: str
    seconds: float
    error: str = ""
    engine: str = ""  # the engine that generated the cell (one id per engine start)
    swapped: str = ""  # "yes", or "no" and why the checkpoint had an engine of its own
    engine_start_s: float | None = None
    generate_s: float | None = None  # its checkpoint's request batch


def dry_run(study: StudyConfig, out: str | Path | None = None, limit: int | None = None) -> tuple[list[CellRow], int]:
    """Every cell with its cached state, and an estimate of the bytes still to be written."""
    store = RunStore(run_dir_for(study, out))
    manifest = store.read_manifest()
    plan = plan_study(study, limit, dict(manifest.get("checkpoint_hashes", {})))
    key = scorer_key(study.scoring)
    rows = [_row(store, cell.info, manifest, key, study.quality.enabled) for cell in plan.cells]
    estimate = 0
    for job in plan.checkpoints:
        if job.spec is not None and not is_pruned(store, job):
            estimate += _weight_bytes(job.dense_dir)
    for cell in plan.cells:
        if not freshness.generation_current(store, cell.info.key):
            estimate += _BYTES_PER_GENERATION * len(plan.tasks[cell.info.task].records)
    return rows, estimate


def run_status(run_dir: str | Path) -> list[CellRow]:
    """Each cell of a run directory with its stages' states, seconds and last error; a score
    is "done" only when current under the run's study.yaml scoring settings."""
    store = RunStore(run_dir)
    if not store.has_cells():
        raise PrunescopeError(f"{store.root}: not a prunescope run directory (no cells folder)")
    raw = store.read_study_raw()
    scoring = ScoringConfig.model_validate(raw.get("scoring") or {})
    quality = QualityConfig.model_validate(raw.get("quality") or {}).enabled
    manifest = store.read_manifest()
    key = scorer_key(scoring)
    return [_row(store, info, manifest, key, quality) for info in store.read_cells().values()]


def format_rows(rows: list[CellRow]) -> str:
    header = ("cell", "system", "task", "prompt", "prune", "quality", "generate", "score", "seconds",
              "engine", "swapped", "start s", "gen s", "error")
    table = [header] + [(r.key, r.system, r.task, r.prompt, r.prune, r.quality, r.generate, r.score,
                         f"{r.seconds:.1f}", r.engine, r.swapped[:40], _seconds(r.engine_start_s),
                         _seconds(r.generate_s), r.error[:60]) for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip() for row in table)


def _row(store: RunStore, info, manifest: dict, key: str, quality: bool) -> CellRow:
    logged = manifest.get("cells", {}).get(info.key, {})
    current = {"generate": freshness.generation_current(store, info.key),
               "score": freshness.scores_current(store, info.key, key)}
    exists = {"generate": store.generation_path(info.key).exists(),
              "score": store.score_path(info.key).exists()}

    def state(stage: str) -> str:
        if current.get(stage):
            return "done"
        status = logged.get(stage, {}).get("status")
        if status in ("failed", "blocked"):
            return status
        if stage in current:
            return "stale" if exists[stage] else "pending"
        return status or "pending"

    errors = [logged[s].get("error", "") for s in ("prune", "quality", "generate", "score")  # root cause first
              if logged.get(s, {}).get("status") in ("failed", "blocked")]
    seconds = sum(float(s.get("seconds", 0)) for s in logged.values())
    return CellRow(info.key, info.system, info.task, info.prompt, state("prune"),
                   state("quality") if quality else "-", state("generate"), state("score"), seconds,
                   errors[0] if errors else "", **_engine_columns(logged.get("generate", {})))


def _engine_columns(generation: dict) -> dict:
    """The engine that generated a cell, as logged in the manifest."""
    swapped = "" if "swapped" not in generation else (
        "yes" if generation["swapped"] else f"no: {generation.get('not_swapped') or 'first checkpoint'}")
    return {"engine": generation.get("engine", ""), "swapped": swapped,
            "engine_start_s": generation.get("engine_start_s"), "generate_s": generation.get("generate_s")}


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def _weight_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in Path(directory).glob("*.safetensors"))


def rows_as_json(rows: list[CellRow]) -> str:
    return json.dumps([r.__dict__ for r in rows], indent=2)
