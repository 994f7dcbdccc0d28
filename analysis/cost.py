"""Cost vs risk: what each pruned model saves (bytes in its best sparse format, generation
speed) beside what it costs in hallucination risk, read from the run's bench report
(written by ``prunescope bench model``, ``RunStore.bench_path``) and the risk-ratio table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.sections import Figure, ReportContext, ReportSection
from harness import atomic

KEYS = ["model", "method", "sparsity", "structure"]


def cost_table(bench: dict) -> pd.DataFrame:
    """A row per pruned checkpoint: its nonzero parameters (a structured checkpoint has fewer
    parameters, an unstructured one more zeros) and their ratio to the dense model's, its memory
    saving and size ratio against the dense model stored dense, its generation speed ratio
    against the dense model, and (2:4 on CUDA) the projected Linear speed-up."""
    entries = pd.DataFrame(bench["checkpoints"])
    columns = [*KEYS, "owl", "parameters", "parameter_ratio", "memory_saving", "size_ratio", "speed_ratio",
               "projected_linear_speedup"]
    if entries.empty:
        return pd.DataFrame(columns=columns)
    dense = entries[entries["method"] == "dense"].set_index("model")
    pruned = entries[(entries["method"] != "dense") & entries["model"].isin(dense.index)].copy()
    base_bytes = pruned["model"].map(dense["dense_bytes"])
    pruned["size_ratio"] = pruned["sparse_bytes"] / base_bytes
    pruned["memory_saving"] = 1 - pruned["size_ratio"]
    pruned["speed_ratio"] = pruned["tokens_per_s"] / pruned["model"].map(dense["tokens_per_s"])
    pruned["parameters"] = pruned["nonzero"]
    pruned["parameter_ratio"] = pruned["nonzero"] / pruned["model"].map(dense["nonzero"])
    return pruned[columns].reset_index(drop=True)


def with_risk(cost: pd.DataFrame, risk: pd.DataFrame) -> pd.DataFrame:
    """``cost`` with a column "risk ratio (<metric>)" per metric of ``risk`` (columns model,
    method, sparsity, structure, metric, ratio; plus owl when it distinguishes OWL runs), one
    row per model and, where ``risk`` has them, per task and prompt (risk differs by dataset)."""
    keys = KEYS + (["owl"] if "owl" in risk.columns else [])
    per = [c for c in ("task", "prompt") if c in risk.columns]
    wide = risk.pivot_table(index=keys + per, columns="metric", values="ratio", aggfunc="first")
    wide.columns = [f"risk ratio ({m})" for m in wide.columns]
    left = cost.assign(sparsity=cost["sparsity"].round(6))
    right = wide.reset_index().assign(sparsity=lambda d: d["sparsity"].astype(float).round(6))
    return left.merge(right, on=keys, how="left")


def report_section(ctx: ReportContext) -> ReportSection | None:
    """The report's "Cost vs risk" section, or None when the run has no bench report."""
    bench = ctx.store.read_bench()
    if bench is None:
        return None
    table = cost_table(bench)
    if ctx.risk is not None and not ctx.risk.empty:
        table = with_risk(table, ctx.risk)
    figure = _figure(table, ctx.figures_dir)
    text = (f"Memory saving: 1 - (bytes of the pruned model with each Linear weight in its smallest "
            f"lossless format: dense, CSR or N:M) / (bytes of the dense model). Speed ratio: greedy "
            f"generation tokens/s of the pruned model over the dense one on {bench['device']} "
            f"({bench['max_new_tokens']} new tokens for each of {len(bench['prompts'])} prompts); "
            f"{bench['note']}. A risk ratio above 1 means more hallucination risk than the dense model.")
    return ReportSection(title="Cost vs risk", text=text,
                         tables={"Memory and speed of each pruned model beside its risk ratios": table},
                         figures=[figure], sources=[ctx.store.relative(ctx.store.bench_path)])


def _figure(table: pd.DataFrame, folder: Path) -> Figure:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    risk_columns = [c for c in table.columns if c.startswith("risk ratio (")]
    labels = [f"{r.model} {r.method} {r.structure if r.structure not in ('unstructured', 'structured') else r.sparsity}"
              for r in table.itertuples()]
    fig, ax = plt.subplots(figsize=(6, 4))
    if risk_columns:
        for column in risk_columns:
            ax.scatter(table["memory_saving"] * 100, table[column], label=column.removeprefix("risk ratio "))
        for label, x, y in zip(labels, table["memory_saving"] * 100, table[risk_columns[0]]):
            ax.annotate(label, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
        ax.set_xlabel("memory saving in the best sparse format (%)")
        ax.set_ylabel("hallucination risk ratio vs dense")
        ax.legend(fontsize=7)
        caption = "Memory saving of each pruned model against its hallucination risk ratios."
    else:
        positions = range(len(table))
        ax.bar([p - 0.2 for p in positions], table["memory_saving"], width=0.4, label="memory saving")
        ax.bar([p + 0.2 for p in positions], table["speed_ratio"], width=0.4, label="speed ratio")
        ax.set_xticks(list(positions), labels, rotation=30, ha="right", fontsize=7)
        ax.legend(fontsize=7)
        caption = "Memory saving and generation speed ratio of each pruned model (no risk ratios given)."
    fig.tight_layout()
    png, svg = folder / "cost_vs_risk.png", folder / "cost_vs_risk.svg"
    atomic.write_with(png, lambda p: fig.savefig(p, format="png", dpi=150))
    atomic.write_with(svg, lambda p: fig.savefig(p, format="svg"))
    plt.close(fig)
    return Figure(name="cost_vs_risk", caption=caption, png=png, svg=svg)
