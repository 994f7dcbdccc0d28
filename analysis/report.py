"""Write a run's report: ``report.md``, a self-contained ``report.html``, every table as CSV
and LaTeX (booktabs) and the figures, all under the run's report folder (``RunStore``).

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
from analysis.render import latex_table, to_html, to_markdown
from analysis.risk import risk_table
from analysis.sections import ReportContext
from analysis.validity_section import attach_flags, run_validity
from harness import atomic

SECTION_PROVIDERS = [
    rs.missing_section, findings.report_section, rs.risk_section, seed_section.report_section,
    validity_section.report_section, recovery.recovery_section,
    standard_quality.report_section, rs.quality_section, rs.overlap_section, rs.output_section,
    rs.sparsity_section, cost.report_section, human_eval.report_section, rs.summaries_section,
    rs.provenance_section,
]


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
    title = f"prunescope report: {ctx.store.root.resolve().name}"
    atomic.write_text(out / "report.md", to_markdown(title, sections))
    atomic.write_text(out / "report.html", to_html(title, sections))
    return out / "report.html"


def _slug(text: str, limit: int = 60) -> str:
    words = re.findall(r"[a-z0-9]+", text.lower())
    kept = [w for i, w in enumerate(words) if len("_".join(words[: i + 1])) <= limit]
    return "_".join(kept or words[:1])
