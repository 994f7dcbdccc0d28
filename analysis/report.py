"""Write a run's report: ``report/report.md``, a self-contained ``report/report.html``, and
under ``report/tables/`` every table as CSV and LaTeX (booktabs), figures under
``report/figures/``.

The report is a list of sections from ``SECTION_PROVIDERS``; each provider gets the run
directory and the risk-ratio table (None when no comparison could be made) and returns a
``ReportSection`` or None. Other analyses add their provider to the list.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from analysis import cost, human_eval
from analysis import run_sections as rs
from analysis.render import latex_table, to_html, to_markdown
from analysis.risk import risk_table
from harness import atomic

SECTION_PROVIDERS = [
    rs.risk_section, rs.quality_section, rs.overlap_section, rs.output_section,
    rs.sparsity_section, cost.report_section, human_eval.report_section, rs.summaries_section,
    rs.missing_section, rs.provenance_section,
]


def analysis_settings(run_dir: Path):
    """The study's ``analysis`` settings (defaults when the run has no study.yaml)."""
    import yaml

    from harness.config import AnalysisConfig, ConfigError

    path = Path(run_dir) / "study.yaml"
    raw = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.exists() else {}
    try:
        return AnalysisConfig.model_validate(raw.get("analysis") or {})
    except ValueError as exc:
        raise ConfigError(f"{path}: analysis: {exc}") from None


def compute_risk(run_dir: Path, definition: str | None = None, threshold: float | None = None,
                 n_boot: int | None = None, seed: int | None = None) -> pd.DataFrame:
    """The run's risk-ratio table; settings default to the study's ``analysis`` section."""
    cfg = analysis_settings(run_dir)
    settings = {"definition": definition or cfg.risk,
                "threshold": cfg.risk_threshold if threshold is None else threshold,
                "n_boot": n_boot or cfg.bootstrap, "seed": cfg.seed if seed is None else seed}
    table = risk_table(rs.run_data(run_dir), **settings)
    table.attrs.update(settings)
    return table


def write_report(run_dir: str | Path, definition: str | None = None, threshold: float | None = None,
                 n_boot: int | None = None, seed: int | None = None) -> Path:
    """Write the report of a run directory; returns the path of report.html."""
    run_dir = Path(run_dir)
    risk = compute_risk(run_dir, definition, threshold, n_boot, seed)
    sections = [s for s in (p(run_dir, risk if not risk.empty else None) for p in SECTION_PROVIDERS) if s]
    out = run_dir / "report"
    for section in sections:
        for caption, table in section.tables.items():
            stem = _slug(f"{section.title} {caption}")
            atomic.write_with(out / "tables" / f"{stem}.csv", lambda p, t=table: t.to_csv(p, index=False))
            atomic.write_text(out / "tables" / f"{stem}.tex", latex_table(caption, table, section.sources))
    title = f"prunescope report: {run_dir.resolve().name}"
    atomic.write_text(out / "report.md", to_markdown(title, sections))
    atomic.write_text(out / "report.html", to_html(title, sections))
    return out / "report.html"


def _slug(text: str, limit: int = 60) -> str:
    words = re.findall(r"[a-z0-9]+", text.lower())
    kept = [w for i, w in enumerate(words) if len("_".join(words[: i + 1])) <= limit]
    return "_".join(kept or words[:1])
