"""Scoring: each model metric against a plain one-example-at-a-time computation written here
from the published formulas, batch invariance, the documented edge values, the parquet
artifact, the `evaluate` modules, the Conv head's checkpoint and training."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch
import transformers

from harness.config import ScoringConfig
from harness.errors import PrunescopeError
from harness.records import CellInfo, GenerationRecord, ModelIdentity
from harness.scoring import Scorers, ScoringError, read_scores, score_cell
from harness.scoring.harim import harim_scores
from harness.scoring.loading import load_scorer
from harness.scoring.splitting import chunks, regex_sentences
from harness.scoring.loading import ScorerModelError
from harness.scoring.summac_conv import (BIN_EDGES, ConvWeightsError, conv_head,
                                         load_conv_head, save_conv_head, train_summac_conv)

SOURCES = {
    "council": "The city council met on Tuesday to approve a new budget for public transport. "
               "Officials said the plan would add twenty buses and repair three bridges. "
               "Mr. Jones, the mayor, said work starts before the winter.",
    "rain": "Heavy rain flooded several streets on Monday. The fire service rescued a family "
            "from their car. Nobody was hurt, the police said.",
    "club": "The football club signed a young striker who scored twelve goals in his first "
            "season. The fee was not disclosed.",
    "blank": "",
}
SUMMARIES = [
    ("council", "The council approved a transport budget. It adds twenty buses."),
    ("rain", "Streets flooded and a family was rescued from a car by firefighters."),
    ("club", "A striker joined the club. He scored twelve goals. The fee was secret."),
    ("council", "The mayor resigned after the budget vote failed on Tuesday."),
    ("rain", ""),  # empty summary
    ("blank", "Something happened somewhere today, officials said."),  # empty source
    ("club", "Yes."),  # one word
    ("council", "Buses. " * 3 + "The plan repairs bridges before winter, officials said."),
]
REFERENCES = {"council": "The council approved a budget adding buses.", "rain": None,
              "club": "The club signed a striker.", "blank": None}


def summary_dicts(pairs=SUMMARIES):
    return [{"doc_id": d, "text": t, "output_tokens": len(t.split())} for d, t in pairs]


@pytest.fixture(scope="module")
def conv_weights(tmp_path_factory):
    """A random (seeded) Conv head saved in the released key layout."""
    torch.manual_seed(3)
    head = conv_head()
    path = tmp_path_factory.mktemp("conv") / "conv.bin"
    save_conv_head(head, path)
    return path


@pytest.fixture(scope="module")
def scorers(bart_path, nli_path, conv_weights):
    return Scorers(ScoringConfig(harim_model=str(bart_path), nli_model=str(nli_path),
                                 summac_conv_weights=conv_weights, batch_size=3,
                                 metrics=["harim", "summac_zs", "summac_conv", "rouge", "overlap"]))


@pytest.fixture(scope="module")
def scored(scorers):
    return scorers.score(summary_dicts(), SOURCES, REFERENCES)


# ---------------------------------------------------------------- HaRiM+

def plain_harim(model, tok, source: str, summary: str) -> tuple[float, float, float]:
    """One example, straight from the formula: labels via HF's own shift, loops over tokens."""
    def ids(text, limit):
        full = tok(text)["input_ids"]  # <s> ... </s>
        return full if len(full) <= limit else full[:limit - 1] + [tok.eos_token_id]

    labels = torch.tensor([ids(summary, 110)])
    empty = torch.tensor([[tok.bos_token_id, tok.eos_token_id]])
    src = torch.tensor([ids(source, 1024)]) if source else empty
    with torch.no_grad():
        with_src = model(input_ids=src, labels=labels).logits[0]
        without = model(input_ids=empty, labels=labels).logits[0]
    risks, logps = [], []
    for t, y in enumerate(labels[0].tolist()):
        p = torch.softmax(with_src[t].double(), dim=0)[y].item()
        q = torch.softmax(without[t].double(), dim=0)[y].item()
        risks.append((1 - p) * (1 - (p - q)) / 2)
        logps.append(math.log(p))
    mean_risk = sum(risks) / len(risks)
    loglik = sum(logps) / len(logps)
    return loglik + 7 * (1 - mean_risk), mean_risk, loglik


def test_harim_equals_plain_formula_for_any_batch_size_and_order(bart_path):
    loaded = load_scorer(bart_path, "seq2seq", device="cpu")
    long_summary = " ".join(["the bridge was repaired by the council"] * 40)  # > 110 tokens
    long_source = " ".join(SOURCES["council"] for _ in range(40))  # > 1024 tokens
    pairs = [(SOURCES[d], t) for d, t in SUMMARIES] + [(long_source, long_summary)]
    assert len(loaded.tokenizer(long_source)["input_ids"]) > 1024
    assert len(loaded.tokenizer(long_summary)["input_ids"]) > 110
    expected = [plain_harim(loaded.model, loaded.tokenizer, s, y) for s, y in pairs]
    for batch_size in (1, 3, 8):
        order = list(range(len(pairs)))
        random.Random(batch_size).shuffle(order)
        got = harim_scores(loaded, [pairs[i][0] for i in order], [pairs[i][1] for i in order],
                           batch_size=batch_size)
        for k, i in enumerate(order):
            assert got[k].harim_plus == pytest.approx(expected[i][0], abs=1e-5)
            assert got[k].harim == pytest.approx(expected[i][1], abs=1e-5)
            assert got[k].loglik == pytest.approx(expected[i][2], abs=1e-5)


def test_harim_edge_values(scored):
    """Empty summary: scored over <s></s>; empty source: scored against <s></s>, so p = q and
    the risk is (1 - p) / 2; both finite, with HaRiM+ <= 7 and the risk in [0, 1]."""
    for column in ("harim_plus", "harim", "harim_loglik"):
        assert scored[column].notna().all()
    assert (scored["harim_plus"] <= 7).all()
    assert scored["harim"].between(0, 1).all()
    assert scored["empty"].tolist() == [False] * 4 + [True] + [False] * 3
    assert scored["summary_words"].tolist()[4:7] == [0, 6, 1]


# ---------------------------------------------------------------- SummaC

def plain_nli(model, tok, premise, hypothesis):
    enc = tok(premise, hypothesis, truncation=True, max_length=500, return_tensors="pt")
    with torch.no_grad():
        probs = torch.softmax(model(**enc).logits[0].double(), dim=0)
    return probs[0].item(), probs[1].item()  # tiny NLI: 0 SUPPORTS, 1 REFUTES


def plain_conv(head, entail_columns):
    """Histogram by explicit bin search, mlp per row by a dot product, mean, final layer."""
    w1, b1 = head.mlp.weight[0].tolist(), head.mlp.bias.item()
    w2, b2 = head.layer_final.weight.tolist(), head.layer_final.bias.tolist()
    row_values = []
    for column in entail_columns[:10]:
        counts = [0] * 23
        for v in column:
            k = next(k for k in range(23) if v < BIN_EDGES[k + 1] or k == 22)
            counts[k] += 1
        if sum(counts):
            row_values.append(sum(c * w for c, w in zip(counts, w1)) + b1)
    m = sum(row_values) / len(row_values) if row_values else 0.0
    logits = [sum(w * m for w in w2[c]) + b2[c] for c in range(2)]
    return math.exp(logits[1]) / (math.exp(logits[0]) + math.exp(logits[1]))


def test_summac_equals_plain_loop(scored, nli_path, conv_weights):
    tok = transformers.AutoTokenizer.from_pretrained(nli_path)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(nli_path).eval()
    head = load_conv_head(conv_weights)
    for row, (doc, summary) in zip(scored.itertuples(), SUMMARIES):
        src, summ = chunks(SOURCES[doc], 100), chunks(summary)
        columns = [[plain_nli(model, tok, s, h)[0] for s in src] for h in summ]
        if not (src and summ):  # the published code's image for "no chunks": one zero
            columns = [[0.0]]
        zs = sum(max(c) for c in columns) / len(columns)
        assert row.summac_zs == pytest.approx(zs, abs=1e-5)
        assert row.summac_conv == pytest.approx(plain_conv(head, columns), abs=1e-5)


def test_summac_caps_rows_and_source_chunks(nli_path, conv_weights):
    """Only the first 100 source chunks count, and Conv sees only the first 10 summary chunks."""
    fillers = ["Police arrested two men after a robbery.", "A storm damaged power lines overnight.",
               "Heavy rain flooded several streets on Monday.", "Sentence number 0 is about the vote."]
    # on the tiny NLI model the fillers entail the summary lines weakly, the last four strongly
    source_sentences = fillers * 25 + ["Sentence number 1 is about the budget vote."] * 4
    summary_sentences = [f"The summary line {i} says something new." for i in range(10)] + [
        "The museum will display paintings that were lost.", "The fire service rescued a family."]
    config = ScoringConfig(nli_model=str(nli_path), summac_conv_weights=conv_weights,
                           metrics=["summac_zs", "summac_conv"], batch_size=64)
    scorers = Scorers(config)

    def score(source, summary):
        return scorers.score([{"doc_id": "x", "text": " ".join(summary), "output_tokens": 1}],
                             {"x": " ".join(source)}, {"x": None}).iloc[0]

    full = score(source_sentences, summary_sentences)
    same = pytest.approx(full.summac_zs, abs=1e-9)
    assert score(source_sentences[:100], summary_sentences).summac_zs == same
    assert score(source_sentences[4:], summary_sentences).summac_zs != same  # the cap matters
    same = pytest.approx(full.summac_conv, abs=1e-9)
    assert score(source_sentences, summary_sentences[:10]).summac_conv == same
    assert score(source_sentences, summary_sentences[2:]).summac_conv != same


def test_summac_zs_with_contradiction_subtracts_max_contradiction(nli_path):
    tok = transformers.AutoTokenizer.from_pretrained(nli_path)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(nli_path).eval()
    doc, summary = SUMMARIES[2]
    config = ScoringConfig(nli_model=str(nli_path), metrics=["summac_zs"],
                           summac_zs_use_contradiction=True)
    got = Scorers(config).score(summary_dicts([(doc, summary)]), SOURCES, REFERENCES).summac_zs[0]
    src, summ = chunks(SOURCES[doc], 100), chunks(summary)
    per = [max(plain_nli(model, tok, s, h)[0] for s in src) - max(plain_nli(model, tok, s, h)[1] for s in src)
           for h in summ]
    assert got == pytest.approx(sum(per) / len(per), abs=1e-5)


def test_summac_edge_values(scored, conv_weights):
    """No summary chunk (empty, or a one-word summary of <= 10 characters) or no source chunk:
    ZS = 0, and Conv scores the published code's 1 x 1 zero image: one row whose only count
    is in the lowest bin, so m = mlp.weight[0, 0] + mlp.bias and features [m, m, m]."""
    head = load_conv_head(conv_weights)
    m = (head.mlp.weight[0, 0] + head.mlp.bias[0]).double()
    logits = head.layer_final.weight.double().sum(dim=1) * m + head.layer_final.bias.double()
    empty_image_score = torch.softmax(logits, dim=0)[1].item()
    for index in (4, 5, 6):
        assert scored.summac_zs[index] == 0.0
        assert scored.summac_conv[index] == pytest.approx(empty_image_score, abs=1e-6)


def test_regex_splitter_keeps_abbreviations_and_initials():
    text = ('Mr. Smith met J. Doe in the U.S. on Monday. "It went well!" he said.\n\n'
            'Budget Report\n\nNo stop here')
    assert regex_sentences(text) == ["Mr. Smith met J. Doe in the U.S. on Monday.",
                                     '"It went well!" he said.', "Budget Report\n\nNo stop here"]
    assert chunks("Short one. This one is long enough.") == ["This one is long enough."]


# ---------------------------------------------------------------- Conv weights

def test_conv_checkpoint_round_trips_with_weights_only(conv_weights):
    state = torch.load(conv_weights, weights_only=True)
    assert sorted(state) == ["layer_final.bias", "layer_final.weight", "mlp.bias", "mlp.weight"]
    assert state["mlp.weight"].shape == (1, 23) and state["layer_final.weight"].shape == (2, 3)
    torch.manual_seed(3)
    for key, value in conv_head().state_dict().items():
        assert torch.equal(state[key], value)


def test_bad_conv_checkpoint_is_named(tmp_path):
    path = tmp_path / "bad.bin"
    torch.save({"mlp.weight": torch.zeros(1, 23)}, path)
    with pytest.raises(ConvWeightsError, match="bad.bin.*lack mlp.bias"):
        load_conv_head(path)


def test_training_the_conv_head_is_deterministic(tmp_path, nli_path):
    lines = []
    for i, (doc, text) in enumerate(list(SOURCES.items())[:3] * 4):
        sentences = chunks(text)
        lines.append({"source": text, "summary": sentences[i % len(sentences)], "label": 1})
        lines.append({"source": text, "summary": f"An unrelated claim number {i} about ships.", "label": 0})
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(x) + "\n" for x in lines))
    first = train_summac_conv(pairs, nli_path, tmp_path / "a.bin", epochs=30, seed=1)
    second = train_summac_conv(pairs, nli_path, tmp_path / "b.bin", epochs=30, seed=1)
    a = torch.load(tmp_path / "a.bin", weights_only=True)
    b = torch.load(tmp_path / "b.bin", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert first["balanced_accuracy"] == second["balanced_accuracy"]
    assert 0 <= first["balanced_accuracy"] <= 1 and first["n_heldout"] == 5
    stored = json.loads((tmp_path / "a.bin.json").read_text())
    assert stored["balanced_accuracy"] == first["balanced_accuracy"]
    load_conv_head(tmp_path / "a.bin")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"source": "a", "summary": "b", "label": 1}\n'
                   '{"source": "a", "summary": "b", "label": "yes"}\n')
    with pytest.raises(ConvWeightsError, match="bad.jsonl: line 2: field 'label'"):
        train_summac_conv(bad, nli_path, tmp_path / "c.bin")


# ---------------------------------------------------------------- the cell artifact

def generation(doc_id, text):
    identity = ModelIdentity(name="tiny", source="tiny", checkpoint_hash="0" * 16)
    return GenerationRecord(doc_id=doc_id, prompt_id="A", prompt_hash="h", text=text,
                            output_token_ids=[1] * len(text.split()), prompt_tokens=10,
                            output_tokens=len(text.split()), finish_reason="stop",
                            truncated=False, backend="hf", model=identity, sampling={})


def test_score_cell_writes_parquet_with_provenance(tmp_path, scorers, scored):
    gens = tmp_path / "generations" / "k.jsonl"
    gens.parent.mkdir()
    gens.write_text("".join(generation(d, t).model_dump_json() + "\n" for d, t in SUMMARIES))
    cell = CellInfo(key="k", model="tiny", task="demo", prompt="A")
    out = tmp_path / "scores" / "k.parquet"
    score_cell(gens, SOURCES, REFERENCES, scorers, out, cell)
    frame, meta = read_scores(out)
    assert list(frame.doc_id) == [d for d, _ in SUMMARIES]
    np.testing.assert_allclose(frame.harim_plus, scored.harim_plus, atol=1e-9)
    assert meta["schema_version"] == 1 and meta["cell"]["key"] == "k"
    summac = meta["scorers"]["summac_zs"]
    assert summac["splitter"] == "regex-fallback" and summac["pair_tokens"] == 500
    assert meta["scorers"]["harim"]["source_tokens"] == 1024
    assert meta["scorers"]["summac_conv"]["weights_hash"] is not None

    gens.write_text(generation("council", "ok").model_dump_json() + "\n" + '{"doc_id": "rain"}\n')
    with pytest.raises(PrunescopeError, match=r"k.jsonl: line 2: prompt_id: Field required"):
        score_cell(gens, SOURCES, REFERENCES, scorers, out, cell)
    gens.write_text(generation("nowhere", "A summary of nothing.").model_dump_json() + "\n")
    with pytest.raises(ScoringError, match="k.jsonl: no source document for doc_id 'nowhere'"):
        score_cell(gens, SOURCES, REFERENCES, scorers, out, cell)
    assert read_scores(out)[0].shape == frame.shape  # the earlier artifact is intact


def test_rouge_columns(scored):
    from rouge_score import rouge_scorer

    ref = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    first = ref.score(REFERENCES["council"], SUMMARIES[0][1])
    assert scored.rouge2_ref[0] == pytest.approx(first["rouge2"].fmeasure)
    vs_source = ref.score(SOURCES["council"], SUMMARIES[0][1])["rougeL"].fmeasure
    assert scored.rougeL_src[0] == pytest.approx(vs_source)
    assert scored.rouge1_ref[[1, 4, 5]].isna().all()  # tasks without a reference
    assert scored.rouge1_src[4] == 0.0  # empty summary


def test_evaluate_modules_give_the_scorer_values(scored, bart_path, nli_path, conv_weights):
    import evaluate

    from harness.scoring import registry
    from harness.scoring.evaluate_metrics import metric_path

    predictions = [t for _, t in SUMMARIES[:4]]
    sources = [SOURCES[d] for d, _ in SUMMARIES[:4]]
    settings = {"harim": {"harim_model": str(bart_path)}, "summac_zs": {"nli_model": str(nli_path)},
                "summac_conv": {"nli_model": str(nli_path), "summac_conv_weights": str(conv_weights)},
                "overlap": {}}
    for name, kwargs in settings.items():
        got = evaluate.load(str(metric_path(name))).compute(
            predictions=predictions, references=sources, **kwargs)
        for column in registry.get(name).columns:
            np.testing.assert_allclose(got[column], scored[column][:4], atol=1e-5, err_msg=column)
    refs = ["The council approved a budget adding buses."] * 4
    got = evaluate.load(str(metric_path("rouge"))).compute(predictions=predictions, references=refs)
    assert got["rouge1_ref"][0] == pytest.approx(scored.rouge1_ref[0])


def test_unknown_metric_is_refused_by_the_config():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="metrics"):
        ScoringConfig(metrics=["bertscore"])


def test_score_cli_on_the_demo_task(tmp_path, bart_path, nli_path, capsys):
    from harness.cli.main import main
    from tasks import load_task

    records = load_task("demo", limit=3).records
    gens = tmp_path / "g.jsonl"
    gens.write_text("".join(generation(r.id, r.reference).model_dump_json() + "\n" for r in records))
    out = tmp_path / "s.parquet"
    argv = ["score", "--generations", str(gens), "--task", "demo", "--out", str(out),
            "--metrics", "harim,summac_zs,rouge,overlap", "--harim-model", str(bart_path),
            "--nli-model", str(nli_path), "--device", "cpu"]
    assert main(argv) == 0
    frame, meta = read_scores(out)
    assert list(frame.doc_id) == [r.id for r in records]
    assert frame.rouge1_ref.tolist() == pytest.approx([1.0] * 3)  # the reference scored against itself
    assert frame.summac_conv.isna().all() and "summac_conv" not in meta["scorers"]
    assert main(argv[:-6] + ["--metrics", "harim,typo"]) == 2
    assert "--metrics" in capsys.readouterr().err


def test_summac_conv_without_weights_is_refused(nli_path):
    scorers = Scorers(ScoringConfig(nli_model=str(nli_path), metrics=["summac_conv"]))
    doc, summary = SUMMARIES[0]
    with pytest.raises(ScoringError, match="summac_conv needs scoring.summac_conv_weights"):
        scorers.score(summary_dicts([(doc, summary)]), SOURCES, REFERENCES)


def test_bad_inputs_are_named(scorers, bart_path):
    with pytest.raises(ScoringError, match="summary 1 \\(doc_id 'rain'\\): field 'text' must be a str"):
        scorers.score([{"doc_id": "council", "text": "ok", "output_tokens": 1},
                       {"doc_id": "rain", "text": None, "output_tokens": 1}], SOURCES, REFERENCES)
    with pytest.raises(ScorerModelError, match="facebook/bart-large-cnn: cannot load .*downloads are off"):
        load_scorer("facebook/bart-large-cnn", "seq2seq", device="cpu")
    with pytest.raises(ScorerModelError, match="bf16 needs a CUDA device"):
        load_scorer(bart_path, "seq2seq", precision="bf16", device="cpu")


def test_nli_label_indices_come_from_id2label_or_config():
    from transformers import PretrainedConfig

    from harness.scoring.nli import label_indices

    mnli = PretrainedConfig(id2label={0: "CONTRADICTION", 1: "NEUTRAL", 2: "ENTAILMENT"})
    assert label_indices(mnli) == (2, 0)
    generic = PretrainedConfig(id2label={0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"})
    with pytest.raises(PrunescopeError, match="scoring.nli_entailment_index"):
        label_indices(generic)
    assert label_indices(generic, entailment=1, contradiction=0) == (1, 0)
