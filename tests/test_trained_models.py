"""The trained tiny models: the dense summarizers state the facts of held-out documents
without inventing any (measured on vLLM's summaries), vLLM and transformers agree on them
token for token, the NLI stand-in's training pairs are what they claim, training is
deterministic per seed, and the scorer-accuracy rows flag what has not learned."""

from __future__ import annotations

import json
import os
import re

import pytest
import torch

from harness.config import GenerationConfig, ScoringConfig
from harness.records import ModelIdentity
from harness.scoring.ground_truth import ground_truth
from harness.trained_models import LEARNED_MARGIN, TRAINING_FILE, scorer_accuracy
from tasks import load_task

SLOW = os.environ.get("PRUNESCOPE_SLOW_TESTS") == "1"  # opt in to the second family's training


def _summaries(path, backend, documents, tmp_path, llm=None, max_new_tokens=64):
    from harness.generation import generate_cell

    engine = {"dtype": "float32", "max_model_len": 512, "enforce_eager": True}
    config = GenerationConfig(backend=backend, max_new_tokens=max_new_tokens, batch_size=50,
                              engine=engine)
    identity = ModelIdentity(name=path.name, source=str(path), checkpoint_hash="0" * 16)
    out = tmp_path / f"{backend}.jsonl"
    return generate_cell(path, documents, "A", config, identity, out, llm=llm)


def _check_faithful(path, records, texts):
    found = [ground_truth(t, r.document, r.facts) for r, t in zip(records, texts)]
    recall = sum(f["gt_fact_recall"] for f in found) / len(found)
    hallucination = sum(f["gt_hallucination"] for f in found) / len(found)
    assert recall >= 0.9 and hallucination <= 0.02, (recall, hallucination)
    report = json.loads((path / TRAINING_FILE).read_text())
    assert report["learned"] and report["accuracy_name"].startswith("held-out fact recall")
    assert report["accuracy"] >= 0.9 and report["hallucination"] <= 0.02


def _check_faithful_and_vllm_matches_transformers(path, vllm_engine, tmp_path):
    records = load_task("facts", limit=100).records  # held out: no trained model saw them
    documents = [(r.id, r.document) for r in records]
    # transformers first: vLLM serves GPT-NeoX through its Transformers backend, which patches
    # transformers' GPT-NeoX classes in this process (the product runs engines in workers)
    by_hf = _summaries(path, "hf", documents[:6], tmp_path, max_new_tokens=48)
    by_vllm = _summaries(path, "vllm", documents, tmp_path, llm=vllm_engine(path, 512))
    _check_faithful(path, records, [r.text for r in by_vllm])
    # Trained weights give decided logits, so greedy decoding agrees for 48 tokens.
    assert [r.output_token_ids for r in by_hf] == [r.output_token_ids[:48] for r in by_vllm[:6]]
    assert all(len(r.output_token_ids) >= 20 for r in by_hf)  # real summaries were compared


@pytest.mark.vllm
def test_dense_llama_summarizer_is_faithful_and_vllm_matches_transformers(trained, vllm_engine,
                                                                           tmp_path):
    pytest.importorskip("vllm")
    _check_faithful_and_vllm_matches_transformers(trained("summarizer-llama"), vllm_engine, tmp_path)


@pytest.mark.skipif(not SLOW, reason="trains a second summarizer; set PRUNESCOPE_SLOW_TESTS=1")
@pytest.mark.vllm
def test_dense_gpt_neox_summarizer_is_faithful_and_vllm_matches_transformers(trained, vllm_engine,
                                                                              tmp_path):
    pytest.importorskip("vllm")
    _check_faithful_and_vllm_matches_transformers(trained("summarizer-gpt_neox"), vllm_engine, tmp_path)


def test_nli_pairs_are_entailed_corrupted_or_unrelated():
    from harness.trained.scorers import nli_pairs

    pairs = nli_pairs(30, seed=5)
    labels = [y for _, _, y in pairs]
    assert labels.count(0) == labels.count(1) == labels.count(2) == len(pairs) // 3
    words = lambda text: set(re.findall(r"\w+", text))  # noqa: E731
    for premise, hypothesis, label in pairs:
        new = words(hypothesis) - words(premise)
        if label == 0:
            assert not new  # entailed: its own (possibly shortened) wording
        elif label == 1:
            assert new  # a value the premise does not state
        else:
            assert hypothesis not in premise
    assert nli_pairs(30, seed=5) == pairs and nli_pairs(30, seed=6) != pairs


def test_task_tokenizer_keeps_every_slot_value_whole():
    """A fact the summarizer copies is one token: every value a slot takes (both names of a
    person, each organisation word, place, number, day and month) encodes as one token."""
    from harness.trained.fitting import task_tokenizer
    from tasks.synthetic import FIRST, LAST, MONTHS, ORGANISATIONS, PLACES

    tok = task_tokenizer("causal")
    words = [*FIRST, *LAST, *PLACES, *MONTHS, *(w for o in ORGANISATIONS for w in o.split())]
    words += [str(n) for n in (*range(1, 29), *range(30, 100))]  # days, then the numbers
    split = [w for w in words if len(tok(" " + w, add_special_tokens=False).input_ids) != 1]
    assert not split


def test_answer_loss_is_the_causal_lm_loss_on_answer_tokens():
    """The trainers' loss (output layer on answer positions only) equals transformers' own
    loss with the prompt labelled -100, on rows of unequal length."""
    import transformers

    from harness.trained.summarizers import answer_loss, causal_config

    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(causal_config("llama", 50))
    prompts, answers = [[3, 4, 5, 6], [7, 8]], [[9, 10, 2], [11, 12, 13, 2]]
    rows = [p + a for p, a in zip(prompts, answers)]
    width = max(map(len, rows))
    ids = torch.tensor([r + [1] * (width - len(r)) for r in rows])
    labels = torch.tensor([[-100] * len(p) + a + [-100] * (width - len(p) - len(a))
                           for p, a in zip(prompts, answers)])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    expected = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    assert torch.allclose(answer_loss(model, prompts, answers, pad=1), expected, atol=1e-6)


def test_training_is_deterministic_per_seed(tmp_path):
    from harness.trained.scorers import train_nli

    def weights(seed, name):
        torch.manual_seed(seed)
        train_nli(tmp_path / name, seed, steps=4, batch=8, events=20)
        from safetensors.torch import load_file
        return load_file(tmp_path / name / "model.safetensors")

    first, again, other = weights(0, "a"), weights(0, "b"), weights(1, "c")
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_scorer_accuracy_rows_flag_what_has_not_learned(tmp_path):
    def folder(name, accuracy, chance, what):
        path = tmp_path / name
        path.mkdir()
        learned = accuracy >= chance + LEARNED_MARGIN
        (path / TRAINING_FILE).write_text(json.dumps(
            {"accuracy": accuracy, "chance": chance, "learned": learned, "accuracy_name": what}))
        return path

    bart = folder("bart", 0.93, 0.5, "pair accuracy")
    nli = folder("nli", 0.40, 1 / 3, "3-way accuracy")  # 0.07 above chance: not learned
    conv = folder("conv", 0.80, 0.5, "balanced accuracy")
    (conv / "head.bin").write_bytes(b"")
    rows = scorer_accuracy(ScoringConfig(harim_model=str(bart), nli_model=str(nli),
                                         summac_conv_weights=conv / "head.bin"))
    by_metric = {r.metric: r for r in rows}
    assert [r.metric for r in rows] == ["harim", "summac_zs", "summac_conv"]
    assert (by_metric["harim"].accuracy, by_metric["harim"].learned) == (0.93, True)
    assert (by_metric["summac_zs"].accuracy, by_metric["summac_zs"].learned) == (0.40, False)
    conv_row = by_metric["summac_conv"]  # a head on an NLI model that has not learned: flagged
    assert conv_row.learned is False and conv_row.accuracy == 0.40
    assert "balanced accuracy: 0.800" in conv_row.what and "3-way accuracy: 0.400" in conv_row.what
    hub = scorer_accuracy(ScoringConfig())  # published models: nothing measured here
    assert all(r.accuracy is None and r.learned is None for r in hub)
    assert all("not measured" in r.what for r in hub)
