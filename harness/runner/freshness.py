"""The one freshness rule: an artifact is current when it is whole and the input key stamped
into it equals the key computed now. ``prunescope run`` (to skip work) and ``prunescope
status`` (to show it) ask these functions; the manifest only logs outcomes.

Where each stamp lives:

- pruned checkpoint: ``.job-key`` beside the weights (written after the folder is complete);
  its folder is named by label and key, so two specs never share one;
- dense identity and perplexity: the ``key`` field inside identity.json / perplexity.json
  (perplexity.json also names the ``checkpoint`` key it was measured on);
- generations: the file is named by the cell key, which hashes every input of generation;
- quality results: the ``key`` of each task and corpus entry inside quality.json (checkpoint
  key, task files' or corpus text's hash, lm-eval's version, the settings that change a
  result), so adding a task computes that task alone;
- scores: the parquet metadata ``inputs`` = {scorer key, generations key}, where the
  generations key is a hash of the generations file's bytes, so a hand-edited record makes
  its scores stale.

Whole means: it parses, carries the key it was made for and covers what it must. A cell file
holds its own key; a generations file holds one record per document the cell selected
(``CellInfo.doc_ids``), for the cell's prompt, made by the cell's checkpoint (its identity
hash); a score file names its cell and has a row per generated record; a pruned checkpoint's
files hash to its identity.json. A parseable, complete artifact that was edited by hand is
whole: it stays current and its edit reaches what is computed from it. Anything else is
*damaged*: ``status`` shows it with the reason, and ``prunescope run`` moves it aside
(``repair``) and recomputes it, so a damaged run ends equal to an undamaged one.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from harness.hashing import content_key, hash_checkpoint, hash_file
from harness.records import CellInfo, ModelIdentity
from harness.store import ArtifactError, RunStore, read_record

CURRENT, MISSING, STALE, DAMAGED = "current", "missing", "stale", "damaged"


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")  # what a checkpoint folder holds as weights


def weight_files(directory: Path) -> list[Path]:
    """The weight files of a checkpoint folder (its reports and configs excluded)."""
    return [p for p in directory.iterdir() if p.suffix in WEIGHT_SUFFIXES]


@dataclass(frozen=True)
class Check:
    """One artifact's state; ``reason`` (for damaged ones) names the path and what is wrong,
    ``path`` is what a repair moves aside."""

    state: str
    reason: str = ""
    path: Path | None = None

    @property
    def current(self) -> bool:
        return self.state == CURRENT


def _damaged(path: Path, why: str) -> Check:
    return Check(DAMAGED, f"{path}: {why}", path)


# --- cells ----------------------------------------------------------------------------------
def read_cell(store: RunStore, cell_key: str) -> tuple[CellInfo | None, Check]:
    """The cell's record if its file is whole (it parses and holds this very cell)."""
    path = store.cell_path(cell_key)
    if not path.exists():
        return None, Check(MISSING, path=path)
    try:
        info = read_record(path, CellInfo)
    except ArtifactError as exc:
        return None, Check(DAMAGED, str(exc), path)
    if info.key != cell_key:
        return None, _damaged(path, f"holds the record of another cell ({info.key})")
    return info, Check(CURRENT)


# --- checkpoints ----------------------------------------------------------------------------
def checkpoint_current(store: RunStore, model: str, folder: str, key: str) -> bool:
    """The folder's key stamp names this very job (the deep check is ``checkpoint_check``)."""
    return store.read_job_key(model, folder) == key


def checkpoint_check(store: RunStore, model: str, folder: str, key: str | None, pruned: bool,
                     hash_cache: dict | None = None) -> Check:
    """A checkpoint folder: a pruned one is stamped with ``key`` (None: a run from before
    keyed folders, stamp not judged), its reports parse, and its weights (while kept) hash to
    its identity; the dense folder holds a readable identity.json."""
    directory = store.checkpoint_dir(model, folder)
    identity_path = store.checkpoint_report_path(model, folder, "identity.json")
    if not pruned:
        if not identity_path.exists():
            return Check(MISSING, path=identity_path)
        try:
            read_record(identity_path, ModelIdentity)
        except ArtifactError as exc:
            return Check(DAMAGED, str(exc), identity_path)
        return Check(CURRENT)
    stamp = store.read_job_key(model, folder)
    if stamp is None:
        return Check(MISSING, path=directory)
    if key is not None and stamp != key:
        return _damaged(directory, f"{store.job_key_path(model, folder).name} names checkpoint {stamp}, "
                                   f"not {key}")
    try:
        identity = read_record(identity_path, ModelIdentity)
        sparsity = store.read_checkpoint_report(model, folder, "sparsity.json")
    except ArtifactError as exc:
        return Check(DAMAGED, str(exc), directory)
    if not isinstance(sparsity, dict) and not (directory / "adapter_config.json").exists():
        return _damaged(directory, "sparsity.json missing or not a JSON object")
    weights = weight_files(directory)
    if weights and not (directory / "adapter_config.json").exists():  # a LoRA identity hashes two folders
        found = hash_checkpoint(directory, hash_cache)
        if found != identity.checkpoint_hash:
            return _damaged(directory, f"its files hash to {found}, identity.json says {identity.checkpoint_hash}")
    return Check(CURRENT)


def report_current(store: RunStore, model: str, folder: str, name: str, key: str) -> bool:
    """A checkpoint report (identity.json, perplexity.json) stamped with ``key``."""
    try:
        report = store.read_checkpoint_report(model, folder, name)
    except ArtifactError:
        return False
    return isinstance(report, dict) and report.get("key") == key


def perplexity_check(store: RunStore, model: str, folder: str, checkpoint: str | None) -> Check:
    """perplexity.json parses, carries a key and was measured on this ``checkpoint`` (when
    known); whether its key is the one computed now is ``report_current``."""
    path = store.checkpoint_report_path(model, folder, "perplexity.json")
    if not path.exists():
        return Check(MISSING, path=path)
    try:
        report = store.read_checkpoint_report(model, folder, "perplexity.json")
    except ArtifactError as exc:
        return Check(DAMAGED, str(exc), path)
    if not isinstance(report, dict) or not {"key", "perplexity"} <= report.keys():
        return _damaged(path, "not a perplexity report (no key or perplexity field)")
    if checkpoint is not None and report.get("checkpoint") != checkpoint:
        return _damaged(path, f"measured on checkpoint {report.get('checkpoint')}, not {checkpoint}")
    return Check(CURRENT)


def quality_current(store: RunStore, model: str, folder: str, key: str, config_dir, config,
                    settings) -> bool:
    """Every quality entry the study names is stamped with its key computed now (and none
    it no longer names is left). ``config_dir`` holds the checkpoint's config.json."""
    from harness.quality.stage import plan_quality

    return plan_quality(store.checkpoint_dir(model, folder), config_dir, key, config, settings).current


# --- generations and scores -----------------------------------------------------------------
def generation_check(store: RunStore, info: CellInfo, by_checkpoint: bool = True) -> Check:
    """The cell's generations: parseable, a record per selected document and none else, for
    the cell's prompt, made by the cell's checkpoint (unless ``by_checkpoint`` is False: its
    identity is itself damaged)."""
    path = store.generation_path(info.key)
    if not path.exists():
        return Check(MISSING, path=path)
    try:
        records = store.read_generations(info.key)
    except Exception as exc:  # noqa: BLE001 - RecordError, or a file that is not text
        return _damaged(path, str(exc).removeprefix(f"{path}: "))
    ids = Counter(r.doc_id for r in records)
    if twice := sorted(d for d, n in ids.items() if n > 1):
        return _damaged(path, f"document {twice[0]} has {ids[twice[0]]} records")
    if info.doc_ids and set(ids) != set(info.doc_ids):
        extra = sorted(set(ids) - set(info.doc_ids))
        return _damaged(path, f"{len(set(ids) & set(info.doc_ids))} of {len(info.doc_ids)} selected documents"
                              + (f"; records for other documents ({extra[0]}...)" if extra else ""))
    if prompts := sorted({r.prompt_id for r in records} - {info.prompt}):
        return _damaged(path, f"made for prompt {prompts[0]}, the cell's is {info.prompt}")
    made_by = {r.model.checkpoint_hash for r in records}
    identity = _identity_hash(store, info) if by_checkpoint else None
    if identity is not None and made_by - {identity}:
        return _damaged(path, f"made by checkpoint {sorted(made_by - {identity})[0]}, the cell's is {identity}")
    return Check(CURRENT)


def _identity_hash(store: RunStore, info: CellInfo) -> str | None:
    if info.checkpoint is None:
        return None
    try:
        return store.read_identity(info.model, info.folder).checkpoint_hash
    except ArtifactError:
        return None


def generation_current(store: RunStore, cell_key: str) -> bool:
    info, _ = read_cell(store, cell_key)
    return info is not None and generation_check(store, info).current


def generations_key(store: RunStore, cell_key: str) -> str:
    return hash_file(store.generation_path(cell_key))


def score_inputs(store: RunStore, cell_key: str, scorer_key: str) -> dict:
    """The stamp a score file of this cell must carry to be current."""
    return {"scorer_key": scorer_key, "generations_key": generations_key(store, cell_key)}


def scores_check(store: RunStore, info: CellInfo, scorer_key: str, generations: Check | None = None) -> Check:
    """The cell's score file: parseable, made for this cell, a row per generated record, and
    stamped with this scorer key and these generations (else stale)."""
    path = store.score_path(info.key)
    if not path.exists():
        return Check(MISSING, path=path)
    try:
        frame, meta = store.read_scores(info.key)
    except ArtifactError as exc:
        return Check(DAMAGED, str(exc), path)
    made_for = (meta.get("cell") or {}).get("key") if isinstance(meta.get("cell"), dict) else None
    if made_for != info.key:
        return _damaged(path, f"holds the scores of cell {made_for}")
    generations = generations or generation_check(store, info)
    if not generations.current:
        return Check(STALE, path=path)
    generated = Counter(r.doc_id for r in store.read_generations(info.key))
    rows = Counter(frame["doc_id"].astype(str)) if "doc_id" in frame.columns else Counter()
    if rows != generated:
        return _damaged(path, f"{sum(rows.values())} rows for {sum(generated.values())} generated records")
    if meta.get("inputs") != score_inputs(store, info.key, scorer_key):
        return Check(STALE, path=path)
    return Check(CURRENT)


def scores_current(store: RunStore, cell_key: str, scorer_key: str) -> bool:
    info, _ = read_cell(store, cell_key)
    return info is not None and scores_check(store, info, scorer_key).current


def settings_key(settings: dict) -> str:
    return content_key(settings)


# --- the whole run --------------------------------------------------------------------------
def damage(store: RunStore, plan, hash_cache: dict | None = None) -> list[Check]:
    """Every damaged artifact of the run directory that ``plan`` (a ``StudyPlan``) would use:
    the manifest, its cells, checkpoints and their perplexity reports, generations, scores
    and the report, each with its reason."""
    found, broken = [], set()  # broken: keys of damaged checkpoints
    if (why := store.manifest_damage()) is not None:
        found.append(Check(DAMAGED, why, store.manifest_path))
    for job in plan.checkpoints:
        check = checkpoint_check(store, job.model, job.folder, job.key, job.spec is not None, hash_cache)
        found.append(check)
        if check.state == DAMAGED:
            broken.add(job.key)
        if check.state != DAMAGED or check.path.is_file():
            found.append(perplexity_check(store, job.model, job.folder, job.key))
    for cell in plan.cells:
        _, check = read_cell(store, cell.info.key)
        found.append(check)
        generations = generation_check(store, cell.info, cell.checkpoint.key not in broken)
        found += [generations, scores_check(store, cell.info, "", generations)]
    if (why := store.report_damage()) is not None:
        found.append(Check(DAMAGED, why, store.report_dir))
    return [c for c in found if c.state == DAMAGED]


def repair(store: RunStore, plan, started: str, hash_cache: dict | None = None) -> list[Check]:
    """Move every damaged artifact ``damage`` finds to ``damaged/<started>/`` so the run
    recomputes it; returns them (the caller logs each)."""
    found = damage(store, plan, hash_cache)
    for check in found:
        if check.path.exists():
            store.quarantine(check.path, started)
    return found
