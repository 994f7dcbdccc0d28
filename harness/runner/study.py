"""Run a study: plan the grid, run its stages with an executor, then write the report.

``run_study`` is what ``prunescope run`` calls; it holds the run directory's lock for the
whole run, records every stage of every cell in ``manifest.json`` (status, seconds, error
and traceback) and logs to ``run.log``.
"""

from __future__ import annotations

import logging
import os
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from harness.config import StudyConfig, load_study
from harness.errors import PrunescopeError, read_text
from harness.models import downloads_allowed
from harness.runner import freshness, stages
from harness.runner.executors import EXECUTORS, Outcome
from harness.runner.progress import Progress
from harness.runner.stages import STAGES
from harness.runner.plan import StudyPlan, limited_study, plan_study, scorer_key
from harness.store import RunStore, provenance

log = logging.getLogger("prunescope")


@dataclass
class RunResult:
    run_dir: Path
    outcomes: list[Outcome] = field(default_factory=list)
    report: Path | None = None
    repaired: list[str] = field(default_factory=list)  # damaged artifacts moved aside and recomputed

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status in ("failed", "blocked")]


def run_dir_for(study: StudyConfig, out: str | Path | None = None, limit: int | None = None) -> Path:
    """The study's run directory; a ``limit`` smoke run gets its own inside it
    (``RunStore.limited``), so it never overwrites the full run's artifacts."""
    return RunStore(out or study.out or Path("runs") / study.name).limited(limit).root


def run_study(study: StudyConfig | str | Path, out: str | Path | None = None, *,
              limit: int | None = None, stage: str | None = None, executor: str | None = None,
              show_progress: bool = True, report: bool = True, add: bool = False) -> RunResult:
    """Run (or resume) a study; complete cells are skipped, failed cells reported.

    ``stage`` runs one of ``prune``, ``quality``, ``generate``, ``score``, ``report`` alone;
    ``report=False`` leaves the report for later (e.g. after an annotation round);
    ``show_progress``: counts and ETA per stage (``harness.runner.progress``). A study
    with quality tasks is refused before any work when lm-eval is not installed. A run
    folder made for a study of another name, or a non-empty folder that is no run folder, is
    refused unless ``add`` (``check_run_dir``)."""
    if not isinstance(study, StudyConfig):
        study = load_study(study)
    if limit is not None and limit < 1:
        raise PrunescopeError(f"limit must be at least 1 document per task (got {limit}); "
                              "leave it out to run the whole study")
    if not downloads_allowed(study.allow_downloads):  # models and datasets: local files only
        os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
    if stage is not None and stage not in STAGES:
        raise ValueError(f"stage must be one of {', '.join(STAGES)} (got {stage!r})")
    if stage in (None, "quality"):
        from harness.quality.stage import check_available

        check_available(study)
    store = RunStore(run_dir_for(study, out, limit))
    study = limited_study(study, limit)  # its study.yaml says what it ran
    result = RunResult(store.root)
    if not add and store.root.is_dir():
        check_run_dir(store, study)
    quiet_libraries()
    with store.lock():
        handler = _log_to(store.log_path)
        try:
            _run_locked(store, study, result, limit, stage, executor or study.executor, show_progress, report)
        finally:
            log.removeHandler(handler)
            handler.close()
    return result


def check_run_dir(store: RunStore, study: StudyConfig) -> None:
    """Refuse to run ``study`` into a folder made for a study of another name, or into a
    non-empty folder that is no run folder (PrunescopeError naming the folder; ``--add``
    overrides). The same study with changed settings is a normal rerun."""
    made_for = store.read_study_name()
    if made_for is None:
        limited = set(store.limited_runs())
        others = sorted(p.name for p in store.root.iterdir()
                        if p.name not in (".lock", store.log_path.name) and p not in limited)
        if others:
            shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
            raise PrunescopeError(f"{store.root}: not empty ({shown}) and not a prunescope run folder "
                                  f"(no {store.study_yaml.name}); choose another --out, or pass --add "
                                  "to write the run into it")
    elif made_for != study.name:
        raise PrunescopeError(f"{store.study_yaml}: name: this run folder holds study {made_for!r}, not "
                              f"{study.name!r}; choose another --out, or pass --add to add this study's "
                              "cells to it")


def _run_locked(store, study, result, limit, stage, executor, show_progress, report):
    """``study`` is already capped at ``limit`` (named in messages only)."""
    hashes = store.read_manifest(damaged_ok=True).get("checkpoint_hashes", {})  # repaired below
    plan = plan_study(study, None, hashes)
    text = _perplexity_text(study, plan)
    if stage in (None, "prune"):
        check_perplexity_text(study, plan, text, limit)
    store.write_study(study)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    damaged = freshness.repair(store, plan, started, hashes)
    store.update_manifest(provenance=provenance({"generation": study.generation.seed,
                                                 "analysis": study.analysis.seed}),
                          checkpoint_hashes=hashes)
    for check in damaged:  # moved aside: recomputed below, and said so
        log.warning("damaged, recomputing: %s", check.reason)
        result.repaired.append(check.reason)
    for name, data in plan.tasks.items():
        for problem in data.skipped:
            log.warning("task %s: record left out (on_bad_record: skip): %s", name, problem)
    stages.write_cell_files(store, plan.cells)
    log.info("study %s: %d checkpoints, %d cells -> %s", study.name, len(plan.checkpoints),
             len(plan.cells), store.root)

    def record(outcome: Outcome) -> None:
        result.outcomes.append(outcome)
        if outcome.stage == "engine":  # an engine start: the manifest's engine log, not a cell
            store.update_manifest(engines={outcome.key: {"seconds": outcome.seconds, **outcome.details}})
        else:
            store.record_stage(outcome.key, outcome.stage, outcome.status, seconds=outcome.seconds,
                               **outcome.details)
        level = logging.ERROR if outcome.status in ("failed", "blocked") else logging.INFO
        log.log(level, "%s %s %s %s", outcome.key, outcome.stage, outcome.status,
                outcome.details.get("error", ""))

    if stage != "report":
        progress = Progress(len(plan.cells), f"{study.name} cells", enabled=show_progress)
        try:
            ctx = stages.RunContext(store, study, plan.tasks, text, scorer_key(study.scoring), stage)
            EXECUTORS[executor](ctx, plan, record=record, progress=progress)
        finally:
            progress.close()
    if report and stage in (None, "report"):
        try:
            from analysis.report import write_report

            result.report = write_report(store.root)
        except Exception as exc:  # noqa: BLE001 - the cells' results stay; the report can be rerun
            record(Outcome("study", "report", "failed", details={
                "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}))


def check_perplexity_text(study: StudyConfig, plan: StudyPlan, text: str, limit: int | None) -> None:
    """Refuse, before any work, a perplexity text shorter than one window of
    ``perplexity.seqlen`` tokens for some model's tokenizer; the message says what to change."""
    from transformers import AutoTokenizer

    seqlen = study.perplexity.seqlen
    for job in plan.checkpoints:
        if job.spec is not None:
            continue
        tokens = len(AutoTokenizer.from_pretrained(job.dense_dir)(text, verbose=False)["input_ids"])
        if tokens < seqlen:
            source = (f"perplexity.text ({study.perplexity.text})" if study.perplexity.text is not None else
                      f"the documents of task {study.tasks[0].name!r}"
                      + (f" with --limit {limit}" if limit is not None else ""))
            raise PrunescopeError(
                f"perplexity.seqlen: {source}: {tokens} tokens for model {job.model!r}, fewer than one "
                f"window of {seqlen}; set perplexity.seqlen to at most {tokens}, give a longer perplexity.text"
                + (", or raise --limit" if limit is not None else ""))


def _perplexity_text(study: StudyConfig, plan: StudyPlan) -> str:
    if study.perplexity.text is not None:
        return read_text(study.perplexity.text, "perplexity text")
    first = plan.tasks[study.tasks[0].name]
    return "\n\n".join(dict.fromkeys(r.document for r in first.records))


def _log_to(path: Path) -> logging.Handler:
    """Stage outcomes go to run.log (the progress display shows counts; failures are printed
    at the end), not to whatever console handler a library installed on the root logger."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    return handler


def quiet_libraries() -> None:
    """The run's own progress display instead of a bar per model load."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
