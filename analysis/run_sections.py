"""The report sections built from a run's scores, generations and checkpoint reports.

Each is a section provider ``(run_dir, risk) -> ReportSection | None`` (see
``analysis.report.SECTION_PROVIDERS``); None when the run has nothing for it.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pandas as pd

from analysis import figures, tables
from analysis.load import RunData, load_run
from analysis.risk import describe, risk_pivot
from analysis.sections import ReportSection


def run_data(run_dir: Path) -> RunData:
    """``load_run``, shared by the providers of one report; reloaded when an artifact changes."""
    root = Path(run_dir).resolve()
    stamp = tuple((p.name, p.stat().st_mtime_ns) for folder in ("cells", "scores")
                  for p in sorted((root / folder).glob("*")) if p.is_file())
    return _load(root, stamp)


@functools.lru_cache(maxsize=2)
def _load(root: Path, stamp: tuple) -> RunData:
    return load_run(root)


def figures_dir(run_dir: Path) -> Path:
    path = Path(run_dir) / "report" / "figures"
    path.mkdir(parents=True, exist_ok=True)
    return path


def risk_section(run_dir: Path, risk: pd.DataFrame | None) -> ReportSection | None:
    if risk is None or risk.empty:
        return None
    run = run_data(run_dir)
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
    shown = [figures.risk_vs_sparsity(run, figures_dir(run_dir)),
             figures.ratio_vs_overlap(risk, run, figures_dir(run_dir)),
             figures.ratios_with_ci(risk, figures_dir(run_dir))]
    detail = risk.drop(columns=["label", "structure", "owl", "definition"])
    return ReportSection(
        "Hallucination risk ratios",
        text,
        {"Risk ratio [95% CI] per dataset and metric (columns: model/system)": risk_pivot(risk),
         "Risk ratio comparisons in detail": detail},
        [f for f in shown if f is not None],
        sorted({run.score_file(c) for c in set(risk["cell"]) | set(risk["baseline"])}),
    )


def _table_section(title: str, caption: str, text: str, build):
    """A provider of one table: ``build(run) -> (table, sources)``; None when the table is empty."""
    def provider(run_dir: Path, risk: pd.DataFrame | None) -> ReportSection | None:
        table, sources = build(run_data(run_dir))
        if table.empty:
            return None
        return ReportSection(title, text, {caption: table}, [], sources)

    provider.__name__ = f"{title.lower().replace(' ', '_')}_section"
    return provider


quality_section = _table_section(
    "Summary quality", "Mean ROUGE F1 against the reference summaries",
    "ROUGE F1 of each system's summaries against the task's reference summaries (tasks "
    "without references have none); docs: documents scored.",
    lambda run: tables.metric_means(run, tables.QUALITY))
overlap_section = _table_section(
    "Lexical overlap", "Mean lexical overlap with the source document",
    "ROUGE F1 against the source, extractive fragment coverage and density, and the share of "
    "summary n-grams absent from the source: how much each system copies.",
    lambda run: tables.metric_means(run, tables.OVERLAP))
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
    "are cut at 300 characters.",
    tables.summaries_table)


def missing_section(run_dir: Path, risk: pd.DataFrame | None) -> ReportSection | None:
    run = run_data(run_dir)
    if not run.missing:
        return None
    text = "\n\n".join(run.missing)
    found = {}
    if not run.unpaired.empty:
        counts = run.unpaired.groupby(["cell", "baseline", "missing_in"]).size().rename("documents")
        found["Documents without a partner (left out of the comparisons)"] = counts.reset_index()
    return ReportSection("Missing data", text, found, [],
                         sorted(f"cells/{k}.json" for k in run.cells))


def provenance_section(run_dir: Path, risk: pd.DataFrame | None) -> ReportSection | None:
    path = Path(run_dir) / "manifest.json"
    if not path.exists():
        return ReportSection("Provenance", "This run has no manifest.json; versions, seeds and "
                             "hardware are unknown.")
    prov = json.loads(path.read_text()).get("provenance", {})
    rows = [(key, json.dumps(prov[key], sort_keys=True) if isinstance(prov[key], (dict, list)) else prov[key])
            for key in ("git_commit", "python", "platform", "machine", "accelerator", "seeds", "created")
            if key in prov]
    rows += [(f"package {name}", version) for name, version in sorted(prov.get("packages", {}).items())]
    table = pd.DataFrame(rows, columns=["item", "value"])
    return ReportSection("Provenance", "Versions, seeds and hardware of the run (manifest.json).",
                         {"Run provenance": table}, [], ["manifest.json"])
