"""Read a run directory's artifacts into tidy DataFrames, each pruned cell paired with its
dense baseline per document.

Only artifacts are read (``cells/``, ``scores/``, ``generations/``, ``checkpoints/*/*/*.json``);
what is missing is described in ``RunData.missing`` rather than raised, so a partial run still
gets a report that says what it lacks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from pydantic import ValidationError

from harness.errors import PrunescopeError
from harness.records import CellInfo

# Columns that identify a cell in every table built from a run.
CELL_COLUMNS = ["cell", "model", "method", "sparsity", "structure", "owl", "label", "system",
                "task", "prompt"]


class RunDataError(PrunescopeError):
    """A run directory whose artifacts cannot be read."""


@dataclass
class RunData:
    root: Path
    cells: dict[str, CellInfo]
    tidy: pd.DataFrame  # CELL_COLUMNS + doc_id, metric, value: a row per cell x document x metric
    paired: pd.DataFrame  # CELL_COLUMNS + baseline, doc_id, metric, pruned, dense
    unpaired: pd.DataFrame  # cell, baseline, missing_in ("dense" or "pruned"), doc_id
    missing: list[str] = field(default_factory=list)  # what the run lacks, in words

    def score_file(self, cell: str) -> str:
        return f"scores/{cell}.parquet"


def cell_row(info: CellInfo) -> dict:
    p = info.prune
    return {"cell": info.key, "model": info.model, "method": p.method, "sparsity": p.sparsity,
            "structure": p.structure, "owl": p.owl, "label": p.label, "system": info.system,
            "task": info.task, "prompt": info.prompt}


def read_cells(root: Path) -> dict[str, CellInfo]:
    paths = sorted((root / "cells").glob("*.json"))
    if not paths:
        raise RunDataError(f"{root}: no cells/*.json; is this a prunescope run directory?")
    cells = {}
    for path in paths:
        try:
            info = CellInfo.model_validate_json(path.read_text(encoding="utf-8"))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            raise RunDataError(f"{path}: field {where}: {err['msg']}") from None
        cells[info.key] = info
    return cells


def read_scores(path: Path) -> pd.DataFrame:
    """One cell's score table with numeric columns as floats (``empty`` becomes 0/1)."""
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise RunDataError(f"{path}: cannot read parquet: {exc}") from None
    if "doc_id" not in frame.columns:
        raise RunDataError(f"{path}: field doc_id: column missing")
    if frame["doc_id"].duplicated().any():
        dup = frame.loc[frame["doc_id"].duplicated(), "doc_id"].iloc[0]
        raise RunDataError(f"{path}: record doc_id={dup!r}: field doc_id: duplicated")
    values = frame.drop(columns="doc_id").select_dtypes(include=["number", "bool"]).astype(float)
    values.insert(0, "doc_id", frame["doc_id"].astype(str))
    return values


def read_generations(path: Path) -> dict[str, str]:
    """doc_id -> generated text of one cell."""
    from harness.records import read_generations as read_records

    return {record.doc_id: record.text for record in read_records(path)}


def load_run(run_dir: str | Path) -> RunData:
    """Load every scored cell; pair each pruned cell with its dense baseline per document."""
    root = Path(run_dir)
    cells = read_cells(root)
    missing: list[str] = []
    scores = {}  # cell key -> long frame (doc_id, metric, value) of that cell alone
    for key, info in cells.items():
        path = root / "scores" / f"{key}.parquet"
        if not path.exists():
            missing.append(f"{_describe(info)}: scores/{key}.parquet not found (not scored yet?)")
            continue
        wide = read_scores(path)
        scores[key] = wide.melt(id_vars="doc_id", var_name="metric", value_name="value").dropna(subset=["value"])
    columns = CELL_COLUMNS + ["doc_id", "metric", "value"]
    frames = [frame.assign(**cell_row(cells[key])) for key, frame in scores.items()]
    tidy = pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)
    paired, unpaired = _pair(cells, scores, missing)
    return RunData(root, cells, tidy, paired, unpaired, missing)


def _pair(cells: dict[str, CellInfo], scores: dict[str, pd.DataFrame], missing: list[str]):
    pairs, unpaired = [], []
    for key, info in cells.items():
        if info.prune.method == "dense" or key not in scores:
            continue
        baseline = info.baseline_key or _dense_of(cells, info)
        if baseline is None or baseline not in scores:
            why = ("the study has no dense cell for it" if baseline is None
                   else f"scores/{baseline}.parquet is missing" if baseline in cells
                   else f"its baseline cell {baseline} has no cells/{baseline}.json")
            missing.append(f"{_describe(info)}: no dense baseline scores for model {info.model!r}, "
                           f"task {info.task!r}, prompt {info.prompt!r} ({why}); its risk ratios are left out")
            continue
        pruned, dense = scores[key], scores[baseline]
        docs_p, docs_d = set(pruned["doc_id"].tolist()), set(dense["doc_id"].tolist())
        for side, docs in (("dense", docs_p - docs_d), ("pruned", docs_d - docs_p)):
            unpaired += [{"cell": key, "baseline": baseline, "missing_in": side, "doc_id": d} for d in sorted(docs)]
        if docs_p ^ docs_d:
            missing.append(f"{_describe(info)}: {len(docs_p - docs_d)} document(s) not in the dense "
                           f"baseline, {len(docs_d - docs_p)} dense document(s) not in this cell; "
                           "they are left out of its comparisons")
        merged = pruned.merge(dense, on=["doc_id", "metric"], suffixes=("", "_dense"))
        merged = merged.rename(columns={"value": "pruned", "value_dense": "dense"})
        pairs.append(merged.assign(**cell_row(info), baseline=baseline))
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
