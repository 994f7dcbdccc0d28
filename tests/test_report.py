"""The written report: escaping of model/dataset text, LaTeX booktabs, CSVs traceable to the
risk table, figures, provenance, missing dense cells, the CLI; the first screen (what the run
is, headlines derived from the statistics), folded and scrolling tables, and the summaries
viewer (highlights, gold facts, hostile text)."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pandas as pd
import pytest

from analysis.load import load_run
from analysis.overview import DEMO_BANNER, run_overview
from analysis.sections import ReportContext
from analysis.render import latex_escape, markdown_table
from analysis.report import SECTION_PROVIDERS, write_report
from analysis.risk import risk_table
from harness.cli.main import main
from tests.test_analysis import make_run

HOSTILE = ["<script>alert('x')</script> summary", "ends the table </table> early",
           "a | b || c", "50% of $x_1$ & {y} \\ ~z^2 #", "plain\n\nmultiline\ntext",
           '<img src=x onerror="window.__pwned=1"><script>window.__pwned=1</script> "quoted" & more']


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    keys = make_run(root, n_docs=10, texts=lambda i: " ".join(HOSTILE[i % 5:] + HOSTILE[:i % 5]))
    write_report(root, n_boot=200, seed=1)
    return root, keys


def test_html_escapes_every_generated_text(report):
    root, _ = report
    html = (root / "report" / "report.html").read_text()
    assert "<script>" not in html and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert "ends the table &lt;/table&gt; early" in html
    assert html.count("<table>") == html.count("</table>") > 3
    assert html.count("<tr>") == html.count("</tr>")


def test_markdown_table_is_not_broken_by_pipes_or_newlines(report):
    root, _ = report
    md = (root / "report" / "report.md").read_text()
    assert "<script>" not in md and "</table>" not in md
    block = md.split("**Generated summaries**")[1].strip().split("\n\n")[0].splitlines()
    unescaped_pipes = [len(re.findall(r"(?<!\\)\|", line)) for line in block]
    assert len(set(unescaped_pipes)) == 1 and len(block) == 2 + 8 * 2  # header, rule, 8 systems x 2 docs
    assert "a \\| b \\|\\| c" in md
    assert markdown_table(pd.DataFrame({"a|b": ["x\ny"]})) == "| a\\|b |\n|---|\n| x y |"


def test_latex_tables_use_booktabs_and_escape_text(report):
    root, _ = report
    tex = {p.name: p.read_text() for p in (root / "report" / "tables").glob("*.tex")}
    assert tex and all(r"\toprule" in t and r"\midrule" in t and r"\bottomrule" in t for t in tex.values())
    summaries = next(t for name, t in tex.items() if "generated_summaries" in name)
    assert r"50\% of \$x\_1\$ \& \{y\} \textbackslash{} \textasciitilde{}z\textasciicircum{}2 \#" in summaries
    assert latex_escape("a_b") == r"a\_b"
    assert "% source: generations/" in summaries


def test_risk_csv_is_the_risk_table_and_names_its_sources(report):
    root, keys = report
    tables = root / "report" / "tables"
    detail = pd.read_csv(next(tables.glob("hallucination_risk_ratios_risk_ratio_comparisons*.csv")))
    expected = risk_table(load_run(root), n_boot=200, seed=1)
    np.testing.assert_allclose(detail["ratio"], expected["ratio"])
    np.testing.assert_allclose(detail["ci_high"], expected["ci_high"])
    pivot = pd.read_csv(next(tables.glob("hallucination_risk_ratios_risk_ratio_95*.csv")))
    assert list(pivot.columns[:2]) == ["task", "metric"] and len(pivot) == 2 * 3
    first = expected.iloc[0]
    assert pivot.loc[(pivot["task"] == first["task"]) & (pivot["metric"] == first["metric"]),
                     first["system"]].iloc[0].startswith(f"{first['ratio']:.3f} [")
    md = (root / "report" / "report.md").read_text()
    assert f"`scores/{keys[('tiny', 'dense', 'news')]}.parquet`" in md
    assert "Risk ratio definition: mean_risk" in md and "200 resamples, seed 1" in md


def test_figures_are_written_and_embedded(report):
    root, _ = report
    figures = root / "report" / "figures"
    for name in ("risk_vs_sparsity", "ratio_vs_overlap", "risk_ratios_ci"):
        assert (figures / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert "<svg" in (figures / f"{name}.svg").read_text()
    html = (root / "report" / "report.html").read_text()
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(embedded) == 3 and base64.b64decode(embedded[0])[:4] == b"\x89PNG"
    assert 'src="figures/' not in html  # self-contained


def test_other_tables_and_provenance(report):
    root, keys = report
    md = (root / "report" / "report.md").read_text()
    for title in ("Summary quality", "Lexical overlap", "Measured vs target sparsity",
                  "Output length, empty outputs, repetition and perplexity", "Provenance"):
        assert f"## {title}" in md
    assert "abc123" in md and "package torch" in md
    output = pd.read_csv(next((root / "report" / "tables").glob("output_length*.csv")))
    scores = pd.read_parquet(root / "scores" / f"{keys[('tiny', 'wanda-0.5', 'news')]}.parquet")
    row = output[output["cell"] == keys[("tiny", "wanda-0.5", "news")]].iloc[0]
    assert row["length (tokens)"] == pytest.approx(scores["summary_tokens"].mean())
    assert row["empty share"] == pytest.approx(0.1) and row["perplexity"] == pytest.approx(15)
    sparsity = pd.read_csv(next((root / "report" / "tables").glob("measured_vs_target*.csv")))
    assert sorted(sparsity["system"]) == ["magnitude-0.5", "sparsegpt-2:4", "wanda-0.5"]
    np.testing.assert_allclose(sparsity["difference"], -0.01)
    assert "## Missing data" not in md


def test_report_of_a_run_with_missing_dense_cells(tmp_path):
    keys = make_run(tmp_path, n_docs=6)
    (tmp_path / "scores" / f"{keys[('tiny', 'dense', 'news')]}.parquet").unlink()
    write_report(tmp_path, n_boot=100)
    md = (tmp_path / "report" / "report.md").read_text()
    missing = md.split("## Missing data")[1]
    assert "no dense baseline scores for model 'tiny', task 'news', prompt 'A'" in missing
    assert f"scores/{keys[('tiny', 'dense', 'news')]}.parquet is missing" in missing
    html = (tmp_path / "report" / "report.html").read_text()
    assert "Missing data" in html


def test_report_with_no_comparisons_still_writes(tmp_path):
    keys = make_run(tmp_path, tasks=("news",), n_docs=4)
    (tmp_path / "scores" / f"{keys[('tiny', 'dense', 'news')]}.parquet").unlink()
    write_report(tmp_path, n_boot=100)
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Hallucination risk ratios" not in md and "## Missing data" in md
    assert md.index("## Missing data") < md.index("## Summary quality")  # said at the top
    assert "Nothing could be compared" in md.split("## Missing data")[1]
    assert main(["report", str(tmp_path), "--bootstrap", "100"]) == 1  # and the CLI says so


def test_cli_report_and_its_errors(tmp_path, capsys):
    make_run(tmp_path, tasks=("news",), n_docs=4)
    (tmp_path / "study.yaml").write_text("analysis:\n  risk: threshold\n  risk_threshold: 0.3\n  bootstrap: 100\n")
    assert main(["report", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == str(tmp_path / "report" / "summaries.html")
    md = (tmp_path / "report" / "report.md").read_text()
    assert "Risk ratio definition: threshold" in md and "risk above 0.3" in md and "100 resamples" in md
    assert main(["report", str(tmp_path), "--risk", "median"]) == 2
    assert "unknown risk-ratio definition 'median'" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nope")]) == 2


def test_section_providers_is_a_plain_list():
    assert isinstance(SECTION_PROVIDERS, list) and all(callable(p) for p in SECTION_PROVIDERS)


def test_bad_generation_line_and_bad_analysis_settings_are_named(tmp_path, capsys):
    keys = make_run(tmp_path, tasks=("news",), n_docs=4)
    path = tmp_path / "generations" / f"{keys[('tiny', 'wanda-0.5', 'news')]}.jsonl"
    path.write_text(path.read_text() + '{"doc_id": "news-009"}\n')
    assert main(["report", str(tmp_path), "--bootstrap", "100"]) == 2
    assert f"{path}: line 5: " in (err := capsys.readouterr().err) and "Field required" in err
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:4]))
    (tmp_path / "study.yaml").write_text("analysis:\n  bootstrap: 5\n")
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "study.yaml: analysis:" in err and "bootstrap" in err


# --- first screen, headlines, Markdown text, summaries viewer ---------------------------

def write_facts_study(root, n_docs: int = 8, name: str = "browser study") -> list[dict]:
    """A study.yaml over the first ``n_docs`` records of the built-in `facts` task, renamed to
    the ids ``make_run`` gives (facts-000, ...); returns the records."""
    from pathlib import Path

    import tasks

    source = Path(tasks.__file__).parent / "data" / "facts.jsonl"
    records = [json.loads(line) for line in source.read_text().splitlines()[:n_docs]]
    records = [{**r, "id": f"facts-{i:03d}"} for i, r in enumerate(records)]
    root.mkdir(parents=True, exist_ok=True)
    (root / "facts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (root / "study.yaml").write_text(f"name: {name}\ntasks:\n  - name: facts\n    data: {root / 'facts.jsonl'}\n"
                                     "scoring:\n  harim_model: facebook/bart-large-cnn\n")
    return records


def shift_risks(root, keys, task: str, shifted: str | None, shift: float = 0.2) -> None:
    """Rewrite every pruned cell's risk columns as its dense cell's plus a +-0.01 alternating
    perturbation (mean change 0: no effect), and ``shifted``'s HaRiM as dense + ``shift``."""
    dense = pd.read_parquet(root / "scores" / f"{keys[('tiny', 'dense', task)]}.parquet")
    risky = ["harim", "summac_zs", "summac_conv"]
    dense[risky] = np.random.default_rng(3).uniform(0.3, 0.6, (len(dense), 3))
    dense.to_parquet(root / "scores" / f"{keys[('tiny', 'dense', task)]}.parquet")
    wiggle = 0.01 * (-1.0) ** np.arange(len(dense))
    for (model, label, on), key in keys.items():
        if label == "dense" or on != task:
            continue
        pruned = pd.read_parquet(root / "scores" / f"{key}.parquet")
        for column in risky:
            pruned[column] = dense[column] + wiggle
        if label == shifted:
            pruned["harim"] = dense["harim"] + shift
        pruned.to_parquet(root / "scores" / f"{key}.parquet")


def test_a_known_effect_is_the_headline(tmp_path):
    from analysis.headlines import headlines, sig3

    keys = make_run(tmp_path, tasks=("news",), n_docs=20)
    shift_risks(tmp_path, keys, "news", "wanda-0.5")
    write_report(tmp_path, n_boot=300)
    risk = risk_table(load_run(tmp_path), n_boot=300)
    found = headlines(risk)
    dense = pd.read_parquet(tmp_path / "scores" / f"{keys[('tiny', 'dense', 'news')]}.parquet")["harim"]
    ratio = (dense.mean() + 0.2) / dense.mean()  # by hand: mean risk + 0.2 over mean risk
    assert len(found) == 2 and found[0].effect and not found[1].effect
    assert found[0].text.startswith("tiny/wanda-0.5 shows more hallucination risk than its dense "
                                    f"model on news by HaRiM: mean risk ratio {sig3(ratio)} [95% CI ")
    assert "Metric validity: not measured" in found[0].text
    low, high = map(float, re.search(r"CI ([\d.]+), ([\d.]+)\]", found[0].text).groups())
    assert 1 < low < ratio < high
    assert found[1].text == f"No difference detected in the other {len(risk) - 1} comparison(s): their 95% CIs include 1."
    page = (tmp_path / "report" / "report.html").read_text()
    first_screen = page.split('<nav class="toc"')[0]
    assert "tiny/wanda-0.5 shows more hallucination risk" in first_screen and 'id="key-figure"' in first_screen


def test_a_run_without_effect_gets_one_no_difference_headline(tmp_path):
    from analysis.headlines import headlines

    keys = make_run(tmp_path, tasks=("news",), n_docs=20)
    shift_risks(tmp_path, keys, "news", None)
    risk = risk_table(load_run(tmp_path), n_boot=300)
    found = headlines(risk)
    assert len(found) == 1 and found[0].text.startswith(f"No difference detected: all {len(risk)} risk-ratio 95% CIs include 1")
    assert len(found[0].details) == len(risk) == 3 * 3  # 3 pruned systems x 3 risk metrics
    for line in found[0].details:  # equal means (the +-0.01 wiggle cancels): ratio 1, CI around it
        low, high = map(float, re.search(r": 1\.0+ \[95% CI ([\d.]+), ([\d.]+)\]$", line).groups())
        assert low <= 1 <= high
    assert headlines(risk.iloc[:0]) == []


def test_first_screen_names_the_study_and_marks_the_demo(tmp_path):
    make_run(tmp_path, tasks=("news",), n_docs=6)
    (tmp_path / "study.yaml").write_text("name: demo\ngeneration: {seed: 7}\nanalysis: {bootstrap: 100}\n")
    write_report(tmp_path)
    page = (tmp_path / "report" / "report.html").read_text()
    assert "<h1>prunescope report: demo</h1>" in page
    assert '<p class="banner" id="demo-banner">Demo on synthetic data with built-in tiny models</p>' in page
    box = page.split('id="run-box"')[1].split("</div>")[0]
    assert "<dt>Documents per cell</dt><dd>6</dd>" in box and "generation 7" in box
    assert "magnitude-0.5, sparsegpt-2:4, wanda-0.5" in box  # systems by their labels
    (tmp_path / "study.yaml").write_text("name: my study\n")
    overview = run_overview(ReportContext.of(tmp_path))
    assert overview.title == "prunescope report: my study" and overview.banner == ""
    (tmp_path / "study.yaml").write_text("name: new demo\ndemo: true\n")
    assert run_overview(ReportContext.of(tmp_path)).banner == DEMO_BANNER


def test_tables_fold_scroll_and_put_cell_keys_last(report):
    root, keys = report
    page = (root / "report" / "report.html").read_text()
    assert page.count('<div class="scroll"><table>') == page.count("<table>")
    risk = page.split('id="s-hallucination-risk-ratios"')[1].split("</section>")[0]
    assert risk.index("<table>") < risk.index('<details class="table"><summary>Risk ratio comparisons in detail')
    detail = pd.read_csv(next((root / "report" / "tables").glob("hallucination_risk_ratios_risk_ratio_comparisons*.csv")))
    header = re.findall(r"<th>(.*?)</th>", risk.split("Risk ratio comparisons in detail")[-1].split("</thead>")[0])
    assert header[0] == "model" and header[-2:] == ["cell", "baseline"] and len(header) == len(detail.columns)
    assert f'<summary>key</summary><code>{detail["cell"].iloc[0]}</code>' in risk
    decimals = re.findall(r"<td>-?(\d+\.\d+)</td>", risk)
    assert decimals and all(len(d.replace(".", "").lstrip("0")) <= 3 for d in decimals)  # 3 significant digits
    toc = re.findall(r'<a href="#(s-[a-z0-9-]+)">', page.split("</nav>")[0])
    assert toc and all(f'<section id="{a}">' in page for a in toc)
    md = (root / "report" / "report.md").read_text()
    assert "&#x27;" not in md and "## Contents" in md


def test_viewer_marks_novel_words_and_gold_facts(tmp_path):
    from analysis.viewer import segments

    source = "Anna Berg met 40 people in Oslo."
    runs = segments("Anna Berg met 41 people in Oslo people.", source, {"41"})
    marked = {text: cls for text, cls in runs if cls}
    assert marked == {"41": "halluc", "Oslo people": "ngram"}  # '41' absent; 'oslo people' a new 2-gram
    assert "".join(t for t, _ in runs) == "Anna Berg met 41 people in Oslo people."
    assert segments("Bob <b>", source) == [["Bob", "novel"], [" <", ""], ["b", "novel"], [">", ""]]
    assert segments("x", None) == [["x", ""]]


def test_viewer_page_escapes_hostile_summaries_and_marks_facts(tmp_path):
    from analysis.viewer import viewer_data

    records = write_facts_study(tmp_path)
    first = records[1]["reference"].split(". ")[0] + ". It happened in Zorbania."
    make_run(tmp_path, tasks=("facts",), n_docs=8,
             texts=lambda i: first if i == 1 else HOSTILE[i % len(HOSTILE)])
    write_report(tmp_path, n_boot=100)
    page = (tmp_path / "report" / "summaries.html").read_text()
    assert page.count("<script") == 2 and page.count("</script>") == 2  # the data block and the app
    assert "<img" not in page and "onerror" in page  # the hostile markup only inside the JSON
    data = json.loads(page.split('id="data">')[1].split("</script>")[0])
    doc = next(d for d in data["tasks"]["facts"] if d["id"] == "facts-001")
    assert [s["system"] for s in doc["summaries"]][0] == "tiny/dense"
    summary = doc["summaries"][1]
    assert summary["hallucinated"] == ["zorbania"] and ["Zorbania", "halluc"] in summary["segments"]
    key = [f for f in records[1]["facts"] if f["key"]]
    assert summary["omitted"] == [f"{f['type']}: {f['value']}" for f in key if f["value"] not in first]
    assert summary["omitted"] and "".join(t for t, _ in doc["source"]) == records[1]["document"]
    hostile = next(d for d in data["tasks"]["facts"] if d["id"] == "facts-005")
    assert "".join(t for t, _ in hostile["summaries"][0]["segments"]) == HOSTILE[5]
    rises = {d["id"]: d["rise"] for d in data["tasks"]["facts"]}
    paired = load_run(tmp_path).paired
    harim = paired[paired["metric"] == "harim"]
    ctx = ReportContext.of(tmp_path)
    few = viewer_data(ctx, max_docs=3)
    top = sorted(rises, key=lambda d: -max(rises[d].values()))[:3]
    assert [d["id"] for d in few["tasks"]["facts"]] == sorted(top)
    assert few["problems"] == ["task facts: 3 of its 8 documents are shown, those where a pruned system's risk rose most"]
    assert rises["facts-003"]["HaRiM"] == pytest.approx((harim[harim["doc_id"] == "facts-003"].eval("pruned - dense")).max())


def test_headlines_rank_by_effect_size_and_show_validity_flags():
    from analysis.headlines import headlines

    ratios = [1.5, 0.5, 1.2, 3.0, 0.9, 1.1, 2.0]  # CI of each: ratio +- 0.05, all excluding 1
    risk = pd.DataFrame({"system": [f"m/s{i}" for i in range(7)], "task": "news", "metric": "HaRiM",
                         "ratio": ratios, "ci_low": [r - 0.05 for r in ratios],
                         "ci_high": [r + 0.05 for r in ratios], "p_holm": 0.01, "n_docs": 30,
                         "validity": "AUC 0.550 [0.400, 0.700]",
                         "validity_flag": "AUC CI includes 0.5"})
    found = headlines(risk)
    # |log ratio|: 3.0 > 0.5 > 2.0 > 1.5 > 1.2 > 0.9 > 1.1; four shown, the rest counted
    assert [h.text.split(" shows")[0] for h in found[:4]] == ["m/s3", "m/s1", "m/s6", "m/s0"]
    assert found[4].text == "3 further comparison(s) have a CI excluding 1 (see the risk-ratio table)."
    assert "shows less hallucination risk" in found[1].text and "0.500 [95% CI 0.450, 0.550]" in found[1].text
    assert found[0].text.endswith("Metric validity FLAGGED (AUC 0.550 [0.400, 0.700]): AUC CI includes 0.5.")
    risk.attrs["definition"] = "mean_score"  # a score ratio above 1: less risk
    assert "m/s3 shows less hallucination risk" in headlines(risk)[0].text
    # Holm-significant findings lead, then unflagged metrics; effect size ranks within a group
    risk["p_holm"] = [0.01, 0.2, 0.01, 0.3, 0.01, 0.01, 0.01]
    risk["validity_flag"] = ["", "", "flag", "", "", "", ""]
    assert [h.text.split(" shows")[0] for h in headlines(risk)[:4]] == ["m/s6", "m/s0", "m/s4", "m/s5"]
