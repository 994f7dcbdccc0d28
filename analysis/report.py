"""Write a run's report: ``report.md``, a self-contained ``report.html`` (first screen: what
the run is, headline findings from the statistics, the key figure), ``summaries.html`` (the
side-by-side summaries viewer, ``analysis.viewer``), every table as CSV and LaTeX (booktabs)
and the figures, all under the run's report folder (``RunStore``).

The report is a list of sections from ``SECTION_PROVIDERS``; each provider receives the
report's one ``ReportContext`` (store, analysis settings, risk-ratio table, the run's scores)
and returns a ``ReportSection`` or None. Other analyses add their provider to the list.
"""

from __future__ import annotations

import re
from pathlib import Path

from analysis import cost, human_eval, recovery, standard_quality, validity_section
from analysis import findings, seed_section
from analysis import run_sections as rs
from analysis.headlines import headlines
from analysis.overview import run_overview
from analysis.render import FirstScreen, latex_table, to_html, to_markdown
from analysis.risk import risk_table
from analysis.sections import Figure, ReportContext, ReportSection
from analysis.viewer import write_viewer
from analysis.validity_section import attach_flags, run_validity
from harness import atomic

SECTION_PROVIDERS = [
    rs.missing_section, findings.report_section, rs.risk_section, seed_section.report_section,
    validity_section.report_section, recovery.recovery_section,
    standard_quality.report_section, rs.quality_section, rs.overlap_section, rs.output_section,
    rs.sparsity_section, cost.report_section, human_eval.report_section, rs.summaries_section,
    rs.provenance_section,
]
# The figure the first screen shows: the first of these the report draws (the seed-pooled
# ratio sweep of analysis.findings, else analysis.figures.ratios_with_ci).
KEY_FIGURES = ("risk_ratio_vs_sparsity", "risk_ratios_ci")


def report_context(run_dir: str | Path, definition: str | None = None, threshold: float | None = None,
                   n_boot: int | None = None, seed: int | None = None) -> ReportContext:
    """The report's context with its risk-ratio table and metric validity; settings default to
    the study's ``analysis`` section. Where the scores carry ground truth, each risk row also
    holds its metric's ``validity`` and ``validity_flag`` (``analysis.validity_section``)."""
    ctx = ReportContext.of(run_dir)
    cfg = ctx.settings
    settings = {"definition": definition or cfg.risk,
                "threshold": cfg.risk_threshold if threshold is None else threshold,
                "n_boot": n_boot or cfg.bootstrap, "seed": cfg.seed if seed is None else seed}
    ctx.validity = run_validity(ctx.run, settings["n_boot"], settings["seed"])
    risk = attach_flags(risk_table(ctx.run, **settings), ctx.validity)
    risk.attrs.update(settings)
    ctx.risk = risk if not risk.empty else None
    return ctx


def write_report(run_dir: str | Path, definition: str | None = None, threshold: float | None = None,
                 n_boot: int | None = None, seed: int | None = None) -> Path:
    """Write the report of a run directory; returns the path of report.html."""
    return write_context(report_context(run_dir, definition, threshold, n_boot, seed))


def write_context(ctx: ReportContext) -> Path:
    """Write the report of a built context; returns the path of report.html."""
    sections = [s for s in (provider(ctx) for provider in SECTION_PROVIDERS) if s]
    out = ctx.store.report_dir
    tables = ctx.store.report_subdir("tables")
    for section in sections:
        for caption, table in section.tables.items():
            stem = _slug(f"{section.title} {caption}")
            atomic.write_with(tables / f"{stem}.csv", lambda p, t=table: t.to_csv(p, index=False))
            atomic.write_text(tables / f"{stem}.tex", latex_table(caption, table, section.sources))
    overview = run_overview(ctx)
    viewer = write_viewer(ctx)
    first = FirstScreen(overview.banner, overview.facts, headlines(ctx.risk), _key_figure(sections),
                        [(viewer.name, "Read the summaries side by side (summaries viewer)")])
    atomic.write_text(out / "report.md", to_markdown(overview.title, sections, first))
    atomic.write_text(out / "report.html", to_html(overview.title, sections, first))
    ctx.store.seal_report()
    return out / "report.html"


def _key_figure(sections: list[ReportSection]) -> Figure | None:
    """The first of ``KEY_FIGURES`` the report draws, else its first figure."""
    found = [f for s in sections for f in s.figures]
    return next((f for name in KEY_FIGURES for f in found if f.name == name), found[0] if found else None)


def _slug(text: str, limit: int = 60) -> str:
    words = re.findall(r"[a-z0-9]+", text.lower())
    kept = [w for i, w in enumerate(words) if len("_".join(words[: i + 1])) <= limit]
    return "_".join(kept or words[:1])
