"""A report section: what each analysis (risk, human evaluation, cost) hands to the report.

The report renders every section to Markdown, HTML (escaped) and LaTeX, and writes each table
as CSV, so each number can be traced to the artifacts named in ``sources``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


@dataclass
class Figure:
    name: str  # file stem under report/figures/
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
