"""The one freshness rule: an artifact is current when the input key stamped into it equals
the key computed now. ``prunescope run`` (to skip work) and ``prunescope status`` (to show
it) ask these functions; the manifest only logs outcomes.

Where each stamp lives:

- pruned checkpoint: ``.job-key`` beside the weights (written after the folder is complete);
- dense identity and perplexity: the ``key`` field inside identity.json / perplexity.json;
- generations: the file is named by the cell key, which hashes every input of generation;
- quality results: the ``key`` of each task and corpus entry inside quality.json (checkpoint
  key, task files' or corpus text's hash, lm-eval's version, the settings that change a
  result), so adding a task computes that task alone;
- scores: the parquet metadata ``inputs`` = {scorer key, generations key}, where the
  generations key is a hash of the generations file's bytes, so a hand-edited record makes
  its scores stale.
"""

from __future__ import annotations

from harness.hashing import content_key, hash_file
from harness.store import RunStore


def checkpoint_current(store: RunStore, model: str, folder: str, key: str) -> bool:
    return store.read_job_key(model, folder) == key


def report_current(store: RunStore, model: str, folder: str, name: str, key: str) -> bool:
    """A checkpoint report (identity.json, perplexity.json) stamped with ``key``."""
    report = store.read_checkpoint_report(model, folder, name)
    return report is not None and report.get("key") == key


def quality_current(store: RunStore, model: str, folder: str, key: str, config_dir, config,
                    settings) -> bool:
    """Every quality entry the study names is stamped with its key computed now (and none
    it no longer names is left). ``config_dir`` holds the checkpoint's config.json."""
    from harness.quality.stage import plan_quality

    return plan_quality(store.checkpoint_dir(model, folder), config_dir, key, config, settings).current


def generation_current(store: RunStore, cell_key: str) -> bool:
    return store.generation_path(cell_key).exists()


def generations_key(store: RunStore, cell_key: str) -> str:
    return hash_file(store.generation_path(cell_key))


def score_inputs(store: RunStore, cell_key: str, scorer_key: str) -> dict:
    """The stamp a score file of this cell must carry to be current."""
    return {"scorer_key": scorer_key, "generations_key": generations_key(store, cell_key)}


def scores_current(store: RunStore, cell_key: str, scorer_key: str) -> bool:
    if not generation_current(store, cell_key):
        return False
    meta = store.read_scores_metadata(cell_key)
    return meta is not None and meta.get("inputs") == score_inputs(store, cell_key, scorer_key)


def settings_key(settings: dict) -> str:
    return content_key(settings)
