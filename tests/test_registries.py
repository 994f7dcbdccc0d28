"""Extension points: a metric or a pruning method added through its registry alone (one
module, one entry) reaches every place that uses it."""

from __future__ import annotations

import json
import re
import pytest
from harness.pruning import registry as methods
from harness.scoring import registry as metrics

TOY_METRIC = '''
"""Toy metric: the summary's length in characters (a test of the registry)."""


def score(batch, scorers):
    return {"toy_chars": [float(len(text)) for text in batch.texts]}


def provenance(scorers):
    return {"unit": "characters"}
'''

TOY_METHOD = '''
"""Toy methods: zero the first columns of each Linear (per-Linear), or the whole MLP of the
last block (a model-level method: it walks the model itself)."""


class FirstColumns:
    def __init__(self, layer, spec):
        self.layer = layer

    def add_batch(self, inp):
        pass

    def prune(self, sparsity):
        cut = int(self.layer.in_features * sparsity)
        self.layer.weight.data[:, :cut] = 0


def prune_model(model, spec, calibration_ids, *, device):
    from harness.pruning.driver import find_blocks, linear_layers

    _, blocks = find_blocks(model)
    zeroed = []
    for name, layer in linear_layers(blocks[-1]).items():
        if "mlp" in name:
            layer.weight.data.zero_()
            zeroed.append(name)
    return {"method": spec.method, "zeroed": sorted(zeroed), "target_sparsity": spec.sparsity,
            "measured_sparsity": None, "nm_valid": None, "wall_time_s": 0.0}
'''


@pytest.fixture
def toy_metric(tmp_path, monkeypatch):
    (tmp_path / "toy_metric.py").write_text(TOY_METRIC)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(metrics.METRICS, "toy", metrics.Metric(
        "toy", ("toy_chars",), "toy_metric", report={"toy_chars": ("quality", "toy characters")}))


def test_a_metric_added_through_the_registry_alone(toy_metric, tmp_path):
    import evaluate

    from analysis.report import write_report
    from harness.config import ScoringConfig
    from harness.records import CellInfo
    from harness.scoring import Scorers, read_scores, score_cell
    from harness.scoring.evaluate_metrics import metric_path
    from harness.store import RunStore
    from tests.test_analysis import make_run
    from tests.test_scoring import generation

    gens = tmp_path / "g.jsonl"
    texts = {"a": "One short summary.", "b": ""}
    gens.write_text("".join(generation(d, t).model_dump_json() + "\n" for d, t in texts.items()))
    config = ScoringConfig(metrics=["toy", "overlap"])
    score_cell(gens, {"a": "A source.", "b": "Another."}, {}, Scorers(config), tmp_path / "s.parquet",
               CellInfo(key="k", model="m", task="t", prompt="A"))
    frame, meta = read_scores(tmp_path / "s.parquet")
    assert frame["toy_chars"].tolist() == [len(t) for t in texts.values()]
    assert meta["scorers"]["toy"] == {"unit": "characters"}
    assert frame["harim"].isna().all()  # not asked for

    folder = metric_path("toy")
    assert (folder / "toy.py").exists()
    got = evaluate.load(str(folder)).compute(predictions=["abc", "hello"], references=["x", "y"])
    assert got == {"toy_chars": [3.0, 5.0]}

    run = tmp_path / "run"
    make_run(run, tasks=("news",), n_docs=4)
    store = RunStore(run)
    for key in store.read_cells():
        scores, _ = store.read_scores(key)
        store.write_scores(key, scores.assign(toy_chars=7.0), {})
    write_report(run, n_boot=100)
    quality = (run / "report" / "report.md").read_text().split("\n## Summary quality")[1].split("\n## ")[0]
    assert "toy characters" in quality and len(re.findall(r"\| 7(?:\.0+)? \|", quality)) == 4


def test_unknown_metric_names_the_registry_choices():
    from pydantic import ValidationError

    from harness.config import ScoringConfig

    with pytest.raises(ValidationError, match="unknown metric 'toy'; one of harim"):
        ScoringConfig(metrics=["toy"])


@pytest.fixture
def toy_methods(tmp_path, monkeypatch):
    (tmp_path / "toy_method.py").write_text(TOY_METHOD)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(methods.METHODS, "firstcols", methods.PruningMethod(
        "firstcols", "toy_method:FirstColumns", needs_calibration=False, structures=("unstructured",)))
    monkeypatch.setitem(methods.METHODS, "dropmlp", methods.PruningMethod(
        "dropmlp", "toy_method", needs_calibration=False, structures=("block",), level="model"))


def test_a_pruning_method_added_through_the_registry_alone(toy_methods, llama_path, tmp_path, capsys):
    from safetensors.torch import load_file

    from harness.cli.main import main
    from harness.pruning import PruneSpec, prune_checkpoint
    from harness.pruning.spec import METHODS, SpecError
    from harness.records import PruneSpecInfo

    assert "firstcols" in METHODS and PruneSpecInfo(method="firstcols", sparsity=0.5).label == "firstcols-0.5"
    with pytest.raises(SpecError, match="structure '2:4' is not supported by firstcols"):
        PruneSpec(method="firstcols", structure="2:4")
    out = tmp_path / "firstcols"
    assert main(["prune", "--model", str(llama_path), "--method", "firstcols", "--sparsity", "0.25",
                 "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["measured_sparsity"] == pytest.approx(0.25, abs=0.01)
    weights = load_file(out / "model.safetensors")
    q = next(v for k, v in weights.items() if k.endswith("layers.0.self_attn.q_proj.weight"))
    cut = q.shape[1] // 4
    assert (q[:, :cut] == 0).all() and (q[:, cut:] != 0).float().mean() > 0.99

    report = prune_checkpoint(llama_path, PruneSpec(method="dropmlp", structure="block"), tmp_path / "drop")
    assert report["zeroed"] and all("mlp" in name for name in report["zeroed"])
    weights = load_file(tmp_path / "drop" / "model.safetensors")
    last = max(int(k.split("layers.")[1].split(".")[0]) for k in weights if "layers." in k)
    assert all((v == 0).all() for k, v in weights.items() if f"layers.{last}.mlp" in k)
    assert all((v != 0).any() for k, v in weights.items() if "layers.0.mlp" in k)
