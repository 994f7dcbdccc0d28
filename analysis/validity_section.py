"""Metric validity on a run whose scores carry the ground truth (``gt_hallucination``): each
hallucination metric's AUC and balanced accuracy per task (pooled over systems) and per
system, the rank correlation of its risk ratios with the ground-truth hallucination
difference, the flags the risk-ratio tables show, and the report section."""

from __future__ import annotations

import pandas as pd

from analysis.load import RunData
from analysis.risk import risk_metrics
from analysis.sections import ReportContext, ReportSection
from analysis.validity import (GT_LABEL, MIN_PER_CLASS, check_labels, format_interval,
                               spearman_ci, validity_flags, validity_table)

TITLE = "Metric validity (AUC)"
POOLED = "all systems"


def risk_frame(run: RunData, label: str = GT_LABEL) -> pd.DataFrame:
    """A row per (cell, document) with each registered risk metric's risk (under its display
    name) and the label; empty when no score file has the label."""
    wanted = {column for column, _ in risk_metrics().values()} | {label}
    rows = run.tidy[run.tidy["metric"].isin(wanted)]
    if label not in set(rows["metric"]):
        return pd.DataFrame()
    wide = rows.pivot_table(index=["task", "prompt", "system", "cell", "doc_id"], columns="metric",
                            values="value", aggfunc="first").reset_index()
    for name, (column, invert) in risk_metrics().items():
        if column in wide.columns:
            wide[name] = 1 - wide[column] if invert else wide[column]
    check_labels(wide[label], label, lambda i: f"{run.score_file(wide.at[i, 'cell'])}: "
                                               f"record doc_id={wide.at[i, 'doc_id']!r}")
    return wide.dropna(subset=[label])


def run_validity(run: RunData, n_boot: int = 1000, seed: int = 0,
                 label: str = GT_LABEL) -> pd.DataFrame:
    """Validity per task (scope "all systems", documents grouped across systems) and per
    system (scope = the system; n/a unless each class has ``MIN_PER_CLASS`` documents), for
    every risk metric but the one whose risk is the label (its AUC would be 1 by definition).
    Empty when the run has no ground truth."""
    frame = risk_frame(run, label)
    if frame.empty:
        return pd.DataFrame()
    metrics = [m for m, (column, _) in risk_metrics().items()
               if column != label and m in frame.columns and frame[m].notna().any()]  # not the label itself
    pooled = validity_table(frame.assign(scope=POOLED), metrics, label, by=["task", "scope"],
                            n_boot=n_boot, seed=seed)
    per_system = validity_table(frame.assign(scope=_scopes(frame)),
                                metrics, label, by=["task", "scope"],
                                min_per_class=MIN_PER_CLASS, n_boot=n_boot, seed=seed)
    return pd.concat([pooled, per_system], ignore_index=True)


def _scopes(frame: pd.DataFrame) -> pd.Series:
    """Each row's system, with its prompt where a task has several and its cell key where
    two cells would still share a name (e.g. specs differing only in calibration)."""
    cells = frame.drop_duplicates("cell")
    several = cells.groupby("task")["prompt"].transform("nunique") > 1
    names = cells["system"].where(~several, cells["system"] + " (prompt " + cells["prompt"] + ")")
    clash = names.duplicated(keep=False) | cells.assign(n=names).duplicated(["task", "n"], keep=False)
    names = names.where(~clash, names + " [" + cells["cell"] + "]")
    return frame["cell"].map(dict(zip(cells["cell"], names)))


def ratio_correlation(risk: pd.DataFrame, run: RunData, label: str = GT_LABEL) -> pd.DataFrame:
    """Per task and metric: Spearman's rho across pruned systems between the risk ratio and the
    ground-truth hallucination difference (pruned - dense share over the paired documents)."""
    gt = run.paired[run.paired["metric"] == label]
    columns = ["task", "metric", "systems", "rho", "ci_low", "ci_high", "note"]
    if gt.empty or risk is None or risk.empty:
        return pd.DataFrame(columns=columns)
    diff = (gt["pruned"] - gt["dense"]).groupby(gt["cell"]).mean().rename("gt_difference")
    joined = risk.join(diff, on="cell")
    rows = []
    for (task, metric), part in joined.groupby(["task", "metric"], sort=False):
        rho, low, high, note = spearman_ci(part["ratio"], part["gt_difference"])
        rows.append([task, metric, int(part[["ratio", "gt_difference"]].notna().all(axis=1).sum()),
                     rho, low, high, note])
    return pd.DataFrame(rows, columns=columns)


def attach_flags(risk: pd.DataFrame, validity: pd.DataFrame) -> pd.DataFrame:
    """The risk table with ``validity`` (the metric's pooled AUC [CI] on the task) and
    ``validity_flag`` (why its ratios are not shown to track hallucination; "" when they are)."""
    if validity.empty or risk.empty:
        return risk
    pooled = validity[validity["scope"] == POOLED]
    flags = validity_flags(pooled, by=["task"])
    shown = {(r.task, r.metric): _auc_text(r) for r in pooled.itertuples()}
    truth = {name for name, (column, _) in risk_metrics().items() if column == GT_LABEL}
    keys = list(zip(risk["task"], risk["metric"]))
    return risk.assign(validity=["the ground truth itself" if k[1] in truth else shown.get(k, "not measured")
                                 for k in keys],
                       validity_flag=[flags.get(k, "") for k in keys])


def flagged_metrics(risk: pd.DataFrame) -> dict[tuple[str, str], str]:
    """(task, metric) -> flag for every flagged metric in a risk table from ``attach_flags``
    (empty when the run has no ground truth): what a headline must not rest on alone."""
    if "validity_flag" not in risk.columns:
        return {}
    rows = risk[risk["validity_flag"] != ""].drop_duplicates(["task", "metric"])
    return {(r.task, r.metric): r.validity_flag for r in rows.itertuples()}


def report_section(ctx: ReportContext) -> ReportSection | None:
    """The "Metric validity (AUC)" section; None when the run's scores carry no ground truth.
    The bootstrap follows the risk table's settings, else the study's ``analysis`` section."""
    n_boot, seed = ctx.bootstrap
    validity = ctx.validity if ctx.validity is not None else run_validity(ctx.run, n_boot, seed)
    if validity.empty:
        return None
    run, risk = ctx.run, ctx.risk
    text = (f"How well each hallucination metric's per-summary risk detects a summary the ground "
            f"truth marks hallucinated ({GT_LABEL} = 1: it states a fact absent from or "
            "contradicting its document). AUC: probability that a hallucinated summary gets a "
            "higher risk than a faithful one (0.5 = chance, 1 = perfect). Balanced accuracy: mean "
            "of the hit rates on both classes of 'risk > threshold', the threshold chosen by "
            "cross-validation over documents (each fold predicted with the threshold chosen on "
            "the others; the threshold column is the one chosen on all summaries). 95% CIs: "
            f"bootstrap over documents ({n_boot} resamples, seed {seed}). 'all systems' pools a "
            "task's summaries of every system; a system alone is measured only where each class "
            f"has at least {MIN_PER_CLASS} documents. A metric whose pooled AUC CI includes 0.5 is "
            "flagged beside its risk ratios: its ratios are not shown to track hallucination. "
            "With the built-in tiny scorer models these numbers measure the machinery, not the "
            "published metrics. Spearman: rank correlation, across pruned systems, of each "
            "metric's risk ratio with the ground-truth hallucination difference (pruned - dense), "
            "with a Fisher-z CI (Bonett-Wright standard error).")
    flags = validity_flags(validity.dropna(subset=["auc"]), by=["task", "scope"])
    shown = validity.assign(
        AUC=[format_interval(r.auc, r.auc_low, r.auc_high) for r in validity.itertuples()],
        **{"balanced accuracy": [format_interval(r.balanced_accuracy, r.ba_low, r.ba_high)
                                 for r in validity.itertuples()]},
        flag=[flags.get((r.task, r.scope, r.metric), "") for r in validity.itertuples()])
    shown = shown[["task", "scope", "metric", "n", "n_hallucinated", "n_consistent", "AUC",
                   "balanced accuracy", "threshold", "protocol", "flag", "note"]]
    tables = {"Metric validity per task: AUC and balanced accuracy [95% CI]": shown}
    correlation = ratio_correlation(risk, run)
    if not correlation.empty:
        tables["Spearman rho of risk ratio vs ground-truth hallucination difference across systems"] = (
            correlation.assign(rho=[format_interval(r.rho, r.ci_low, r.ci_high) for r in correlation.itertuples()])
            .drop(columns=["ci_low", "ci_high"]))
    sources = sorted({run.score_file(c) for c in run.tidy.loc[run.tidy["metric"] == GT_LABEL, "cell"]})
    return ReportSection(TITLE, text, tables, [], sources)


def _auc_text(row) -> str:
    return f"AUC {format_interval(row.auc, row.auc_low, row.auc_high)}"

