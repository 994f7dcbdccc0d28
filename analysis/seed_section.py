"""The report section "Risk ratios per calibration seed": for every pruning setting run with
several calibration seeds, each seed's ratio (its own paired bootstrap CI, from the risk
table) beside the ratio pooled over seeds (``analysis.seeds``), and whether the ranking of
the methods at one sparsity or pattern changes from seed to seed."""

from __future__ import annotations

import pandas as pd

from analysis.figures import is_nm
from analysis.risk import risk_metrics
from analysis.seeds import METHOD_TEXT, with_settings
from analysis.sections import ReportContext, ReportSection
from analysis.validity import format_interval

TITLE = "Risk ratios per calibration seed"


def per_seed_table(ctx: ReportContext) -> pd.DataFrame:
    """A row per (model, setting, task, prompt, metric) with several seeds: each seed's
    ratio [CI] in a column 'seed N', the pooled ratio [CI] and the range of the seeds' ratios."""
    pooled = ctx.seed_ratios
    pooled = pooled[pooled["seeds"] > 1]
    if pooled.empty or ctx.risk is None:
        return pd.DataFrame()
    risk = with_settings(ctx.risk, ctx.run.cells)
    rows = []
    for r in pooled.itertuples():
        mine = risk[(risk["model"] == r.model) & (risk["setting"] == r.setting) & (risk["task"] == r.task)
                    & (risk["prompt"] == r.prompt) & (risk["metric"] == r.metric)].sort_values("seed")
        row = {"model": r.model, "task": r.task, "prompt": r.prompt, "system": r.setting, "metric": r.metric}
        row.update({f"seed {int(s.seed)}": format_interval(s.ratio, s.ci_low, s.ci_high)
                    for s in mine.itertuples()})
        row["pooled over seeds [95% CI]"] = format_interval(r.ratio, r.ci_low, r.ci_high)
        finite = mine["ratio"].dropna()
        row["seed range"] = f"{finite.min():.3f} - {finite.max():.3f}" if len(finite) else "n/a"
        rows.append(row)
    table = pd.DataFrame(rows)
    order = table["metric"].map({m: i for i, m in enumerate(risk_metrics())})
    table = (table.assign(_o=order).sort_values(["model", "task", "prompt", "_o", "system"], kind="stable")
             .drop(columns="_o"))
    return _drop_constant(table, ["model", "task", "prompt"])


def ranking_table(ctx: ReportContext) -> pd.DataFrame:
    """Per (model, task, prompt, metric, sparsity/pattern) with two or more seeded methods:
    the methods ordered by risk ratio under each seed (lowest first), and whether the order
    differs between seeds."""
    if ctx.risk is None:
        return pd.DataFrame()
    risk = with_settings(ctx.risk, ctx.run.cells)
    risk = risk[risk["seed"].notna()]
    rows = []
    for key, group in risk.assign(level=risk.apply(_level, axis=1)).groupby(["model", "task", "prompt", "metric", "level"], sort=False):
        if group["method"].nunique() < 2:
            continue
        orders = {int(s): " < ".join(g.sort_values("ratio")["method"]) for s, g in group.groupby("seed")}
        rows.append({**dict(zip(["model", "task", "prompt", "metric", "sparsity or pattern"], key)),
                     **{f"seed {s}": o for s, o in orders.items()},
                     "ranking changes": "yes" if len(set(orders.values())) > 1 else "no"})
    return _drop_constant(pd.DataFrame(rows), ["model", "task", "prompt"]) if rows else pd.DataFrame()


def _level(row) -> str:
    """The sparsity or pattern methods are ranked at: "2:4" for an N:M pattern, else the
    sparsity, with the structure when it is not unstructured ("30% structured")."""
    if is_nm(row["structure"]):
        return row["structure"]
    structure = "" if row["structure"] == "unstructured" else f" {row['structure']}"
    return f"{row['sparsity']:.0%}{structure}"


def _drop_constant(table: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    return table.drop(columns=[c for c in columns if c in table.columns and table[c].nunique() <= 1])


def report_section(ctx: ReportContext) -> ReportSection | None:
    """None unless some setting was run with several calibration seeds."""
    table = per_seed_table(ctx)
    if table.empty:
        return None
    n_boot, seed = ctx.bootstrap
    text = ("Pruning settings run with several calibration seeds (the seed draws the calibration "
            "samples): each seed's risk ratio with its own paired bootstrap CI over documents, and "
            "the ratio pooled over seeds, mean over seeds of the pruned mean risk / mean over seeds "
            f"of the dense mean risk, whose 95% CI includes the between-seed spread ({METHOD_TEXT}; "
            f"{n_boot} resamples, seed {seed}). A claim about one method or sparsity should rest on "
            "the pooled ratio: the seed range shows how far a single seed can move it.")
    tables = {"Risk ratio per calibration seed and pooled over seeds [95% CI]": table}
    ranking = ranking_table(ctx)
    if not ranking.empty:
        changed = int((ranking["ranking changes"] == "yes").sum())
        text += (f"\n\nMethod rankings: the methods' order by risk ratio changes between seeds in "
                 f"{changed} of {len(ranking)} (metric, sparsity or pattern) comparisons.")
        tables["Methods ordered by risk ratio under each seed (lowest first)"] = ranking
    run = ctx.run
    return ReportSection(TITLE, text, tables, [],
                         sorted({run.score_file(c) for c in set(ctx.risk["cell"]) | set(ctx.risk["baseline"])}))
