"""The report's recovery section: dense, pruned and recovered systems side by side.

Per pruned system that a study recovered (LoRA or full fine-tuning), one row each for its
dense model, the pruned model and every recovery of it: perplexity, measured sparsity (for a
LoRA system the served base's; its adapter is a dense low-rank term, never merged), the
ground-truth metrics the task has, and every hallucination risk ratio against the dense model
(from the risk table) and, for a recovered system, against its pruned parent (computed here
with the same definition, bootstrap and test; Holm across this table's parent comparisons).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd

from analysis.load import RunData
from analysis.risk import format_ratio, risk_metrics, risk_table
from analysis.sections import ReportContext, ReportSection
from harness.scoring.registry import table_columns


def vs_parent(run: RunData, settings: dict) -> pd.DataFrame:
    """Risk ratios of each recovered cell against its pruned parent (``risk_table``'s shape,
    ``baseline`` being the parent)."""
    if run.recovered_paired is None or run.recovered_paired.empty:
        return pd.DataFrame()
    return risk_table(dataclasses.replace(run, paired=run.recovered_paired), **settings)


def recovery_table(run: RunData, risk: pd.DataFrame | None, parent_risk: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    recovered = sorted((c for c in run.cells.values() if c.recovery and c.parent_key in run.cells),
                       key=lambda c: (c.task, c.prompt, c.model, c.folder))
    sources: set[str] = set()
    ground_truth = table_columns("quality")  # metrics against the task's references / gold facts
    truth = run.tidy[run.tidy["metric"].isin(ground_truth)].groupby(["cell", "metric"])["value"].mean()
    shown_risks = [m for m in risk_metrics() if risk is not None and m in set(risk["metric"])]
    rows, seen = [], set()
    for child in recovered:
        parent = run.cells[child.parent_key]
        family = [run.cells.get(parent.baseline_key), parent, child]
        for role, info in zip(("dense", "pruned", "recovered"), family):
            if info is None or info.key in seen:
                continue
            seen.add(info.key)
            row = {"task": info.task, "prompt": info.prompt, "model": info.model, "system": info.label,
                   "role": role, "perplexity": _report(run, info, "perplexity.json", "perplexity", sources),
                   "sparsity": _report(run, info, "sparsity.json", "measured_sparsity", sources),
                   "served by": _served_by(run, info, sources)}
            for metric, name in ground_truth.items():
                row[name] = truth.get((info.key, metric), np.nan)
            for metric in shown_risks:
                row[f"{metric} vs dense"] = _ratio(risk, info.key, metric)
                row[f"{metric} vs pruned"] = _ratio(parent_risk, info.key, metric) if role == "recovered" else ""
            if run.store.score_path(info.key).exists():
                sources.add(run.score_file(info.key))
            rows.append(row)
    table = pd.DataFrame(rows)
    if not table.empty:
        table = table.dropna(axis=1, how="all")
    return table, sorted(sources)


def recovery_section(ctx: ReportContext) -> ReportSection | None:
    run, risk = ctx.run, ctx.risk
    if not any(c.recovery for c in run.cells.values()):
        return None
    settings = {k: risk.attrs[k] for k in ("definition", "threshold", "n_boot", "seed")} if risk is not None else {}
    parent_risk = vs_parent(run, settings) if settings else pd.DataFrame()
    table, sources = recovery_table(run, risk, parent_risk)
    text = ("Recovery fine-tuning after pruning: each pruned system the study recovered, beside its "
            "dense model and its recovered versions (+lora-rN: a LoRA adapter of rank N on the "
            "untouched pruned base, served unmerged; +full: every weight trained except the pruned "
            "zeros, which stay zero). Perplexity: perplexity.json; sparsity: measured after "
            "recovery (sparsity.json; for LoRA the served base's, since the adapter adds a dense "
            "low-rank term); served by: the backend that generated with the adapter (vllm-lora or "
            "hf-peft). Risk ratios 'vs dense' are those of the risk table; 'vs pruned' compare a "
            "recovered system with its pruned parent over the documents both have (below 1: "
            "recovery lowered the risk), same definition and bootstrap, Holm across these "
            "comparisons; * marks Holm-adjusted p < 0.05.")
    return ReportSection("Recovery fine-tuning", text,
                         {"Dense, pruned and recovered systems": table}, [], sources)


def _ratio(table: pd.DataFrame | None, cell: str, metric: str) -> str:
    if table is None or table.empty:
        return ""
    rows = table[(table["cell"] == cell) & (table["metric"] == metric)]
    return format_ratio(rows.iloc[0], 0.05) if len(rows) else ""


def _report(run: RunData, info, name: str, field: str, sources: set[str]) -> float:
    report = run.store.read_checkpoint_report(info.model, info.folder, name)
    if report is None:
        return np.nan
    sources.add(run.store.relative(run.store.checkpoint_report_path(info.model, info.folder, name)))
    return report.get(field, np.nan)


def _served_by(run: RunData, info, sources: set[str]) -> str:
    path = run.store.generation_meta_path(info.key)
    if not path.exists():
        return ""
    sources.add(run.store.relative(path))
    meta = json.loads(path.read_text())
    return meta.get("adapter", {}).get("served_by") or meta.get("backend", "")
