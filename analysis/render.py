"""Render report sections as Markdown, self-contained HTML and LaTeX (booktabs).

The HTML opens with the first screen (demo banner, what the run is, headline findings, key
figure) and a table of contents; a section's first table is its summary, the others (and
any longer than ``FOLD_ROWS``) are folded below it, and every table scrolls in its own box.

Every cell, caption and text comes from a run's artifacts (model output and dataset text
included), so each format escapes everything it prints: HTML with ``html.escape``, Markdown
its markup characters ``<``, ``>``, ``&`` (quotes stay readable) and ``|`` (which would end a
table cell), LaTeX its special characters.
"""

from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass, field

import pandas as pd

from analysis.headlines import Headline, sig3
from analysis.sections import Figure, ReportSection

KEY_COLUMNS = ("cell", "baseline")  # cell keys: shown last, behind a click in HTML
FOLD_ROWS = 12  # a longer table is folded even when it is its section's summary

_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
          "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:1.5em auto;padding:0 1em;
overflow-wrap:anywhere}
table{border-collapse:collapse;margin:0.5em 0;font-size:0.85em}
th,td{border-bottom:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top;overflow-wrap:normal}
caption{caption-side:top;text-align:left;font-weight:bold;padding:4px 0}
.scroll{overflow-x:auto;max-width:100%}
img{max-width:100%}figcaption{font-size:0.9em;color:#333}.sources{font-size:0.8em;color:#555}
details.key summary{color:#555;cursor:pointer;font-size:0.9em}details.key code{font-size:0.8em}
details.table>summary{cursor:pointer;font-weight:bold;margin:0.6em 0}
.banner{background:#fff3cd;border:1px solid #e0c36a;padding:6px 10px;font-weight:bold}
.run{background:#f4f6f8;border:1px solid #d0d7de;padding:6px 12px;margin:0.8em 0}
.run dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:4px 0}
.run dt{font-weight:bold}.run dd{margin:0}
.headlines li{margin:0.3em 0}.headlines details{font-size:0.85em;color:#333}
nav.toc{font-size:0.9em}nav.toc ol{columns:2}"""


def cell_text(value) -> str:
    """A table entry as plain text: floats to 3 significant digits, missing values empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return sig3(value)
    return str(value)


@dataclass
class FirstScreen:
    """The top of the report: demo banner, what the run is, headline findings, key figure."""

    banner: str = ""
    facts: list[tuple[str, str]] = field(default_factory=list)
    headlines: list[Headline] = field(default_factory=list)
    key_figure: Figure | None = None
    links: list[tuple[str, str]] = field(default_factory=list)  # (report-relative href, text)


def _md(text: str) -> str:
    """Markdown text: markup characters escaped (``<``, ``>``, ``&``), quotes left as they are,
    and ``|`` (which would end a table cell)."""
    return html.escape(" ".join(str(text).split()), quote=False).replace("|", "\\|")


def shown_columns(table: pd.DataFrame) -> pd.DataFrame:
    """The table with its cell-key columns last: systems are read by their labels first."""
    keys = [c for c in KEY_COLUMNS if c in table.columns]
    return table[[c for c in table.columns if c not in keys] + keys]


def markdown_table(table: pd.DataFrame) -> str:
    table = shown_columns(table)
    header = "| " + " | ".join(_md(c) for c in table.columns) + " |"
    rule = "|" + "---|" * len(table.columns)
    rows = ["| " + " | ".join(_md(cell_text(v)) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def to_markdown(title: str, sections: list[ReportSection], first: FirstScreen | None = None) -> str:
    out = [f"# {_md(title)}", ""]
    if first is not None:
        out += [f"**{_md(first.banner)}**", ""] if first.banner else []
        out += [f"- **{_md(what)}**: {_md(value)}" for what, value in first.facts] + [""]
        out += ["## Headline findings", ""] + [f"- {_md(h.text)}" for h in first.headlines] + [""]
        if first.key_figure is not None:
            out += [_md_figure(first.key_figure)]
        out += [f"[{_md(text)}]({href})" for href, text in first.links] + [""]
    out += ["## Contents", ""] + [f"{i}. {_md(s.title)}" for i, s in enumerate(sections, 1)] + [""]
    for section in sections:
        out += [f"## {_md(section.title)}", ""]
        out += [_md(p) + "\n" for p in _paragraphs(section.text)]
        for caption, table in section.tables.items():
            out += [f"**{_md(caption)}**", "", markdown_table(table), ""]
        out += [_md_figure(fig) for fig in section.figures if fig is not _key(first)]
        if section.sources:
            out += ["Sources: " + ", ".join(f"`{_md(s)}`" for s in section.sources), ""]
    return "\n".join(out)


def _md_figure(fig: Figure) -> str:
    return f"![{_md(fig.caption)}](figures/{fig.png.name})\n\n*{_md(fig.caption)}*\n"


def _key(first: FirstScreen | None) -> Figure | None:
    return None if first is None else first.key_figure


def html_table(caption: str, table: pd.DataFrame) -> str:
    """An HTML table in its own scrolling box; cell keys last, each behind a click."""
    e = html.escape
    table = shown_columns(table)
    keyed = [c in KEY_COLUMNS for c in table.columns]
    head = "".join(f"<th>{e(str(c))}</th>" for c in table.columns)
    body = "".join("<tr>" + "".join(_html_cell(v, k) for v, k in zip(row, keyed)) + "</tr>\n"
                   for row in table.itertuples(index=False))
    return (f"<div class=\"scroll\"><table>\n<caption>{e(caption)}</caption>\n<thead><tr>{head}</tr></thead>\n"
            f"<tbody>\n{body}</tbody>\n</table></div>")


def _html_cell(value, key: bool) -> str:
    text = html.escape(cell_text(value))
    if key and text:
        return f"<td><details class=\"key\"><summary>key</summary><code>{text}</code></details></td>"
    return f"<td>{text}</td>"


def anchor(title: str) -> str:
    return "s-" + "-".join(re.findall(r"[a-z0-9]+", title.lower()))


def to_html(title: str, sections: list[ReportSection], first: FirstScreen | None = None) -> str:
    e = html.escape
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{e(title)}</title>"
             f"<style>{_CSS}</style></head><body>\n<h1>{e(title)}</h1>"]
    if first is not None:
        parts.append(_first_screen(first))
    items = "".join(f"<li><a href=\"#{anchor(s.title)}\">{e(s.title)}</a></li>" for s in sections)
    parts.append(f"<nav class=\"toc\" id=\"contents\"><h2>Contents</h2><ol>{items}</ol></nav>")
    for section in sections:
        parts.append(f"<section id=\"{anchor(section.title)}\">\n<h2>{e(section.title)}</h2>")
        parts += [f"<p>{e(p)}</p>" for p in _paragraphs(section.text)]
        for i, (caption, table) in enumerate(section.tables.items()):
            shown = html_table(caption, table)
            if i > 0 or len(table) > FOLD_ROWS:  # details below the section's summary table
                shown = (f"<details class=\"table\"><summary>{e(caption)} ({len(table)} rows)</summary>"
                         f"{shown}</details>")
            parts.append(shown)
        for fig in section.figures:
            if fig is _key(first):
                parts.append("<p><a href=\"#key-figure\">Figure: shown at the top</a>: "
                             f"{e(fig.caption)}</p>")
            else:
                parts.append(_html_figure(fig))
        if section.sources:
            items = "".join(f"<li><code>{e(s)}</code></li>" for s in section.sources)
            parts.append(f"<details class=\"sources\"><summary>Sources ({len(section.sources)})"
                         f"</summary><ul>{items}</ul></details>")
        parts.append("</section>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _first_screen(first: FirstScreen) -> str:
    e = html.escape
    parts = [f"<p class=\"banner\" id=\"demo-banner\">{e(first.banner)}</p>"] if first.banner else []
    facts = "".join(f"<dt>{e(what)}</dt><dd>{e(value)}</dd>" for what, value in first.facts)
    parts.append(f"<div class=\"run\" id=\"run-box\"><strong>What this run is</strong><dl>{facts}</dl></div>")
    items = []
    for h in first.headlines:
        lines = "".join(f"<li>{e(d)}</li>" for d in h.details)
        more = (f"<details><summary>{len(h.details)} CI(s)</summary><ul>{lines}</ul></details>"
                if h.details and not h.effect else "")
        items.append(f"<li>{e(h.text)}{more}</li>")
    if not items:
        items.append("<li>Nothing could be compared (see Missing data).</li>")
    parts.append(f"<section class=\"headlines\" id=\"headlines\"><h2>Headline findings</h2>"
                 f"<ol>{''.join(items)}</ol></section>")
    if first.key_figure is not None:
        parts.append(_html_figure(first.key_figure, "key-figure"))
    parts += [f"<p><a href=\"{e(href)}\">{e(text)}</a></p>" for href, text in first.links]
    return "\n".join(parts)


def _html_figure(fig: Figure, ident: str = "") -> str:
    e = html.escape
    data = base64.b64encode(fig.png.read_bytes()).decode("ascii")
    attr = f" id=\"{ident}\"" if ident else ""
    return (f"<figure{attr}><img src=\"data:image/png;base64,{data}\" alt=\"{e(fig.caption)}\">"
            f"<figcaption>{e(fig.caption)}</figcaption></figure>")


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
