"""Read a run directory's artifacts into tidy DataFrames, each pruned cell paired with its
dense baseline per document.

Only artifacts are read, through ``harness.store.RunStore`` (cells, score files, generations,
checkpoint reports); a missing score file is described in ``RunData.missing`` rather than
raised, so a partial run still gets a report that says, at its top, what it lacks. A damaged
artifact is an ``ArtifactError`` naming its path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from pydantic import ValidationError

from harness.records import CellInfo
from harness.store import ArtifactError, RunStore

# Columns that identify a cell in every table built from a run.
CELL_COLUMNS = ["cell", "model", "method", "sparsity", "structure", "owl", "recovery", "label",
                "system", "task", "prompt"]


@dataclass
class RunData:
    store: RunStore
    cells: dict[str, CellInfo]
    tidy: pd.DataFrame  # CELL_COLUMNS + doc_id, metric, value: a row per cell x document x metric
    paired: pd.DataFrame  # CELL_COLUMNS + baseline, doc_id, metric, pruned, dense
    unpaired: pd.DataFrame  # cell, baseline, missing_in ("dense" or "pruned"), doc_id
    missing: list[str] = field(default_factory=list)  # what the run lacks, in words
    # Recovered cells paired with their pruned parent, in ``paired``'s shape ("dense" and
    # "baseline" there are the parent's): the comparisons "recovered vs its pruned model".
    recovered_paired: pd.DataFrame | None = None

    @property
    def root(self) -> Path:
        return self.store.root

    def score_file(self, cell: str) -> str:
        """The run-relative path of a cell's score file (how reports cite it)."""
        return self.store.relative(self.store.score_path(cell))


def cell_row(info: CellInfo) -> dict:
    p = info.prune
    return {"cell": info.key, "model": info.model, "method": p.method, "sparsity": p.sparsity,
            "structure": p.structure, "owl": p.owl, "recovery": info.recovery or "",
            "label": info.label, "system": info.system,
            "task": info.task, "prompt": info.prompt}


def numeric_scores(store: RunStore, cell_key: str) -> pd.DataFrame:
    """One cell's score table with numeric columns as floats (``empty`` becomes 0/1)."""
    frame, _ = store.read_scores(cell_key)
    path = store.score_path(cell_key)
    if "doc_id" not in frame.columns:
        raise ArtifactError(f"{path}: field doc_id: column missing")
    if frame["doc_id"].duplicated().any():
        dup = frame.loc[frame["doc_id"].duplicated(), "doc_id"].iloc[0]
        raise ArtifactError(f"{path}: record doc_id={dup!r}: field doc_id: duplicated")
    values = frame.drop(columns="doc_id").select_dtypes(include=["number", "bool"]).astype(float)
    values.insert(0, "doc_id", frame["doc_id"].astype(str))
    return values


def analysis_settings(store: RunStore):
    """The study's ``analysis`` settings (defaults when the run has no study.yaml)."""
    from harness.config import AnalysisConfig, ConfigError

    try:
        return AnalysisConfig.model_validate(store.read_study_raw().get("analysis") or {})
    except ValueError as exc:
        raise ConfigError(f"{store.study_yaml}: analysis: {exc}") from None


def load_run(run_dir: str | Path | RunStore) -> RunData:
    """Load every scored cell; pair each pruned cell with its dense baseline per document."""
    store = run_dir if isinstance(run_dir, RunStore) else RunStore(run_dir)
    cells = store.read_cells()
    missing: list[str] = []
    scores = {}  # cell key -> long frame (doc_id, metric, value) of that cell alone
    for key, info in cells.items():
        if not store.score_path(key).exists():
            missing.append(f"{_describe(info)}: {store.relative(store.score_path(key))} not found "
                           "(not scored yet?)")
            continue
        wide = numeric_scores(store, key)
        scores[key] = wide.melt(id_vars="doc_id", var_name="metric", value_name="value").dropna(subset=["value"])
    columns = CELL_COLUMNS + ["doc_id", "metric", "value"]
    names = _told_apart(cells, scores, missing)
    frames = [frame.assign(**{**cell_row(cells[key]), **names.get(key, {})}) for key, frame in scores.items()]
    tidy = pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)
    paired, unpaired = _pair(store, cells, scores, missing, lambda info: info.baseline_key or _dense_of(cells, info),
                             names=names)
    recovered = {k: c for k, c in cells.items() if c.recovery}
    parents, _ = _pair(store, recovered, scores, missing, lambda info: info.parent_key, partner="pruned parent",
                       names=names)
    return RunData(store, cells, tidy, paired, unpaired, missing, parents)


def _told_apart(cells: dict[str, CellInfo], scores: dict, missing: list[str]) -> dict[str, dict]:
    """Label and system names for scored cells that share a system, task and prompt (a run
    folder holding cells of other settings of the study, or of another study): each gets its
    cell key's start appended, so tables keep one row per cell, and ``missing`` says so."""
    groups: dict[tuple, list[str]] = {}
    for key in scores:
        info = cells[key]
        groups.setdefault((info.system, info.task, info.prompt), []).append(key)
    names = {}
    for (system, task, prompt), keys in groups.items():
        if len(keys) < 2:
            continue
        for key in keys:
            names[key] = {"label": f"{cells[key].label} [{key[:6]}]", "system": f"{system} [{key[:6]}]"}
        missing.append(f"{len(keys)} scored cells are {system} on task {task!r}, prompt {prompt!r} "
                       f"({', '.join(sorted(keys))}: made with other settings or by another study); "
                       "each is reported apart, named with its cell key")
    return names


def _pair(store: RunStore, cells: dict[str, CellInfo], scores: dict[str, pd.DataFrame], missing: list[str],
          baseline_of, partner: str = "dense", names: dict | None = None):
    """Each non-dense cell's scores beside those of the cell ``baseline_of(info)`` names."""
    pairs, unpaired = [], []
    for key, info in cells.items():
        if info.prune.method == "dense" or key not in scores:
            continue
        baseline = baseline_of(info)
        if baseline is None or baseline not in scores:
            why = (f"the study has no {partner} cell for it" if baseline is None
                   else f"{store.relative(store.score_path(baseline))} is missing" if baseline in cells
                   else f"its baseline cell {baseline} has no {store.relative(store.cell_path(baseline))}")
            missing.append(f"{_describe(info)}: no {partner} baseline scores for model {info.model!r}, "
                           f"task {info.task!r}, prompt {info.prompt!r} ({why}); its risk ratios "
                           "against it are left out")
            continue
        pruned, dense = scores[key], scores[baseline]
        docs_p, docs_d = set(pruned["doc_id"].tolist()), set(dense["doc_id"].tolist())
        for side, docs in (("dense", docs_p - docs_d), ("pruned", docs_d - docs_p)):
            unpaired += [{"cell": key, "baseline": baseline, "missing_in": side, "doc_id": d} for d in sorted(docs)]
        if docs_p ^ docs_d:
            missing.append(f"{_describe(info)}: {len(docs_p - docs_d)} document(s) not in the {partner} "
                           "baseline, "
                           f"{len(docs_d - docs_p)} {partner} document(s) not in this cell; "
                           "they are left out of its comparisons")
        merged = pruned.merge(dense, on=["doc_id", "metric"], suffixes=("", "_dense"))
        merged = merged.rename(columns={"value": "pruned", "value_dense": "dense"})
        pairs.append(merged.assign(**{**cell_row(info), **(names or {}).get(key, {})}, baseline=baseline))
    columns = CELL_COLUMNS + ["baseline", "doc_id", "metric", "pruned", "dense"]
    paired = pd.concat(pairs, ignore_index=True)[columns] if pairs else pd.DataFrame(columns=columns)
    return paired, pd.DataFrame(unpaired, columns=["cell", "baseline", "missing_in", "doc_id"])


def _dense_of(cells: dict[str, CellInfo], info: CellInfo) -> str | None:
    for key, other in cells.items():
        if (other.prune.method == "dense" and other.model == info.model
                and other.task == info.task and other.prompt == info.prompt):
            return key
    return None


def _describe(info: CellInfo) -> str:
    return f"cell {info.key} ({info.system}, task {info.task}, prompt {info.prompt})"
