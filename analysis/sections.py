"""A report section and the one context every section provider receives.

A provider is ``(ctx: ReportContext) -> ReportSection | None`` (None: the run has nothing for
it). The report renders every section to Markdown, HTML (escaped) and LaTeX, and writes each
table as CSV, so each number can be traced to the artifacts named in ``sources``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd

from analysis.load import RunData, analysis_settings, load_run
from harness.store import RunStore


@dataclass
class Figure:
    name: str  # file stem under the report's figures folder
    caption: str
    png: Path
    svg: Path | None = None


@dataclass
class ReportSection:
    title: str
    text: str = ""  # plain prose; the renderer escapes it
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # caption -> table
    figures: list[Figure] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # run-relative artifact paths used


@dataclass
class ReportContext:
    """One report's inputs, built once: the run's store, its ``analysis`` settings, the
    risk-ratio table (None when nothing could be compared), the metric-validity table and,
    loaded on first use, the run's scores (``run``)."""

    store: RunStore
    settings: object  # harness.config.AnalysisConfig
    risk: pd.DataFrame | None = None
    # analysis.validity_section.run_validity; empty when the scores carry no ground truth
    validity: pd.DataFrame | None = None

    @classmethod
    def of(cls, run_dir: str | Path | RunStore, risk: pd.DataFrame | None = None) -> ReportContext:
        store = run_dir if isinstance(run_dir, RunStore) else RunStore(run_dir)
        return cls(store, analysis_settings(store), risk)

    @cached_property
    def run(self) -> RunData:
        return load_run(self.store)

    @property
    def bootstrap(self) -> tuple[int, int]:
        """(resamples, seed): the risk table's bootstrap settings, else the study's."""
        attrs = self.risk.attrs if self.risk is not None else {}
        return attrs.get("n_boot", self.settings.bootstrap), attrs.get("seed", self.settings.seed)

    @cached_property
    def seed_ratios(self) -> pd.DataFrame:
        """Risk ratios pooled over calibration seeds (``analysis.seeds.seed_ratios``), once."""
        from analysis.seeds import seed_ratios

        return seed_ratios(self.run, *self.bootstrap)

    @property
    def figures_dir(self) -> Path:
        return self.store.report_subdir("figures")
