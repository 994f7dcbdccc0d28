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
    store = RunStore(run_dir_for(study, out, limit))
    manifest = store.read_manifest(damaged_ok=True)
    plan = plan_study(study, limit, dict(manifest.get("checkpoint_hashes", {})))
    key = scorer_key(study.scoring)
    judge = _Judge(store, manifest, key, study.quality.enabled)
    rows = [judge.row(cell.info) for cell in plan.cells]
    estimate = 0
    for job in plan.checkpoints:
        if job.spec is not None and not is_pruned(store, job):
            estimate += _weight_bytes(job.dense_dir)
    for cell in plan.cells:
        if not freshness.generation_check(store, cell.info).current:
            estimate += _BYTES_PER_GENERATION * len(plan.tasks[cell.info.task].records)
    return rows, estimate


def run_status(run_dir: str | Path) -> list[CellRow]:
    """Each cell of a run directory with its stages' states, seconds and last error; a score
    is "done" only when current under the run's study.yaml scoring settings. A damaged
    artifact (``harness.runner.freshness``) shows as "damaged" with its reason; so do a damaged
    manifest or report, and a missing or damaged cell file, each in a row of its own."""
    store = RunStore(run_dir)
    if not store.has_cells():
        raise PrunescopeError(f"{store.root}: not a prunescope run directory (no cells folder)")
    raw = store.read_study_raw()
    scoring = ScoringConfig.model_validate(raw.get("scoring") or {})
    quality = QualityConfig.model_validate(raw.get("quality") or {}).enabled
    judge = _Judge(store, store.read_manifest(damaged_ok=True), scorer_key(scoring), quality)
    rows = []
    for run_file, why in (("manifest.json", store.manifest_damage()), ("report", store.report_damage())):
        if why is not None:
            rows.append(_damaged_row(store, run_file, "-", why))
    keys = store.cell_keys()
    for key in sorted((set(store.generation_keys()) | set(store.score_keys())) - set(keys)):
        rows.append(_damaged_row(store, key, "damaged", f"{store.cell_path(key)}: missing, "
                                                        "though the cell's generations or scores exist"))
    for key in keys:
        info, check = freshness.read_cell(store, key)
        rows.append(judge.row(info) if info else _damaged_row(store, key, "damaged", check.reason))
    return rows


def format_rows(rows: list[CellRow]) -> str:
    header = ("cell", "system", "task", "prompt", "prune", "quality", "generate", "score", "seconds",
              "engine", "swapped", "start s", "gen s", "error")
    table = [header] + [(r.key, r.system, r.task, r.prompt, r.prune, r.quality, r.generate, r.score,
                         f"{r.seconds:.1f}", r.engine, r.swapped[:40], _seconds(r.engine_start_s),
                         _seconds(r.generate_s), r.error if r.error.startswith(_DAMAGED) else r.error[:60])
                        for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip() for row in table)


_DAMAGED = "damaged: "


def _damaged_row(store: RunStore, key: str, state: str, why: str) -> CellRow:
    """A row for damage that is not one stage's of a readable cell (state "-" for run files)."""
    return CellRow(key, "?", "?", "?", state, "-", state, state, 0.0, _DAMAGED + _relative(store, why))


def _relative(store: RunStore, text: str) -> str:
    return text.replace(f"{store.root}/", "")


class _Judge:
    """States of cells' stages by the freshness checks, with the manifest's logged outcomes."""

    def __init__(self, store: RunStore, manifest: dict, key: str, quality: bool):
        self.store, self.manifest, self.key, self.quality = store, manifest, key, quality
        self.hashes = dict(manifest.get("checkpoint_hashes", {}))
        self.checkpoints: dict = {}  # (model, folder) -> Check, shared by a checkpoint's cells

    def checkpoint(self, info) -> freshness.Check:
        where = (info.model, info.folder)
        if where not in self.checkpoints:
            check = freshness.checkpoint_check(self.store, info.model, info.folder, info.checkpoint,
                                               info.prune.method != "dense", self.hashes)
            if check.state == freshness.CURRENT:
                perplexity = freshness.perplexity_check(self.store, info.model, info.folder, info.checkpoint)
                check = perplexity if perplexity.state != freshness.CURRENT else check
            self.checkpoints[where] = check
        return self.checkpoints[where]

    def row(self, info) -> CellRow:
        logged = self.manifest.get("cells", {}).get(info.key, {})
        prune = self.checkpoint(info)
        generate = freshness.generation_check(self.store, info, prune.state != freshness.DAMAGED)
        checks = {"prune": prune, "generate": generate,
                  "score": freshness.scores_check(self.store, info, self.key, generate)}

        for stage, check in checks.items():  # gone after the log says it was made: deleted
            made = logged.get(stage, {}).get("status") in ("done", "cached")
            if check.state == freshness.MISSING and made and check.path is not None:
                checks[stage] = freshness.Check(freshness.DAMAGED, f"{check.path}: missing, though the manifest "
                                                                  f"logs it {logged[stage]['status']}", check.path)

        def state(stage: str) -> str:
            check = checks.get(stage)
            if check is not None and check.state in (freshness.CURRENT, freshness.DAMAGED, freshness.STALE):
                return {freshness.CURRENT: "done"}.get(check.state, check.state)
            status = logged.get(stage, {}).get("status")
            if status in ("failed", "blocked"):
                return status
            return "pending" if check is not None else status or "pending"

        damage = [_DAMAGED + _relative(self.store, c.reason) for c in checks.values() if c.state == freshness.DAMAGED]
        errors = [logged[s].get("error", "") for s in ("prune", "quality", "generate", "score")  # root cause first
                  if logged.get(s, {}).get("status") in ("failed", "blocked")]
        seconds = sum(float(s.get("seconds", 0)) for s in logged.values() if isinstance(s, dict))
        return CellRow(info.key, info.system, info.task, info.prompt, state("prune"),
                       state("quality") if self.quality else "-", state("generate"), state("score"), seconds,
                       (damage + errors)[0] if damage + errors else "", **_engine_columns(logged.get("generate", {})))


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
