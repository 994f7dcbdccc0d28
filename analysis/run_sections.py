"""The report sections built from a run's scores, generations and checkpoint reports.

Each is a section provider ``(ctx: ReportContext) -> ReportSection | None`` (see
``analysis.report.SECTION_PROVIDERS``); None when the run has nothing for it.
"""

from __future__ import annotations

import json

import pandas as pd

from analysis import figures, tables
from analysis.risk import describe, risk_pivot
from analysis.sections import ReportContext, ReportSection
from harness.scoring.registry import table_columns


def risk_section(ctx: ReportContext) -> ReportSection | None:
    risk = ctx.risk
    if risk is None or risk.empty:
        return None
    run = ctx.run
    a = risk.attrs
    text = (f"Risk ratio definition: {a.get('definition', 'mean_risk')}: "
            f"{describe(a.get('definition', 'mean_risk'), a.get('threshold', 0.5))}. "
            "Per-document risk: HaRiM = the mean token risk of HaRiM+ (column harim), "
            "SummaC-ZS risk = 1 - SummaC-ZS, SummaC-Conv risk = 1 - SummaC-Conv. "
            "Each pruned cell is compared with the dense cell of the same model, task and prompt "
            "over the documents both have; in the detailed table, pruned and dense are the "
            "definition's statistic of each side and n_docs the documents compared.\n\n"
            f"95% CIs: paired percentile bootstrap over documents ({a.get('n_boot', '?')} resamples, "
            f"seed {a.get('seed', '?')}). p: Wilcoxon signed-rank test of the per-document risk "
            "differences (two-sided), Holm-corrected across all comparisons of this table; "
            "* marks Holm-adjusted p < 0.05.")
    pivot = risk_pivot(risk)
    if "validity" in risk.columns:
        text += ("\n\nMetric validity: each metric's pooled AUC [95% CI] for detecting "
                 "ground-truth hallucination on the task (section Metric validity (AUC)); a "
                 "metric marked FLAGGED has an AUC CI that includes 0.5 (or lies below it), so "
                 "its ratios are not shown to track hallucination.")
        marks = {(r.task, r.metric): r.validity + (" FLAGGED" if r.validity_flag else "")
                 for r in risk.itertuples()}
        pivot.insert(list(pivot.columns).index("metric") + 1, "metric validity",
                     [marks[(t, m)] for t, m in zip(pivot["task"], pivot["metric"])])
    shown = [figures.risk_vs_sparsity(run, ctx.figures_dir),
             figures.ratio_vs_overlap(risk, run, ctx.figures_dir),
             figures.ratios_with_ci(risk, ctx.figures_dir)]
    detail = risk.drop(columns=["label", "structure", "owl", "definition"])
    return ReportSection(
        "Hallucination risk ratios",
        text,
        {"Risk ratio [95% CI] per dataset and metric (columns: model/system)": pivot,
         "Risk ratio comparisons in detail": detail},
        [f for f in shown if f is not None],
        sorted({run.score_file(c) for c in set(risk["cell"]) | set(risk["baseline"])}),
    )


def _table_section(title: str, caption: str, text: str, build):
    """A provider of one table: ``build(run) -> (table, sources)``; None when the table is empty."""
    def provider(ctx: ReportContext) -> ReportSection | None:
        table, sources = build(ctx.run)
        if table.empty:
            return None
        return ReportSection(title, text, {caption: table}, [], sources)

    provider.__name__ = f"{title.lower().replace(' ', '_')}_section"
    return provider


quality_section = _table_section(
    "Summary quality", "Mean ROUGE F1 against the reference summaries",
    "ROUGE F1 of each system's summaries against the task's reference summaries (tasks "
    "without references have none); docs: documents scored.",
    lambda run: tables.metric_means(run, table_columns("quality")))
overlap_section = _table_section(
    "Lexical overlap", "Mean lexical overlap with the source document",
    "ROUGE F1 against the source, extractive fragment coverage and density, and the share of "
    "summary n-grams absent from the source: how much each system copies.",
    lambda run: tables.metric_means(run, table_columns("overlap")))
output_section = _table_section(
    "Output length, empty outputs, repetition and perplexity", "Per-system output statistics",
    "Mean summary length in generated tokens, share of empty summaries, mean share of "
    "repeated 3-grams within a summary, and the checkpoint's perplexity (perplexity.json).",
    tables.output_table)
sparsity_section = _table_section(
    "Measured vs target sparsity", "Target and measured sparsity per pruned checkpoint",
    "Measured sparsity counts zeros over the pruned Linear weights (sparsity.json).",
    tables.sparsity_table)
summaries_section = _table_section(
    "Example summaries", "Generated summaries",
    "The first documents (by id) of each task, summarized by every system; long summaries "
    "are cut at 300 characters. Every document, beside its source and reference and with "
    "unsupported words and facts marked: summaries.html (the summaries viewer).",
    tables.summaries_table)


def missing_section(ctx: ReportContext) -> ReportSection | None:
    """First in the report: what the run lacks, and whether anything could be compared."""
    run = ctx.run
    if not run.missing:
        return None
    text = "\n\n".join(run.missing)
    if ctx.risk is None or ctx.risk.empty:
        text = "Nothing could be compared: no pruned cell has scores beside its dense baseline.\n\n" + text
    found = {}
    if not run.unpaired.empty:
        counts = run.unpaired.groupby(["cell", "baseline", "missing_in"]).size().rename("documents")
        found["Documents without a partner (left out of the comparisons)"] = counts.reset_index()
    return ReportSection("Missing data", text, found, [],
                         sorted(run.store.relative(run.store.cell_path(k)) for k in run.cells))


def provenance_section(ctx: ReportContext) -> ReportSection | None:
    if not ctx.store.manifest_path.exists():
        return ReportSection("Provenance", "This run has no manifest.json; versions, seeds and "
                             "hardware are unknown.")
    prov = ctx.store.read_manifest().get("provenance", {})
    rows = [(key, json.dumps(prov[key], sort_keys=True) if isinstance(prov[key], (dict, list)) else prov[key])
            for key in ("git_commit", "python", "platform", "machine", "accelerator", "seeds", "created")
            if key in prov]
    rows += [(f"package {name}", version) for name, version in sorted(prov.get("packages", {}).items())]
    table = pd.DataFrame(rows, columns=["item", "value"])
    return ReportSection("Provenance", "Versions, seeds and hardware of the run (manifest.json).",
                         {"Run provenance": table}, [], ["manifest.json"])
