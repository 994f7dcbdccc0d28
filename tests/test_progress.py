"""Progress per stage: pruning blocks, generation requests and scoring batches counted as the
stages work, checked against counts made independently of the code that reports them; one
plain line per stage off a terminal, bars with counts and ETA on one."""

from __future__ import annotations

import io
import json
import math
import re

import torch

from harness.config import ScoringConfig, parse_study
from harness.runner.progress import Progress
from harness.runner.study import run_study
from tests.test_runner import study_dict

LINE = re.compile(r"^tiny (prune|generate|score): (\d+) (checkpoints|cells), (\d+) (blocks|requests|batches)"
                  r"( \((\d+) cached\))? in \d+\.\d s$")


def layers(model_dir) -> int:
    return json.loads((model_dir / "config.json").read_text())["num_hidden_layers"]


def stage_lines(err: str) -> dict[str, tuple[int, int, int]]:
    """stage -> (items, units, cached) from the stage lines of model "tiny" in ``err``."""
    found = {}
    for line in (line for line in err.splitlines() if line.startswith("tiny ")):
        match = LINE.match(line)
        assert match, f"not a stage line: {line!r} (in {err!r})"
        assert match[1] not in found, f"two lines for stage {match[1]}"
        found[match[1]] = (int(match[2]), int(match[4]), int(match[7] or 0))
    return found


def test_a_study_counts_blocks_requests_and_batches_one_line_per_stage(tmp_path, tiny, capsys):
    """3 checkpoints (dense, magnitude, Wanda 2:4) x 2 prompts x 3 documents, scoring 2
    documents a batch with 2 metrics; stderr is not a terminal here (pytest captures it)."""
    llama = tiny("llama")
    raw = study_dict(tmp_path / "run", llama, tiny("bart"), tiny("nli"), docs=3)
    raw["prompts"] = ["A", "B"]
    raw["scoring"].update(batch_size=2, metrics=["rouge", "overlap"])
    study = parse_study(raw)
    capsys.readouterr()
    result = run_study(study, show_progress=True, report=False)
    assert not result.failed, result.failed
    err = capsys.readouterr().err
    assert "\r" not in err and len(err.splitlines()) == 3, err  # nothing but a line per stage
    logged = (tmp_path / "run" / "run.log").read_text()
    assert all(line in logged for line in err.splitlines())  # run.log keeps them too
    checkpoints, prompts, documents, metrics = 3, 2, 3, len(raw["scoring"]["metrics"])
    cells = checkpoints * prompts
    assert stage_lines(err) == {
        "prune": (checkpoints, layers(llama) * (checkpoints - 1), 0),  # the dense one is not pruned
        "generate": (cells, documents * cells, 0),
        "score": (cells, cells * math.ceil(documents / 2) * metrics, 0),
    }

    again = run_study(study, show_progress=True, report=False)  # all current: counted as cached
    assert again.count("done") == 0
    lines = stage_lines(capsys.readouterr().err)
    assert all(units == cached for _, units, cached in lines.values()), lines


def test_the_pruning_core_and_the_scorers_call_back_per_block_and_batch(tiny):
    from transformers import AutoModelForCausalLM

    from harness.pruning import prune
    from harness.pruning.spec import PruneSpec
    from harness.scoring import Scorers
    from harness.scoring.overlap import overlap_scores

    llama = tiny("llama")
    model = AutoModelForCausalLM.from_pretrained(llama, dtype=torch.float32)
    calls = []
    prune(model, PruneSpec(method="magnitude", sparsity=0.5), None, progress=calls.append)
    assert calls == [1] * layers(llama)

    scorers = Scorers(ScoringConfig(metrics=["rouge", "overlap"], batch_size=3))
    summaries = [{"doc_id": f"d{i}", "text": "summary of the text " + "again " * (7 - i), "output_tokens": 5}
                 for i in range(7)]  # longest first: batched by length, the rows stay in input order
    sources = {s["doc_id"]: f"the text number {i} with words" for i, s in enumerate(summaries)}
    calls.clear()
    batched = scorers.score(summaries, sources, {}, progress=calls.append)
    assert calls == [1] * (3 * 2) == [1] * scorers.batches(7)  # ceil(7 / 3) batches x 2 metrics
    assert list(batched["doc_id"]) == [s["doc_id"] for s in summaries]
    assert list(batched["density"]) == [overlap_scores(s["text"], sources[s["doc_id"]])["density"] for s in summaries]


def test_on_a_terminal_each_stage_has_a_bar_with_count_and_eta():
    stream = io.StringIO()
    progress = Progress(2, "study cells", stream=stream, interactive=True)
    with progress.stage("tiny generate", "request", 8, "2 cells") as stage:
        stage.skip(4)
        stage.advance(2)
        stage.bar.refresh()  # tqdm redraws at most every 0.1 s by itself
        stage.advance(2)
        progress.cells_done(2)
    progress.close()
    out = stream.getvalue()
    assert re.search(r"\rtiny generate:  75%\|[^|]*\| 6/8 \[00:00<00:00, [\d.]+request/s\]", out), out
    assert "study cells: 100%" in out
    summary = [line for line in out.replace("\r", "\n").splitlines() if line.startswith("tiny generate: 2 cells")]
    assert summary == ["tiny generate: 2 cells, 8 requests (4 cached) in 0.0 s"]


def test_disabled_progress_writes_nothing_and_still_counts():
    stream = io.StringIO()
    progress = Progress(1, "cells", enabled=False, stream=stream)
    with progress.stage("tiny score", "batch", 3) as stage:
        stage.advance(3)
    assert stream.getvalue() == "" and progress.stages[0].done == 3
