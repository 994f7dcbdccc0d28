"""The report's findings on a run with ground truth (scores with ``gt_hallucination``): per
pruning setting (seeds pooled) the ground-truth hallucination rate and fact recall with CIs,
each metric's risk ratio beside them, the sweep figures, and the accuracy of the scorer
models where they were trained here (``training.json`` beside a built-in model).

On the demo study (``demo: true`` in study.yaml) the section opens with the demo banner
(``analysis.overview``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import figures
from analysis.overview import DEMO_BANNER, is_demo
from analysis.seeds import METHOD_TEXT, seed_means, with_settings
from analysis.sections import ReportContext, ReportSection
from analysis.validity import GT_LABEL, format_interval
from analysis.validity_section import flagged_metrics, ratio_correlation

TITLE = "Findings against the ground truth"
RECALL = "gt_fact_recall"
TRAINING_FILE = "training.json"  # harness.trained_models.TRAINING_FILE (not imported: it loads torch)
# scoring setting -> (role in the report, risk metrics whose numbers rest on it)
SCORERS = {"harim_model": ("HaRiM+ scorer (BART)", ("HaRiM",)),
           "nli_model": ("SummaC NLI model", ("SummaC-ZS", "SummaC-Conv")),
           "summac_conv_weights": ("SummaC-Conv head", ("SummaC-Conv",))}
_SYSTEM_ORDER = ["model", "task", "prompt", "_dense", "method", "_nm", "sparsity", "structure"]


def setting_table(ctx: ReportContext) -> pd.DataFrame:
    """A row per (model, task, prompt, setting), dense first: seeds, documents, the
    ground-truth hallucination rate and mean fact recall with two-level bootstrap CIs
    (``analysis.seeds``), and each risk metric's seed-pooled ratio with its CI."""
    run = ctx.run
    tidy = run.tidy[run.tidy["metric"].isin([GT_LABEL, RECALL])]
    if GT_LABEL not in set(tidy["metric"]):
        return pd.DataFrame()
    tidy = with_settings(tidy, run.cells)
    keys = ["model", "setting", "task", "prompt"]
    meta = tidy.drop_duplicates(keys)[[*keys, "method", "sparsity", "structure"]]
    table = meta
    for column, name in ((GT_LABEL, "hallucination"), (RECALL, "recall")):
        means = seed_means(tidy, column, *ctx.bootstrap).rename(
            columns={"mean": name, "ci_low": f"{name}_low", "ci_high": f"{name}_high"})
        table = table.merge(means.drop(columns="metric"), on=keys, how="left",
                            suffixes=("", f"_{name}"))
    ratios = ctx.seed_ratios
    for metric, rows in ratios.groupby("metric", sort=False):
        rows = rows.set_index(keys)
        index = pd.MultiIndex.from_frame(table[keys])
        for part in ("ratio", "ci_low", "ci_high"):
            table[f"{metric}|{part}"] = rows[part].reindex(index).to_numpy()
    order = table.assign(_dense=table["method"] != "dense", _nm=table["structure"].map(figures.is_nm))
    return table.loc[order.sort_values(_SYSTEM_ORDER).index].reset_index(drop=True)


def findings_table(table: pd.DataFrame, marks: dict[str, str]) -> pd.DataFrame:
    """The shown table: a row per setting with 'value [low, high]' entries; ``marks``:
    metric -> what to append to its column's name (a flag)."""
    shown = pd.DataFrame({"system": table["setting"], "seeds": table["seeds"],
                          "documents": table["documents"]})
    for name, label in (("hallucination", "hallucination rate"), ("recall", "fact recall")):
        shown[f"{label} [95% CI]"] = [format_interval(v, lo, hi) for v, lo, hi in
                                      zip(table[name], table[f"{name}_low"], table[f"{name}_high"])]
    for metric in dict.fromkeys(c.split("|")[0] for c in table.columns if "|" in c):
        values = zip(table[f"{metric}|ratio"], table[f"{metric}|ci_low"], table[f"{metric}|ci_high"])
        shown[f"{metric} ratio{marks.get(metric, '')}"] = [
            "baseline" if method == "dense" else format_interval(v, lo, hi)
            for method, (v, lo, hi) in zip(table["method"], values)]
    for column in ("prompt", "task", "model"):
        if table[column].nunique() > 1:
            shown.insert(0, column, table[column])
    return shown


def scorer_accuracy(ctx: ReportContext) -> pd.DataFrame:
    """The held-out accuracy of each model of the run that was trained here (its
    ``training.json``): the summarizers and the scorers, with chance and 'learned'."""
    study = ctx.store.read_study_raw()
    scoring = study.get("scoring") or {}
    sources = [(f"summarizer {m.get('name')}", m.get("path")) for m in study.get("models", [])]
    sources += [(role, scoring.get(setting)) for setting, (role, _) in SCORERS.items()
                if setting in scoring and _metric_of(setting) in (scoring.get("metrics") or [])]
    rows = []
    for role, path in sources:
        report = _training_report(path)
        if report is None:
            continue
        rows.append({"model": role, "scorer accuracy": round(float(report["accuracy"]), 3),
                     "chance": round(float(report["chance"]), 3), "measured as": report.get("accuracy_name", ""),
                     "learned": "yes" if report.get("learned") else
                     "NO: not above chance, FLAGGED (its numbers are not evidence)"})
    return pd.DataFrame(rows)


def _metric_of(setting: str) -> str:
    return {"harim_model": "harim", "nli_model": "summac_zs", "summac_conv_weights": "summac_conv"}[setting]


def _training_report(path: str | None) -> dict | None:
    if not path:
        return None
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    file = folder / TRAINING_FILE
    return json.loads(file.read_text(encoding="utf-8")) if file.exists() else None


def unlearned_metrics(ctx: ReportContext) -> set[str]:
    """Risk metrics resting on a scorer model whose ``training.json`` says it did not learn."""
    scoring = ctx.store.read_study_raw().get("scoring") or {}
    out = set()
    for setting, (_, metrics) in SCORERS.items():
        report = _training_report(scoring.get(setting))
        if report is not None and not report.get("learned"):
            out.update(metrics)
    return out


def _marks(ctx: ReportContext, table: pd.DataFrame) -> dict[str, str]:
    flagged = {metric for (_, metric) in flagged_metrics(ctx.risk)} if ctx.risk is not None else set()
    unlearned = unlearned_metrics(ctx)
    marks = {}
    for metric in dict.fromkeys(c.split("|")[0] for c in table.columns if "|" in c):
        notes = (["FLAGGED validity"] if metric in flagged else []) + \
                (["scorer not learned"] if metric in unlearned else [])
        marks[metric] = f" ({', '.join(notes)})" if notes else ""
    return marks


def trend_sentences(table: pd.DataFrame) -> list[str]:
    """Per model, task and method: the hallucination rate and recall at its lowest and highest
    unstructured sparsity, and whether the hallucination CIs separate."""
    out = []
    plain = table[(table["method"] != "dense") & ~table["structure"].map(figures.is_nm)]
    for (model, task, method), rows in plain.groupby(["model", "task", "method"], sort=False):
        rows = rows.sort_values("sparsity")
        if len(rows) < 2:
            continue
        lo, hi = rows.iloc[0], rows.iloc[-1]
        apart = hi["hallucination_low"] > lo["hallucination_high"] or hi["hallucination_high"] < lo["hallucination_low"]
        out.append(f"{model} {method} on {task}: hallucination {_pct(lo, 'hallucination')} at "
                   f"{lo['sparsity']:.0%} vs {_pct(hi, 'hallucination')} at {hi['sparsity']:.0%} "
                   f"(95% CIs {'do not overlap' if apart else 'overlap'}); fact recall "
                   f"{_pct(lo, 'recall')} vs {_pct(hi, 'recall')}.")
    return out


def _pct(row, name: str) -> str:
    return f"{row[name]:.1%} [{row[f'{name}_low']:.1%}, {row[f'{name}_high']:.1%}]"


def tracking_sentences(ctx: ReportContext) -> list[str]:
    """Per task and risk metric: its pooled AUC for detecting hallucinated summaries and the
    rank correlation of its ratios with the ground-truth difference across systems, with the
    metric's validity flag where it has one."""
    correlation = ratio_correlation(ctx.risk, ctx.run) if ctx.risk is not None else pd.DataFrame()
    validity = ctx.validity if ctx.validity is not None else pd.DataFrame()
    flags = flagged_metrics(ctx.risk) if ctx.risk is not None else {}
    out = []
    for row in correlation.itertuples():
        if row.metric == "Ground truth":
            continue
        auc = validity[(validity.get("scope") == "all systems") & (validity["task"] == row.task)
                       & (validity["metric"] == row.metric)] if not validity.empty else validity
        auc_text = (f"AUC {format_interval(auc.iloc[0].auc, auc.iloc[0].auc_low, auc.iloc[0].auc_high)}"
                    if len(auc) else "AUC not measured")
        moves = ("its ratios move with the ground truth" if row.ci_low > 0 else
                 "its ratios move against the ground truth" if row.ci_high < 0 else
                 "its ratios are not shown to move with the ground truth")
        out.append(f"{row.metric} on {row.task}: {auc_text}; Spearman rho of its risk ratio with the "
                   f"ground-truth hallucination difference across {row.systems} systems "
                   f"{format_interval(row.rho, row.ci_low, row.ci_high)}: {moves}"
                   + (f"; but its validity is FLAGGED ({flags[(row.task, row.metric)]}): its per-summary "
                      "risk does not detect hallucinated summaries, so its ratios are no evidence of "
                      "hallucination." if (row.task, row.metric) in flags else "."))
    return out


def sweep_frames(table: pd.DataFrame):
    """(rates, ratios) long tables for :func:`analysis.figures.sweep_figure`."""
    pruned = table[table["method"] != "dense"]
    rates = pd.concat([pruned.assign(panel=label, value=pruned[name], low=pruned[f"{name}_low"],
                                     high=pruned[f"{name}_high"])
                       for name, label in (("hallucination", "hallucination rate"), ("recall", "fact recall"))])
    metrics = list(dict.fromkeys(c.split("|")[0] for c in table.columns if "|" in c))
    ratios = pd.concat([pruned.assign(panel=m, value=pruned[f"{m}|ratio"], low=pruned[f"{m}|ci_low"],
                                      high=pruned[f"{m}|ci_high"]) for m in metrics]) if metrics else pd.DataFrame()
    return rates, ratios


def report_section(ctx: ReportContext) -> ReportSection | None:
    """None when the run's scores carry no ground truth."""
    table = setting_table(ctx)
    if table.empty:
        return None
    n_boot, seed = ctx.bootstrap
    marks = _marks(ctx, table)
    text = [f"{DEMO_BANNER}: a synthetic news task whose every fact is known, a summarizer and "
            "scorer models trained here in minutes; the numbers show what prunescope measures, "
            "not how real LLMs behave."] if is_demo(ctx.store.read_study_raw()) else []
    text.append("Ground truth per summary: hallucinated when it states a fact absent from or "
                "contradicting its document (gt_hallucination); fact recall is the share of the "
                "document's key facts it states (a model that says nothing hallucinates nothing, "
                "so the two are read together). Rows are pruning settings; a setting run with "
                f"several calibration seeds pools them. 95% CIs: {METHOD_TEXT} ({n_boot} resamples, "
                f"seed {seed}); with one seed, documents alone. Ratios: pruned / dense mean risk "
                "pooled over seeds (section Risk ratios per calibration seed); 'Ground truth ratio' "
                "is the ratio of hallucination rates (n/a where the dense rate is 0: the rates "
                "themselves are the comparison). A metric marked FLAGGED has a pooled AUC CI "
                "that includes 0.5 (section Metric validity (AUC)); 'scorer not learned' marks a "
                "metric whose built-in scorer model did not beat chance on held-out data.")
    text += trend_sentences(table) + tracking_sentences(ctx)
    tables = {"Ground-truth hallucination and fact recall per system [95% CI], with each metric's "
              "risk ratio [95% CI]": findings_table(table, marks)}
    accuracy = scorer_accuracy(ctx)
    if not accuracy.empty:
        tables["Scorer accuracy of the built-in trained models (held-out, from training.json)"] = accuracy
    dense = table[table["method"] == "dense"]
    rates, ratios = sweep_frames(table)
    shown = [figures.sweep_figure(
        rates, ctx.figures_dir, "ground_truth_vs_sparsity",
        "Ground-truth hallucination rate and fact recall per pruning method against sparsity "
        "(N:M patterns right of the dotted line), 95% CIs; dashed: the dense model.",
        "share of summaries / mean recall",
        references={"hallucination rate": _first(dense["hallucination"]), "fact recall": _first(dense["recall"])}),
        figures.sweep_figure(
        ratios, ctx.figures_dir, "risk_ratio_vs_sparsity",
        "Risk ratio (pruned / dense, pooled over calibration seeds) per metric and pruning method "
        "against sparsity (N:M patterns right of the dotted line), 95% CIs; dashed: 1 (dense).",
        "risk ratio", references={m: 1.0 for m in set(ratios.get("panel", []))},
        titles={m: m + marks.get(m, "") for m in set(ratios.get("panel", []))})]
    run = ctx.run
    cells = run.tidy.loc[run.tidy["metric"] == GT_LABEL, "cell"]
    return ReportSection(TITLE, "\n\n".join(text), tables, [f for f in shown if f is not None],
                         sorted({run.score_file(c) for c in cells}))


def _first(values: pd.Series) -> float | None:
    return float(values.iloc[0]) if len(values) and np.isfinite(values.iloc[0]) else None
