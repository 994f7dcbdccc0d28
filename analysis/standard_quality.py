"""Standard quality beside the side effects: zero-shot accuracy per lm-eval task and its
average, standard-corpus perplexity, and a cost table (accuracy lost vs hallucination risk
changed), read from each checkpoint's ``quality.json`` (written by the quality stage)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.load import RunData
from analysis.sections import ReportContext, ReportSection
from harness.quality.records import QUALITY_FILE, QualityRecord, read_quality

AVERAGE = "average"
_SYSTEM = ["model", "system"]
_ORDER = ["model", "method", "sparsity", "structure", "owl"]


def checkpoint_records(run: RunData) -> list[tuple[dict, QualityRecord, str]]:
    """(system row, quality record, run-relative source) per checkpoint that has one, in the
    tables' usual order (model, then dense before its prunings)."""
    systems = {}
    for info in run.cells.values():
        if info.recovery:  # recovered systems: the recovery section
            continue
        p = info.prune
        systems[(info.model, info.folder)] = {"model": info.model, "system": p.label, "method": p.method,
                                           "sparsity": p.sparsity, "structure": p.structure, "owl": p.owl}
    out = []
    for (model, folder), row in sorted(systems.items(), key=lambda kv: [str(kv[1][k]) for k in _ORDER]
                                       if kv[1]["method"] != "dense" else [kv[1]["model"], ""]):
        path = run.store.checkpoint_report_path(model, folder, QUALITY_FILE)
        record = read_quality(path)
        if record is not None:
            out.append((row, record, run.store.relative(path)))
    return out


def quality_table(run: RunData) -> tuple[pd.DataFrame, list[str], list[str]]:
    """A row per checkpoint: each task's primary metric (accuracies in %), the average over
    the accuracy tasks, the change of that average against the same model's dense checkpoint
    (points), then perplexities. Returns (table, notes on what each column is, sources)."""
    rows, notes, sources = [], {}, []
    for system, record, rel in checkpoint_records(run):
        row = dict(system)
        accuracies = []
        for name, score in record.tasks.items():
            value = score.metrics.get(score.primary) if score.primary else None
            if score.kind == "accuracy" and value is not None:
                column = f"{name} {score.primary} %"
                row[column] = 100 * value
                accuracies.append(100 * value)
                notes[column] = (f"{column}: lm-eval {score.lm_eval_version} task {score.source!r} "
                                 f"({score.documents} documents, {score.num_fewshot or 0}-shot, {score.backend} backend)")
            elif value is not None:
                column = f"{name} {score.primary}"
                row[column] = value
                notes[column] = (f"{column}: lm-eval {score.lm_eval_version} task {score.source!r}"
                                 + (": word-level perplexity of whole documents (lm-eval's rolling "
                                    "windows per document), not the papers' token-level figure"
                                    if score.primary == "word_perplexity" else ""))
        row[AVERAGE] = float(np.mean(accuracies)) if accuracies else np.nan
        for name, corpus in record.corpora.items():
            column = f"{name} ppl (token, {corpus.seqlen})"
            row[column] = corpus.perplexity
            notes[column] = f"{column}: {corpus.protocol}; {corpus.windows} windows of {corpus.seqlen} tokens"
        rows.append(row)
        sources.append(rel)
    if not rows:
        return pd.DataFrame(), [], []
    table = pd.DataFrame(rows)
    dense = table[table["method"] == "dense"].set_index("model")[AVERAGE]
    table.insert(table.columns.get_loc(AVERAGE) + 1, "change vs dense (points)",
                 table[AVERAGE] - table["model"].map(dense))
    table = table.drop(columns=["method", "sparsity", "structure", "owl"])
    return table, list(notes.values()), sources


def cost_table(quality: pd.DataFrame, risk: pd.DataFrame | None) -> pd.DataFrame:
    """A row per pruned checkpoint: its average accuracy, the points lost against dense, and
    per risk metric the geometric mean of its risk ratios over datasets and prompts."""
    pruned = quality[quality["change vs dense (points)"].notna() & (quality["system"] != "dense")]
    table = pruned[[*_SYSTEM, AVERAGE]].assign(**{"accuracy lost (points)": 0.0 - pruned["change vs dense (points)"]})
    if risk is None or risk.empty:
        return table.reset_index(drop=True)
    ratios = risk[np.isfinite(risk["ratio"]) & (risk["ratio"] > 0)]
    means = (ratios.assign(log=np.log(ratios["ratio"]))
             .groupby(["model", "label", "metric"])["log"].mean().map(np.exp).unstack("metric"))
    means.columns = [f"risk ratio ({m})" for m in means.columns]
    return table.merge(means.reset_index().rename(columns={"label": "system"}), on=_SYSTEM,
                       how="left").reset_index(drop=True)


def report_section(ctx: ReportContext) -> ReportSection | None:
    """The report's "Standard quality" section, or None when no checkpoint has quality results."""
    table, notes, sources = quality_table(ctx.run)
    if table.empty:
        return None
    text = ("Zero-shot accuracy from EleutherAI's lm-evaluation-harness per checkpoint (the metric "
            "each task reports first: acc, as in the Wanda and SparseGPT tables, or exact_match), "
            "in %; average: the mean over the accuracy tasks; change vs dense: that average minus "
            "the same model's dense average, in points. Perplexity columns say which perplexity "
            "they are: token-level on a standard corpus with the pruning papers' protocol, or "
            "lm-eval's word-level per-document figure; the task-text perplexity is in the output "
            "table.\n\n" + "\n\n".join(notes))
    tables = {"Zero-shot accuracy and perplexity per checkpoint": table}
    cost = cost_table(table, ctx.risk)
    if not cost.empty:
        text += ("\n\nCost: accuracy lost (points of the average) beside the hallucination risk "
                 "ratio of each risk metric, as the geometric mean over the system's datasets "
                 "and prompts (per-dataset ratios with CIs: the risk section). A ratio below 1 "
                 "means less risk than the dense model.")
        tables["Accuracy lost vs hallucination risk ratio"] = cost
    return ReportSection("Standard quality", text, tables, [], sources)
