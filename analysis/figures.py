"""Report figures (matplotlib, Agg), each saved as PNG and SVG under the report's figures/."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.load import RunData
from analysis.risk import risk_metrics
from analysis.sections import Figure


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out_dir: Path, name: str, caption: str) -> Figure:
    from harness import atomic

    png, svg = out_dir / f"{name}.png", out_dir / f"{name}.svg"
    atomic.write_with(png, lambda p: fig.savefig(p, format="png", dpi=120, bbox_inches="tight"))
    atomic.write_with(svg, lambda p: fig.savefig(p, format="svg", bbox_inches="tight"))
    _pyplot().close(fig)
    return Figure(name, caption, png, svg)


def _family(row) -> str:
    """A line in the risk-vs-sparsity plot: one model and pruning method (N:M kept apart)."""
    structure = "" if row["structure"] == "unstructured" else f" {row['structure']}"
    return f"{row['model']} {row['method']}{'-owl' if row['owl'] else ''}{structure}"


def is_nm(structure: str) -> bool:
    return re.fullmatch(r"\d+:\d+", str(structure)) is not None


def sweep_positions(points) -> dict[tuple[float, str], float]:
    """x of each (sparsity, structure) on a sparsity axis: unstructured systems at their
    sparsity; each N:M pattern after all of them, one step apart (the smallest gap between
    the unstructured sparsities, else 0.1), so that 2:4 is never drawn at 0.5 among them."""
    points = list(dict.fromkeys((float(s), str(t)) for s, t in points))
    plain = sorted({s for s, t in points if not is_nm(t)})
    gaps = np.diff(plain)
    step = float(gaps[gaps > 0].min()) if (gaps > 0).any() else 0.1
    patterns = sorted({t for _, t in points if is_nm(t)}, key=lambda t: [int(x) for x in t.split(":")][::-1])
    start = max(plain) if plain else 0.5
    at = {t: start + step * (i + 1) for i, t in enumerate(patterns)}
    return {(s, t): at[t] if is_nm(t) else s for s, t in points}


def draw_sweep(ax, rows: pd.DataFrame, reference: float | None = None) -> None:
    """One panel of a sweep: ``rows`` (method, sparsity, structure, value, low, high) as one
    line with CI bars per method over the unstructured sparsities, and that method's N:M
    systems as points joined by a dotted line to the right of a separator; ``reference``: a
    dashed horizontal line (1 for ratios, the dense value for rates)."""
    positions = sweep_positions(zip(rows["sparsity"], rows["structure"]))
    x_of = [positions[(float(s), str(t))] for s, t in zip(rows["sparsity"], rows["structure"])]
    rows = rows.assign(x=x_of).sort_values("x")
    colours = _pyplot().rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (method, line) in enumerate(rows.groupby("method", sort=False)):
        for nm, part in line.groupby(line["structure"].map(is_nm)):
            err = np.vstack([part["value"] - part["low"], part["high"] - part["value"]])
            ax.errorbar(part["x"], part["value"], yerr=np.nan_to_num(np.clip(err, 0, None)), capsize=3,
                        marker="s" if nm else "o", ls=":" if nm else "-", color=colours[i % len(colours)],
                        label=f"{method} (N:M)" if nm else method)
    if reference is not None:
        ax.axhline(reference, color="grey", lw=0.8, ls="--")
    _sweep_axis(ax, zip(rows["x"], rows["structure"]))


def _sweep_axis(ax, placed) -> None:
    """Ticks at the drawn (x, structure) points: sparsities as percentages ("dense" at a dense
    point), N:M patterns by name, after a dotted separator."""
    placed = set(placed)
    plain = sorted({(x, t) for x, t in placed if not is_nm(t)})
    patterns = sorted({(x, t) for x, t in placed if is_nm(t)})
    if plain and patterns:
        ax.axvline((plain[-1][0] + patterns[0][0]) / 2, color="black", lw=0.6, ls=":")
    ticks = [*plain, *patterns]
    ax.set_xticks([x for x, _ in ticks], [t if is_nm(t) or t == "dense" else f"{x:.0%}" for x, t in ticks],
                  fontsize=7)


def sweep_figure(table: pd.DataFrame, out_dir: Path, name: str, caption: str, ylabel: str,
                 references: dict[str, float] | None = None,
                 titles: dict[str, str] | None = None) -> Figure | None:
    """A panel per value of ``table["panel"]`` (in order), each drawn by :func:`draw_sweep`;
    ``references``: panel -> its dashed line; ``titles``: panel -> its title."""
    if table.empty:
        return None
    panels = list(dict.fromkeys(table["panel"]))
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.8 * len(panels), 3.4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        draw_sweep(ax, table[table["panel"] == panel], (references or {}).get(panel))
        ax.set_title((titles or {}).get(panel, panel), fontsize=9)
        ax.set_xlabel("sparsity (unstructured) | N:M pattern", fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return _save(fig, out_dir, name, caption)


def risk_vs_sparsity(run: RunData, out_dir: Path) -> Figure | None:
    """Mean per-document risk against sparsity; each line starts at its dense model (x = 0)
    and N:M systems are drawn after the unstructured sparsities (``sweep_positions``)."""
    tidy = run.tidy
    frames = []
    for name, (column, invert) in risk_metrics().items():
        rows = tidy[tidy["metric"] == column]
        frames.append(rows.assign(metric=name, value=1 - rows["value"] if invert else rows["value"]))
    risks = pd.concat(frames)
    if risks.empty:
        return None
    means = risks.groupby(["task", "metric", "model", "method", "structure", "owl", "sparsity"],
                          as_index=False)["value"].mean()
    tasks, metrics = list(dict.fromkeys(means["task"])), [m for m in risk_metrics() if m in set(means["metric"])]
    plt = _pyplot()
    fig, axes = plt.subplots(len(tasks), len(metrics), figsize=(4 * len(metrics), 3 * len(tasks)),
                             squeeze=False)
    for i, task in enumerate(tasks):
        for j, metric in enumerate(metrics):
            ax = axes[i][j]
            here = means[(means["task"] == task) & (means["metric"] == metric)]
            dense = here[here["method"] == "dense"].set_index("model")["value"]
            pruned = here[here["method"] != "dense"]
            positions = sweep_positions(zip(pruned["sparsity"], pruned["structure"]))
            for family, line in pruned.groupby(pruned.apply(_family, axis=1)):
                line = line.assign(x=[positions[(float(s), str(t))] for s, t in
                                      zip(line["sparsity"], line["structure"])]).sort_values("x")
                model = line["model"].iloc[0]
                x = ([0.0] if model in dense else []) + list(line["x"])
                y = ([dense[model]] if model in dense else []) + list(line["value"])
                ax.plot(x, y, marker="o", label=family)
            _sweep_axis(ax, [(x, t) for (_, t), x in positions.items()] + [(0.0, "dense")] * (not dense.empty))
            ax.set_title(f"{task}: {metric}", fontsize=9)
            ax.set_xlabel("sparsity")
            ax.set_ylabel("mean risk")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, out_dir, "risk_vs_sparsity",
                 "Mean hallucination risk per metric against sparsity, over each cell's scored "
                 "documents (prompts averaged; sparsity 0: the dense model).")


def _metric_title(risk: pd.DataFrame, metric: str) -> str:
    """The metric's name, marked where its validity is flagged (AUC CI includes 0.5) on a task."""
    if "validity_flag" not in risk.columns:
        return metric
    flagged = risk.loc[(risk["metric"] == metric) & (risk["validity_flag"] != ""), "task"].unique()
    return f"{metric}\nFLAGGED validity on {', '.join(flagged)}" if len(flagged) else metric


def ratio_vs_overlap(risk: pd.DataFrame, run: RunData, out_dir: Path,
                     overlap: str = "rougeL_src") -> Figure | None:
    """Risk ratio against the pruned system's lexical overlap with its sources."""
    means = run.tidy[run.tidy["metric"] == overlap].groupby("cell")["value"].mean().rename("overlap")
    data = risk.join(means, on="cell").dropna(subset=["ratio", "overlap"])
    if data.empty:
        return None
    metrics = [m for m in risk_metrics() if m in set(data["metric"])]
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for method, rows in data[data["metric"] == metric].groupby("method"):
            ax.scatter(rows["overlap"], rows["ratio"], label=method)
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_title(_metric_title(risk, metric), fontsize=9)
        ax.set_xlabel(f"mean {overlap} (pruned)")
        ax.set_ylabel("risk ratio")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, out_dir, "ratio_vs_overlap",
                 f"Risk ratio against the pruned system's mean {overlap} (lexical overlap with the source).")


def ratios_with_ci(risk: pd.DataFrame, out_dir: Path) -> Figure | None:
    """Per-dataset risk ratios with their bootstrap CIs as error bars."""
    data = risk.dropna(subset=["ratio"])
    if data.empty:
        return None
    if data["prompt"].nunique() > 1:  # a point per system and prompt
        data = data.assign(system=data["system"] + " [" + data["prompt"].astype(str) + "]")
    metrics = [m for m in risk_metrics() if m in set(data["metric"])]
    tasks = list(dict.fromkeys(data["task"]))
    systems = list(dict.fromkeys(data.sort_values(["model", "method", "sparsity"])["system"]))
    width = 0.8 / len(tasks)
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(4, 0.6 * len(systems) + 2) * len(metrics), 3.6),
                             squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for k, task in enumerate(tasks):
            rows = data[(data["metric"] == metric) & (data["task"] == task)].set_index("system").reindex(systems)
            x = np.arange(len(systems)) + (k - (len(tasks) - 1) / 2) * width
            err = np.vstack([rows["ratio"] - rows["ci_low"], rows["ci_high"] - rows["ratio"]])
            ax.errorbar(x, rows["ratio"], yerr=np.nan_to_num(err), fmt="o", capsize=3, label=task)
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_xticks(np.arange(len(systems)), systems, rotation=45, ha="right", fontsize=7)
        ax.set_title(_metric_title(risk, metric), fontsize=9)
        ax.set_ylabel("risk ratio (95% CI)")
        ax.legend(fontsize=7, title="dataset", title_fontsize=7)
    fig.tight_layout()
    return _save(fig, out_dir, "risk_ratios_ci",
                 "Risk ratio per dataset, metric and pruned system with paired-bootstrap 95% CIs; "
                 "the dashed line marks the dense baseline (1).")
