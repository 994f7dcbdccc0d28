"""Render report sections as Markdown, self-contained HTML and LaTeX (booktabs).

Every cell, caption and text comes from a run's artifacts (model output and dataset text
included), so each format escapes everything it prints: HTML with ``html.escape``, Markdown
the same plus ``|`` (which would end a table cell), LaTeX its special characters.
"""

from __future__ import annotations

import base64
import html
import math

import pandas as pd

from analysis.sections import ReportSection

_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
          "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}
table{border-collapse:collapse;margin:1em 0;font-size:0.85em}
th,td{border-bottom:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
caption{caption-side:top;text-align:left;font-weight:bold;padding:4px 0}
img{max-width:100%}figcaption{font-size:0.9em;color:#333}.sources{font-size:0.8em;color:#555}"""


def cell_text(value) -> str:
    """A table entry as plain text: floats to 4 significant digits, missing values empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _md(text: str) -> str:
    return html.escape(" ".join(str(text).split())).replace("|", "\\|")


def markdown_table(table: pd.DataFrame) -> str:
    header = "| " + " | ".join(_md(c) for c in table.columns) + " |"
    rule = "|" + "---|" * len(table.columns)
    rows = ["| " + " | ".join(_md(cell_text(v)) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def to_markdown(title: str, sections: list[ReportSection]) -> str:
    out = [f"# {_md(title)}", ""]
    for section in sections:
        out += [f"## {_md(section.title)}", ""]
        out += [_md(p) + "\n" for p in _paragraphs(section.text)]
        for caption, table in section.tables.items():
            out += [f"**{_md(caption)}**", "", markdown_table(table), ""]
        for fig in section.figures:
            out += [f"![{_md(fig.caption)}](figures/{fig.png.name})", "", f"*{_md(fig.caption)}*", ""]
        if section.sources:
            out += ["Sources: " + ", ".join(f"`{_md(s)}`" for s in section.sources), ""]
    return "\n".join(out)


def html_table(caption: str, table: pd.DataFrame) -> str:
    e = html.escape
    head = "".join(f"<th>{e(str(c))}</th>" for c in table.columns)
    body = "".join("<tr>" + "".join(f"<td>{e(cell_text(v))}</td>" for v in row) + "</tr>\n"
                   for row in table.itertuples(index=False))
    return (f"<table>\n<caption>{e(caption)}</caption>\n<thead><tr>{head}</tr></thead>\n"
            f"<tbody>\n{body}</tbody>\n</table>")


def to_html(title: str, sections: list[ReportSection]) -> str:
    e = html.escape
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{e(title)}</title>"
             f"<style>{_CSS}</style></head><body>\n<h1>{e(title)}</h1>"]
    for section in sections:
        parts.append(f"<section>\n<h2>{e(section.title)}</h2>")
        parts += [f"<p>{e(p)}</p>" for p in _paragraphs(section.text)]
        parts += [html_table(caption, table) for caption, table in section.tables.items()]
        for fig in section.figures:
            data = base64.b64encode(fig.png.read_bytes()).decode("ascii")
            parts.append(f"<figure><img src=\"data:image/png;base64,{data}\" alt=\"{e(fig.caption)}\">"
                         f"<figcaption>{e(fig.caption)}</figcaption></figure>")
        if section.sources:
            items = "".join(f"<li><code>{e(s)}</code></li>" for s in section.sources)
            parts.append(f"<details class=\"sources\"><summary>Sources ({len(section.sources)})"
                         f"</summary><ul>{items}</ul></details>")
        parts.append("</section>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def latex_escape(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in str(text))


def latex_table(caption: str, table: pd.DataFrame, sources: list[str] = ()) -> str:
    """A booktabs table; comment lines above it name its source artifacts (run-relative)."""
    cols = "l" * len(table.columns)
    lines = [f"% source: {s}" for s in sources]
    lines += [r"\begin{table}[t]", r"\centering", r"\small",
             rf"\caption{{{latex_escape(caption)}}}", rf"\begin{{tabular}}{{{cols}}}", r"\toprule",
             " & ".join(latex_escape(c) for c in table.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(cell_text(v)) for v in row) + r" \\"
              for row in table.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


def _paragraphs(text: str) -> list[str]:
    return [p.strip() for p in text.split("\n\n") if p.strip()]
