"""The scorer models trained on the facts task: BART (HaRiM+), an NLI stand-in (SummaC) and
the SummaC-Conv head, each with its held-out accuracy."""

from __future__ import annotations

import random
from pathlib import Path

import torch
import transformers

from harness import tiny_models
from harness.trained.fitting import CONTEXT, fit, pad_rows, task_tokenizer

NLI_LABELS = tiny_models.NLI_LABELS  # 0 SUPPORTS, 1 REFUTES, 2 NOT ENOUGH INFO


# -- BART (HaRiM+) ------------------------------------------------------------------------


def train_bart(out: Path, seed: int, copy_steps: int = 200, steps: int = 300, batch: int = 32,
               lr: float = 3e-3) -> dict:
    """BART trained on document -> reference after a copy warm-up (document -> document; it
    raised the pair accuracy from 0.75 to 0.93-0.95 at equal cost); accuracy: HaRiM+ ranks a
    held-out reference above the same reference with one fact corrupted."""
    from tasks.synthetic import TRAIN_SEED, records

    tok = task_tokenizer("seq2seq")
    special = tiny_models.special_ids()
    config = transformers.BartConfig(
        vocab_size=len(tok), d_model=64, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=128,
        decoder_ffn_dim=128, max_position_embeddings=CONTEXT,
        decoder_start_token_id=special["eos_token_id"], forced_eos_token_id=special["eos_token_id"],
        **special)
    model = transformers.BartForConditionalGeneration(config)
    data = records(3000, TRAIN_SEED + 100 + seed)
    documents = tok([r["document"] for r in data]).input_ids
    references = tok([r["reference"] for r in data]).input_ids
    rng = random.Random(seed)

    def loss_at(step: int):
        chosen = [rng.randrange(len(data)) for _ in range(batch)]
        inputs = pad_rows([documents[i] for i in chosen], tok.pad_token_id)
        targets = documents if step < copy_steps else references
        return model(input_ids=inputs, attention_mask=(inputs != tok.pad_token_id).long(),
                     labels=pad_rows([targets[i] for i in chosen], -100)).loss

    loss = fit(model, loss_at, copy_steps + steps, lr=lr, weight_decay=0.01, warmup=30)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    pairs = heldout_pairs(200)
    return {"model": "BART (HaRiM+ scorer)", "accuracy": harim_pair_accuracy(out, pairs),
            "chance": 0.5, "steps": copy_steps + steps, "copy_warmup": copy_steps,
            "batch": batch, "final_loss": loss,
            "accuracy_name": f"held-out pair accuracy: HaRiM+ ranks the reference above the same "
                             f"reference with one fact corrupted ({len(pairs)} facts-task documents)"}


def harim_pair_accuracy(path: Path, pairs: list[tuple[str, str, str]]) -> float:
    from harness.scoring.harim import harim_scores
    from harness.scoring.loading import load_scorer

    loaded = load_scorer(path, "seq2seq", device="cpu")
    sources = [d for d, _, _ in pairs]
    good = harim_scores(loaded, sources, [g for _, g, _ in pairs])
    bad = harim_scores(loaded, sources, [b for _, _, b in pairs])
    return sum(g.harim_plus > b.harim_plus for g, b in zip(good, bad)) / len(pairs)


def heldout_pairs(n: int) -> list[tuple[str, str, str]]:
    """(document, reference, corrupted reference) for the facts task's first ``n`` records."""
    from tasks import load_task
    from tasks.synthetic import corrupt

    rng = random.Random(12345)
    return [(r.document, r.reference, corrupt(r.reference, r.document, r.facts, rng))
            for r in load_task("facts", limit=n).records]


# -- NLI (SummaC) -------------------------------------------------------------------------


def nli_pairs(n_events: int, seed: int) -> list[tuple[str, str, int]]:
    """(premise, hypothesis, label) sentence pairs of the task's grammar, per drawn event and
    each of its sentences as the premise: its own full or shortened wording (0 SUPPORTS);
    that wording with one fact corrupted, an entity swapped with another of the document or
    a number or date changed (1 REFUTES); another sentence of the document, full or short
    (2 NOT ENOUGH INFO). Balanced: one pair of each label per premise."""
    from tasks.synthetic import corrupt, draw_event

    rng = random.Random(seed)
    pairs = []
    for _ in range(n_events):
        event = draw_event(rng)
        full, short, facts = event.sentences(), event.sentences(short=True), event.facts()
        document = " ".join(full)
        for i, premise in enumerate(full):
            own = rng.choice((full, short))[i]
            pairs.append((premise, own, 0))
            pairs.append((premise, corrupt(own, document, facts, rng), 1))
            j = rng.choice([j for j in range(len(full)) if j != i])
            pairs.append((premise, rng.choice((full, short))[j], 2))
    rng.shuffle(pairs)
    return pairs


def train_nli(out: Path, seed: int, steps: int = 400, batch: int = 64, lr: float = 2e-3,
              events: int = 3000) -> dict:
    """A BERT pair classifier labelled like tals/albert-xlarge-vitaminc-mnli, trained on
    :func:`nli_pairs` of ``events`` drawn events; accuracy: on pairs of events drawn with
    another seed, how well it tells entailed pairs (SUPPORTS) from fact-corrupted ones
    (balanced; 3-way accuracy beside it).

    In its budget (under a minute) it tells entailed pairs from other sentences but not from
    corrupted ones, so it ships flagged (``learned: false``). Tried and measured on held-out
    pairs, none above 0.56 balanced: 1500 steps with 640 tokens (refuted recall 0.13);
    batches of minimal pairs (same premise and wording, one fact changed) after a two-way
    curriculum (collapsed to chance); an auxiliary per-token loss teaching the first layer
    which hypothesis tokens the premise lacks (it learned that, finding 0.80-0.88 of them,
    but the classifier did not use it in 800 steps, with 2 or 3 layers)."""
    tok = task_tokenizer("pair")
    config = transformers.BertConfig(
        vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=128, max_position_embeddings=CONTEXT, type_vocab_size=2, num_labels=3,
        id2label=NLI_LABELS, label2id={v: k for k, v in NLI_LABELS.items()},
        pad_token_id=tiny_models.special_ids()["pad_token_id"])
    model = transformers.BertForSequenceClassification(config)
    train_pairs = nli_pairs(events, 1_000_000 + seed)
    encoded = tok([p for p, _, _ in train_pairs], [h for _, h, _ in train_pairs])
    rng = random.Random(seed)

    def loss_at(_step: int):
        chosen = [rng.randrange(len(train_pairs)) for _ in range(batch)]
        ids = pad_rows([encoded["input_ids"][i] for i in chosen], tok.pad_token_id)
        return model(input_ids=ids, attention_mask=(ids != tok.pad_token_id).long(),
                     token_type_ids=pad_rows([encoded["token_type_ids"][i] for i in chosen], 0),
                     labels=torch.tensor([train_pairs[i][2] for i in chosen])).loss

    loss = fit(model, loss_at, steps, lr=lr, weight_decay=0.01, warmup=steps // 10)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    held = nli_pairs(100, 2_000_000)
    with torch.inference_mode():
        inputs = tok([p for p, _, _ in held], [h for _, h, _ in held], padding=True,
                     return_tensors="pt")
        predicted = model(**inputs).logits.argmax(-1).tolist()
    labels = [y for _, _, y in held]
    recall = {NLI_LABELS[k]: sum(p == y == k for p, y in zip(predicted, labels)) / labels.count(k)
              for k in NLI_LABELS}
    # What SummaC needs: entailed pairs called SUPPORTS and fact-corrupted ones not.
    told_apart = (recall["SUPPORTS"] + sum(p != 0 for p, y in zip(predicted, labels) if y == 1)
                  / labels.count(1)) / 2
    return {"model": "NLI stand-in (SummaC scorer)", "accuracy": told_apart, "chance": 0.5,
            "accuracy_name": f"held-out balanced accuracy telling entailed from fact-corrupted "
                             f"sentence pairs ({labels.count(0) + labels.count(1)} pairs: "
                             "SUPPORTS vs not)",
            "three_way_accuracy": sum(p == y for p, y in zip(predicted, labels)) / len(held),
            "recall_per_label": recall, "steps": steps, "final_loss": loss}


# -- SummaC-Conv head ---------------------------------------------------------------------


def train_conv(out: Path, seed: int, nli: Path, n: int = 300) -> dict:
    """The Conv head on (document, reference) = 1 vs (document, corrupted reference) = 0,
    with the trained ``nli`` model; accuracy: balanced, on its seeded held-out fifth. The
    histograms are computed once, so 200 full-batch epochs cost well under a second."""
    from harness.atomic import write_jsonl
    from harness.scoring.summac_conv import train_summac_conv
    from tasks.synthetic import TRAIN_SEED, corrupt, records

    rng = random.Random(seed)
    pairs = []
    for r in records(n, TRAIN_SEED + 200 + seed):
        pairs.append({"source": r["document"], "summary": r["reference"], "label": 1})
        pairs.append({"source": r["document"], "label": 0,
                      "summary": corrupt(r["reference"], r["document"], r["facts"], rng)})
    write_jsonl(out / "pairs.jsonl", pairs)
    report = train_summac_conv(out / "pairs.jsonl", nli, out / "head.bin", seed=seed, epochs=200,
                               note="trained on the synthetic facts task with the trained tiny "
                                    "NLI stand-in; not the published head")
    return {"model": "SummaC-Conv head", "accuracy": report["balanced_accuracy"], "chance": 0.5,
            "accuracy_name": f"held-out balanced accuracy, reference vs corrupted reference "
                             f"({report['n_heldout']} pairs)"}
