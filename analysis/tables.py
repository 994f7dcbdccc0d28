"""Per-system tables: summary quality, lexical overlap, sparsity, length and fluency, and a
few generated summaries. Each function returns (table, run-relative source files). Which
metric columns each table shows comes from the metric registry (``report`` of each entry)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.load import RunData
from harness.scoring.registry import table_columns

BASE_OUTPUT = {"summary_tokens": "length (tokens)", "empty": "empty share"}
_SYSTEM = ["task", "prompt", "model", "label", "cell"]  # cell: scores/<cell>.parquet
_ORDER = ["task", "prompt", "model", "method", "sparsity", "structure", "owl", "recovery"]


def metric_means(run: RunData, metrics: dict[str, str]) -> tuple[pd.DataFrame, list[str]]:
    """Mean of each metric per system (cell) over its scored documents, plus the count."""
    rows = run.tidy[run.tidy["metric"].isin(metrics)]
    if rows.empty:
        return pd.DataFrame(columns=_SYSTEM + ["docs", *metrics.values()]), []
    keys = [*_ORDER, "label", "cell"]
    means = rows.pivot_table(index=keys, columns="metric", values="value", aggfunc="mean")
    docs = rows.groupby(keys)["doc_id"].nunique().rename("docs")
    table = means.join(docs).reset_index().sort_values(_ORDER)
    shown = [m for m in metrics if m in table.columns]
    table = table[_SYSTEM + ["docs", *shown]].rename(columns=metrics)
    return table.reset_index(drop=True), sorted({run.score_file(c) for c in rows["cell"]})


def output_table(run: RunData) -> tuple[pd.DataFrame, list[str]]:
    """Summary length, share of empty outputs, repetition, and the checkpoint's perplexity."""
    table, sources = metric_means(run, {**BASE_OUTPUT, **table_columns("output")})
    perplexities = []
    for key in table["cell"]:
        info = run.cells[key]
        report = run.store.read_checkpoint_report(info.model, info.folder, "perplexity.json")
        perplexities.append(np.nan if report is None else report["perplexity"])
        if report is not None:
            path = run.store.checkpoint_report_path(info.model, info.folder, "perplexity.json")
            sources.append(run.store.relative(path))
    table["perplexity"] = perplexities
    return table, sorted(set(sources))


def sparsity_table(run: RunData) -> tuple[pd.DataFrame, list[str]]:
    """Target vs measured sparsity per pruned checkpoint, from its sparsity.json."""
    rows, sources = [], []
    checkpoints = {(c.model, c.folder): c for c in run.cells.values() if c.prune.method != "dense"}
    for (model, folder), cell in sorted(checkpoints.items()):
        prune = cell.prune
        rel = run.store.relative(run.store.checkpoint_report_path(model, folder, "sparsity.json"))
        found = run.store.read_checkpoint_report(model, folder, "sparsity.json")
        report = found or {}
        if found is not None:
            sources.append(rel)
        measured = report.get("measured_sparsity", np.nan)
        target = report.get("target_sparsity", prune.sparsity)
        rows.append({"model": model, "system": cell.label, "target": target, "measured": measured,
                     "difference": measured - target, "N:M valid": report.get("nm_valid"),
                     "source": rel if found is not None else f"{rel} (missing)"})
    return pd.DataFrame(rows, columns=["model", "system", "target", "measured", "difference",
                                       "N:M valid", "source"]), sources


def summaries_table(run: RunData, per_system: int = 2, max_chars: int = 300) -> tuple[pd.DataFrame, list[str]]:
    """The first few documents' summaries of every system (same documents for all systems of
    a task), so readers can see what the numbers are about."""
    rows, sources = [], []
    cells = sorted(run.cells.values(), key=lambda c: (c.task, c.prompt, c.model, c.prune.method, c.prune.sparsity))
    texts = {}
    for info in cells:
        path = run.store.generation_path(info.key)
        if path.exists():
            texts[info.key] = run.store.read_generation_texts(info.key)
            sources.append(run.store.relative(path))
    for task in dict.fromkeys(c.task for c in cells):
        on_task = [c for c in cells if c.task == task and c.key in texts]
        if not on_task:
            continue
        shared = set.intersection(*(set(texts[c.key]) for c in on_task))
        chosen = sorted(shared)[:per_system]
        for info in on_task:
            for doc in chosen:
                text = texts[info.key][doc]
                shown = text if len(text) <= max_chars else text[:max_chars] + "…"
                rows.append({"task": task, "prompt": info.prompt, "system": info.system,
                             "doc_id": doc, "summary": shown})
    return pd.DataFrame(rows, columns=["task", "prompt", "system", "doc_id", "summary"]), sources
