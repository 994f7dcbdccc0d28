"""The summaries viewer: ``report/summaries.html``, one self-contained page (no network).

Pick a task and a document and read side by side the source, the reference, the dense
summary and every pruned system's summary. In each text the words absent from the source
are marked ("novel"), and words joined into a 2-gram the source never has ("new 2-gram");
where the task has gold facts (the ``facts`` task), a summary's hallucinated facts are
marked (``harness.scoring.ground_truth.hallucinated_facts``) and its omitted key facts
listed. The documents can be ordered by how much a pruned system's risk rose over the dense
model's on the same document (per risk metric).

All text reaches the page as JSON inside a ``<script type="application/json">`` block with
``<``, ``>`` and ``&`` written as JSON escapes, and the page's script only ever sets
``textContent``: model output cannot become markup.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import pandas as pd

from analysis.risk import risk_values
from analysis.sections import ReportContext
from harness import atomic
from harness.errors import PrunescopeError
from harness.records import CellInfo
from harness.scoring.ground_truth import hallucinated_facts, occurs

PAGE = "summaries.html"
MAX_DOCS = 300  # documents per task kept in the page (those where risk rose most first)
_WORD = re.compile(r"\w+")

Documents = Callable[[str], Mapping[str, object]]  # task -> doc id -> TaskRecord-like


def study_records(ctx: ReportContext) -> tuple[Documents, list[str]]:
    """The records of each task as the run's study.yaml loads them, and the problems met (a
    task whose data cannot be read is shown without its sources, and the page says why)."""
    from harness.config import TaskConfig
    from tasks import load_task

    configs = {t.get("name"): t for t in ctx.store.read_study_raw().get("tasks") or [] if isinstance(t, dict)}
    cache: dict[str, Mapping[str, object]] = {}
    problems: list[str] = []

    def get(task: str) -> Mapping[str, object]:
        if task not in cache:
            cache[task] = {}
            if task not in configs:
                problems.append(f"task {task}: not in study.yaml, so its source documents are not shown")
                return cache[task]
            try:
                c = TaskConfig.model_validate(configs[task])
                data = load_task(c.name, data=c.data, fields=c.fields or None, split=c.split,
                                 on_bad_record=c.on_bad_record)
                cache[task] = {r.id: r for r in data.records}
            except (PrunescopeError, ValueError, OSError) as err:
                problems.append(f"task {task}: source documents not shown ({err})")
        return cache[task]

    return get, problems


def segments(text: str, source: str | None, marked: set[str] = frozenset(),
             facts: list[str] = ()) -> list[list[str]]:
    """``text`` as [piece, class] runs: class "novel" (a word absent from ``source``), "ngram"
    (two words, apart by white space only, whose 2-gram ``source`` lacks), "halluc" (a mention in ``marked``),
    "fact" (a gold fact value in ``facts``) or "" (plain). No source: one plain run."""
    classes = [""] * len(text)
    if source is not None:
        src = [w.lower() for w in _WORD.findall(source)]
        vocab, pairs = set(src), set(zip(src, src[1:]))
        previous = None
        for match in _WORD.finditer(text):
            word = match.group().lower()
            if word not in vocab:
                classes[match.start():match.end()] = ["novel"] * (match.end() - match.start())
            elif (previous is not None and not text[previous.end():match.start()].strip()
                  and previous.group().lower() in vocab and (previous.group().lower(), word) not in pairs):
                classes[previous.start():match.end()] = [c or "ngram" for c in classes[previous.start():match.end()]]
            previous = match
    for cls, values in (("fact", facts), ("halluc", marked)):
        for value in values:
            for match in re.finditer(rf"(?<![^\W_]){re.escape(value)}(?![^\W_])", text, re.IGNORECASE):
                classes[match.start():match.end()] = [cls] * (match.end() - match.start())
    runs: list[list[str]] = []
    for ch, cls in zip(text, classes):
        if runs and runs[-1][1] == cls:
            runs[-1][0] += ch
        else:
            runs.append([ch, cls])
    return runs


def risk_rises(ctx: ReportContext) -> pd.DataFrame:
    """Per pruned cell, risk metric and document: pruned risk - dense risk."""
    values = risk_values(ctx.run.paired)
    return values.assign(rise=values["pruned"] - values["dense"])[["cell", "metric", "doc_id", "rise"]]


def viewer_data(ctx: ReportContext, documents: Documents | None = None, max_docs: int = MAX_DOCS) -> dict:
    """The page's data: per task its documents, each with source, reference, gold facts and
    every system's highlighted summary and risk rises."""
    problems: list[str] = []
    if documents is None:
        documents, problems = study_records(ctx)
    rises = risk_rises(ctx)
    rise_of: dict[tuple[str, str], dict[str, float]] = {}
    for row in rises.itertuples():
        rise_of.setdefault((row.cell, row.doc_id), {})[row.metric] = float(row.rise)
    cells = sorted(ctx.run.cells.values(), key=lambda c: (c.prune.method != "dense", c.model, c.prune.method,
                                                          c.prune.sparsity, c.label, c.prompt))
    tasks = {}
    for task in sorted({c.task for c in cells}):
        on_task = [c for c in cells if c.task == task and ctx.store.generation_path(c.key).exists()]
        texts = {c.key: ctx.store.read_generation_texts(c.key) for c in on_task}
        records = documents(task)
        several = len({c.prompt for c in on_task}) > 1
        docs = [_document(doc, records.get(doc), on_task, texts, rise_of, several)
                for doc in sorted(set().union(*texts.values()) if texts else [])]
        docs.sort(key=lambda d: -max(d["rise"].values(), default=0))
        if len(docs) > max_docs:
            problems.append(f"task {task}: {max_docs} of its {len(docs)} documents are shown, those "
                            "where a pruned system's risk rose most")
        tasks[task] = sorted(docs[:max_docs], key=lambda d: d["id"])
    return {"metrics": list(dict.fromkeys(rises["metric"])), "tasks": tasks, "problems": problems, "max_docs": max_docs}


def _document(doc: str, record, cells: list[CellInfo], texts: dict, rise_of: dict, several: bool) -> dict:
    source = getattr(record, "document", None)
    facts = getattr(record, "facts", None)
    values = [f["value"] for f in facts] if facts else []
    summaries, best = [], {}
    for info in cells:
        if doc not in texts[info.key]:
            continue
        text = texts[info.key][doc]
        bad = hallucinated_facts(text, source, values) if facts and source is not None else set()
        rise = rise_of.get((info.key, doc), {})
        for metric, value in rise.items():
            best[metric] = max(best.get(metric, value), value)
        summaries.append({
            "system": info.system + (f" (prompt {info.prompt})" if several else ""), "cell": info.key,
            "dense": info.prune.method == "dense", "segments": segments(text, source, bad),
            "hallucinated": sorted(bad), "omitted": _omitted(text, facts), "rise": rise})
    reference = getattr(record, "reference", None)
    return {"id": doc, "source": segments(source, None, facts=values) if source is not None else None,
            "reference": segments(reference, source) if reference else None,
            "facts": [f"{f.get('type', 'fact')}: {f['value']}" for f in facts] if facts else None,
            "summaries": summaries, "rise": best}


def _omitted(text: str, facts: list[dict] | None) -> list[str] | None:
    """The key gold facts (all facts when none is marked key) whose value the text lacks."""
    if not facts:
        return None
    key = [f for f in facts if f.get("key", True)] or facts
    return [f"{f.get('type', 'fact')}: {f['value']}" for f in key if not occurs(f["value"], text)]


def script_json(data: dict) -> str:
    """JSON safe inside a <script> element: no ``<``, ``>`` or ``&`` left to end it."""
    return (json.dumps(data, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("&", "\\u0026"))


def viewer_html(title: str, data: dict) -> str:
    e = html.escape
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{e(title)}</title>"
            f"<style>{_CSS}</style></head><body>\n<h1>{e(title)}</h1>\n{_CONTROLS}\n"
            f"<script type=\"application/json\" id=\"data\">{script_json(data)}</script>\n"
            f"<script>{_SCRIPT}</script>\n</body></html>\n")


def write_viewer(ctx: ReportContext, documents: Documents | None = None) -> Path:
    """Write ``summaries.html`` beside the report; returns its path."""
    name = ctx.store.read_study_raw().get("name") or ctx.store.root.resolve().name
    path = ctx.store.report_dir / PAGE
    atomic.write_text(path, viewer_html(f"Summaries: {name}", viewer_data(ctx, documents)))
    return path


_CSS = """body{font-family:system-ui,sans-serif;margin:1em 1.5em;overflow-wrap:anywhere}
.controls{display:flex;flex-wrap:wrap;gap:12px;align-items:center;margin-bottom:0.6em}
#panes{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:10px}
.card{border:1px solid #ccc;border-radius:4px;padding:6px 10px;background:#fff}
.card.source{grid-column:span 2;background:#f7f7f7}.card.dense{background:#eef5ff}
.card h3{font-size:0.95em;margin:0.2em 0}.card p{white-space:pre-wrap;margin:0.3em 0}
.meta{font-size:0.8em;color:#555}
.novel{background:#ffe08a}.ngram{background:#fff4cf}.halluc{background:#ff9c9c;font-weight:bold}
.fact{text-decoration:underline;text-decoration-color:#1a7f37;text-decoration-thickness:2px}
#legend span{padding:0 4px;margin-right:6px}#problems{color:#a40000}"""

_CONTROLS = """<p><a href="report.html">Back to the report</a></p>
<div class="controls">
<label>Task <select id="task"></select></label>
<label>Order <select id="order"><option value="id">all documents, by id</option>
<option value="rise">documents where a pruned system's risk rose most (top 20)</option></select></label>
<label>Risk metric <select id="metric"></select></label>
<label>Document <select id="doc"></select></label>
</div>
<p id="legend" class="meta"><span class="novel">word absent from the source</span>
<span class="ngram">2-gram absent from the source</span><span class="halluc">hallucinated fact</span>
<span class="fact">gold fact</span></p>
<ul id="problems"></ul>
<div id="panes"></div>"""

_SCRIPT = r"""
const data = JSON.parse(document.getElementById('data').textContent);
const $ = id => document.getElementById(id);
function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}
function fill(select, values, labels) {
  select.replaceChildren(...values.map((v, i) => { const o = el('option', '', labels ? labels[i] : v); o.value = v; return o; }));
}
function fmt(x) { return (x >= 0 ? '+' : '') + x.toPrecision(3); }
function docs() {
  const all = data.tasks[$('task').value] || [];
  if ($('order').value !== 'rise') return all;
  const m = $('metric').value;
  return all.filter(d => (d.rise[m] || 0) > 0).sort((a, b) => b.rise[m] - a.rise[m]).slice(0, 20);
}
function listDocs() {
  const shown = docs(), m = $('metric').value;
  fill($('doc'), shown.map(d => d.id),
       shown.map(d => d.id + (d.rise[m] !== undefined ? ' (max ' + m + ' rise ' + fmt(d.rise[m]) + ')' : '')));
  showDoc();
}
function textCard(title, cls, segs, meta) {
  const card = el('div', 'card ' + cls);
  card.append(el('h3', '', title));
  const p = el('p', 'text');
  if (segs === null) p.append(el('em', '', 'not available'));
  else for (const [piece, c] of segs) p.append(c ? el('span', c, piece) : document.createTextNode(piece));
  card.append(p);
  for (const line of meta || []) card.append(el('div', 'meta', line));
  return card;
}
function showDoc() {
  const panes = $('panes'), id = $('doc').value;
  panes.replaceChildren();
  const d = (data.tasks[$('task').value] || []).find(x => x.id === id);
  if (!d) { panes.append(el('p', '', 'No document to show.')); return; }
  panes.dataset.doc = d.id;
  panes.append(textCard('Source ' + d.id, 'source', d.source, d.facts ? ['gold facts: ' + d.facts.join('; ')] : []));
  panes.append(textCard('Reference', 'reference', d.reference));
  for (const s of d.summaries) {
    const meta = Object.entries(s.rise).map(([m, v]) => m + ' risk ' + fmt(v) + ' vs dense');
    if (s.hallucinated.length) meta.push('hallucinated: ' + s.hallucinated.join('; '));
    if (s.omitted) meta.push(s.omitted.length ? 'omitted key facts: ' + s.omitted.join('; ') : 'no key fact omitted');
    meta.push('cell ' + s.cell);
    const card = textCard(s.system + (s.dense ? ' (dense)' : ''), s.dense ? 'dense summary' : 'summary', s.segments, meta);
    card.dataset.cell = s.cell;
    panes.append(card);
  }
}
fill($('task'), Object.keys(data.tasks));
fill($('metric'), data.metrics);
for (const p of data.problems) $('problems').append(el('li', '', p));
$('task').onchange = listDocs; $('order').onchange = listDocs; $('metric').onchange = listDocs;
$('doc').onchange = showDoc;
listDocs();
"""
