"""The written report: escaping of model/dataset text, LaTeX booktabs, CSVs traceable to the
risk table, figures, provenance, missing dense cells, and the CLI."""

from __future__ import annotations

import base64
import re

import numpy as np
import pandas as pd
import pytest

from analysis.load import load_run
from analysis.render import latex_escape, markdown_table
from analysis.report import SECTION_PROVIDERS, write_report
from analysis.risk import risk_table
from harness.cli.main import main
from tests.test_analysis import make_run

HOSTILE = ["<script>alert('x')</script> summary", "ends the table </table> early",
           "a | b || c", "50% of $x_1$ & {y} \\ ~z^2 #", "plain\n\nmultiline\ntext"]


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
    assert "no dense baseline scores for model &#x27;tiny&#x27;, task &#x27;news&#x27;, prompt &#x27;A&#x27;" in missing
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
