"""Tiny models *trained* here on the synthetic facts task (``tasks/synthetic.py``), so the demo
and the tests have summaries and scorers that mean something. Never downloaded; trained once
(deterministic per seed) and cached like ``harness.tiny_models``, keyed by the content of the
files that define them.

- ``summarizer-llama`` and ``summarizer-qwen2``: two causal-LM families (hidden 64, 2 layers,
  head_dim 32 for vLLM's CPU attention) prompted with prompt A through their chat template;
  a copy warm-up (answer = the document) precedes training on the reference summaries.
- ``bart``: a seq2seq BART trained on document -> reference, the HaRiM+ scorer.
- ``nli``: a BERT pair classifier labelled like tals/albert-xlarge-vitaminc-mnli (0 SUPPORTS,
  1 REFUTES, 2 NOT ENOUGH INFO), trained on sentence pairs of the task's grammar: a document
  sentence with its own (shortened) wording, with an entity swapped or a number or date
  changed, and with another sentence of the document.
- ``summac-conv``: a SummaC-Conv head (``head.bin``) trained on (document, reference) vs
  (document, corrupted reference) with the ``nli`` model.

Each folder holds ``training.json`` with the held-out "scorer accuracy" (for summarizers: fact
recall and hallucination), its chance level, and ``learned``: false when the accuracy does not
clear chance by ``LEARNED_MARGIN``; such a scorer ships flagged, never hidden.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from pathlib import Path

import torch
import transformers

from harness import tiny_models
from harness.atomic import write_json

SUMMARIZERS = ("summarizer-llama", "summarizer-qwen2")
NAMES = (*SUMMARIZERS, "bart", "nli", "summac-conv")
VOCAB_SIZE, HIDDEN, HEADS, LAYERS, FFN, CONTEXT = 640, 64, 2, 2, 128, 512
NLI_LABELS = tiny_models.NLI_LABELS
LEARNED_MARGIN = 0.1  # accuracy must beat chance by this much to count as learned
TRAINING_FILE = "training.json"
_SOURCES = ("harness/trained_models.py", "harness/tiny_models.py", "tasks/synthetic.py",
            "harness/generation/prompts.py")


def cache_root() -> Path:
    """Where trained models live: $PRUNESCOPE_CACHE or <repo>/.cache, per trainer version."""
    repo = Path(__file__).resolve().parents[1]
    base = os.environ.get("PRUNESCOPE_CACHE") or repo / ".cache"
    digest = hashlib.sha256(b"".join((repo / p).read_bytes() for p in _SOURCES)).hexdigest()[:10]
    return Path(base) / f"trained-models-{digest}"


def trained_model(name: str) -> Path:
    """Path of a trained tiny model, trained on first use (seed 0) and cached."""
    if name not in NAMES:
        raise ValueError(f"unknown trained model {name!r}; choose from {', '.join(NAMES)}")
    return tiny_models.build_once(cache_root() / name, TRAINING_FILE, lambda tmp: train(name, tmp))


def training_report(path: str | Path) -> dict | None:
    """The ``training.json`` of a trained model folder (or of a conv head's folder), if any."""
    file = Path(path) / TRAINING_FILE if Path(path).is_dir() else Path(path).parent / TRAINING_FILE
    return json.loads(file.read_text()) if file.exists() else None


def train(name: str, out: str | Path, seed: int = 0) -> Path:
    """Train ``name`` into ``out`` and write its ``training.json``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    started = time.perf_counter()
    if name in SUMMARIZERS:
        report = _train_summarizer(name.split("-", 1)[1], out, seed)
    elif name == "bart":
        report = _train_bart(out, seed)
    elif name == "nli":
        report = _train_nli(out, seed)
    elif name == "summac-conv":
        report = _train_conv(out, seed)
    else:
        raise ValueError(f"unknown trained model {name!r}")
    report["learned"] = bool(report["accuracy"] >= report["chance"] + LEARNED_MARGIN)
    report.update(seed=seed, seconds=round(time.perf_counter() - started, 1))
    write_json(out / TRAINING_FILE, report)
    return out


def tokenizer(kind: str = "causal", chat: bool = True):
    """The trained models' tokenizer: byte-level BPE learned on the task's own text."""
    from harness.generation.prompts import INSTRUCTIONS, SYSTEM_MESSAGE, LAYOUT
    from tasks.synthetic import records

    corpus = [t for r in records(600, 1) for t in (r["document"], r["reference"])]
    corpus += [SYSTEM_MESSAGE, *INSTRUCTIONS.values(), LAYOUT]
    return tiny_models.build_tokenizer(kind, chat, corpus=corpus, vocab_size=VOCAB_SIZE,
                                       context=CONTEXT)


# -- summarizers --------------------------------------------------------------------------


def _causal_config(family: str):
    special = tiny_models.special_ids()
    common = dict(vocab_size=VOCAB_SIZE, hidden_size=HIDDEN, num_attention_heads=HEADS,
                  num_key_value_heads=HEADS, head_dim=HIDDEN // HEADS, num_hidden_layers=LAYERS,
                  intermediate_size=FFN, max_position_embeddings=CONTEXT,
                  tie_word_embeddings=False, **special)
    cls = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config}[family]
    return cls(**common)


def _train_summarizer(family: str, out: Path, seed: int, warmup_steps: int = 200,
                      steps: int = 500, batch: int = 32) -> dict:
    from harness.generation.prompts import prompt_template, render_ids
    from tasks.synthetic import TRAIN_SEED, records

    tok = tokenizer("causal")
    model = transformers.AutoModelForCausalLM.from_config(_causal_config(family), dtype=torch.float32)
    template = prompt_template("A")
    data = records(4000, TRAIN_SEED + seed)
    prompts = [render_ids(tok, template, r["document"], "chat") for r in data]
    eos = tok.eos_token_id

    def example(i: int, copy: bool) -> tuple[list[int], list[int]]:
        answer = data[i]["document"] if copy else data[i]["reference"]
        target = tok(answer, add_special_tokens=False).input_ids + [eos]
        return prompts[i] + target, [-100] * len(prompts[i]) + target

    rng = random.Random(seed)
    _fit(model, lambda step: [example(rng.randrange(len(data)), step < warmup_steps)
                              for _ in range(batch)], warmup_steps + steps, lr=3e-3)
    model.generation_config = transformers.GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=eos, pad_token_id=tok.pad_token_id)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    quality = summarizer_quality(out, n=100)
    return {"model": f"summarizer ({family})", "accuracy": quality["fact_recall"],
            "accuracy_name": "held-out fact recall (facts task, 100 documents, greedy)",
            "chance": 0.0, **quality, "steps": warmup_steps + steps, "copy_warmup": warmup_steps}


def summarizer_quality(path: str | Path, n: int = 100, max_new_tokens: int = 64) -> dict:
    """Greedy summaries of the facts task's first ``n`` documents (held out from training):
    mean ground-truth fact recall and hallucination rate."""
    from harness.generation.prompts import prompt_template, render_ids
    from harness.scoring.ground_truth import ground_truth
    from tasks import load_task

    tok = transformers.AutoTokenizer.from_pretrained(str(path))
    model = transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    records = load_task("facts", limit=n).records
    template = prompt_template("A")
    recall, halluc = [], []
    for start in range(0, len(records), 25):
        chunk = records[start:start + 25]
        ids = [render_ids(tok, template, r.document, "chat") for r in chunk]
        texts = _greedy(model, tok, ids, max_new_tokens)
        for record, text in zip(chunk, texts):
            found = ground_truth(text, record.document, record.facts)
            recall.append(found["gt_fact_recall"])
            halluc.append(found["gt_hallucination"])
    return {"fact_recall": sum(recall) / len(recall), "hallucination": sum(halluc) / len(halluc),
            "heldout_documents": len(records)}


@torch.inference_mode()
def _greedy(model, tok, prompts: list[list[int]], max_new_tokens: int) -> list[str]:
    width = max(map(len, prompts))
    pad = tok.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    out = model.generate(input_ids=input_ids, attention_mask=mask, do_sample=False,
                         max_new_tokens=max_new_tokens, pad_token_id=pad)
    return tok.batch_decode(out[:, width:], skip_special_tokens=True)


def _fit(model, batches, steps: int, lr: float, pad: int | None = None) -> float:
    """Causal-LM training on (input ids, labels) examples; returns the last loss."""
    pad = tiny_models.special_ids()["pad_token_id"] if pad is None else pad

    def loss_at(step: int):
        examples = batches(step)
        width = max(len(ids) for ids, _ in examples)
        ids = torch.tensor([x + [pad] * (width - len(x)) for x, _ in examples])
        labels = torch.tensor([y + [-100] * (width - len(y)) for _, y in examples])
        mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x, _ in examples])
        return model(input_ids=ids, attention_mask=mask, labels=labels).loss

    return _train(model, loss_at, steps, lr, weight_decay=0.0)


def _train(model, loss_at, steps: int, lr: float, weight_decay: float = 0.01) -> float:
    """AdamW with linear decay and gradient clipping at 1 over ``loss_at(step)``; leaves the
    model in eval mode and returns the last loss."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 - s / steps)
    model.train()
    loss = torch.tensor(float("nan"))
    for step in range(steps):
        loss = loss_at(step)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    model.eval()
    return float(loss.detach())


# -- BART (HaRiM+) ------------------------------------------------------------------------


def _train_bart(out: Path, seed: int, steps: int = 500, batch: int = 24) -> dict:
    from tasks.synthetic import TRAIN_SEED, records

    tok = tokenizer("seq2seq")
    special = tiny_models.special_ids()
    config = transformers.BartConfig(
        vocab_size=VOCAB_SIZE, d_model=64, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=128,
        decoder_ffn_dim=128, max_position_embeddings=CONTEXT,
        decoder_start_token_id=special["eos_token_id"], forced_eos_token_id=special["eos_token_id"],
        **special)
    model = transformers.BartForConditionalGeneration(config)
    data = records(3000, TRAIN_SEED + 100 + seed)
    rng = random.Random(seed)

    def loss_at(_step: int):
        chosen = [data[rng.randrange(len(data))] for _ in range(batch)]
        enc = tok([r["document"] for r in chosen], padding=True, return_tensors="pt")
        labels = tok([r["reference"] for r in chosen], padding=True, return_tensors="pt").input_ids
        labels[labels == tok.pad_token_id] = -100
        return model(**enc, labels=labels).loss

    _train(model, loss_at, steps, lr=3e-3)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    accuracy = _harim_pair_accuracy(out)
    return {"model": "BART (HaRiM+ scorer)", "accuracy": accuracy, "chance": 0.5, "steps": steps,
            "accuracy_name": "held-out pair accuracy: HaRiM+ ranks the reference above the same "
                             "reference with one fact corrupted (200 facts-task documents)"}


def _harim_pair_accuracy(path: Path, n: int = 200) -> float:
    from harness.scoring.harim import harim_scores
    from harness.scoring.loading import load_scorer

    pairs = _heldout_pairs(n)
    loaded = load_scorer(path, "seq2seq", device="cpu")
    good = harim_scores(loaded, [d for d, _, _ in pairs], [g for _, g, _ in pairs])
    bad = harim_scores(loaded, [d for d, _, _ in pairs], [b for _, _, b in pairs])
    return sum(g.harim_plus > b.harim_plus for g, b in zip(good, bad)) / len(pairs)


def _heldout_pairs(n: int) -> list[tuple[str, str, str]]:
    """(document, reference, corrupted reference) for the facts task's first ``n`` records."""
    from tasks import load_task
    from tasks.synthetic import corrupt

    rng = random.Random(12345)
    return [(r.document, r.reference, corrupt(r.reference, r.document, r.facts, rng))
            for r in load_task("facts", limit=n).records]


# -- NLI (SummaC) -------------------------------------------------------------------------


def nli_pairs(n_records: int, seed: int) -> list[tuple[str, str, int]]:
    """(premise, hypothesis, label) sentence pairs of the task's grammar: each document
    sentence entails its own full and shortened wording (0), is refuted by them with a fact
    corrupted (1), and says nothing about another sentence of the document (2)."""
    from tasks.synthetic import TEMPLATES, _draw_slots, _fill, _full, _short, corrupt

    rng = random.Random(seed)
    pairs = []
    for _ in range(n_records):
        template, values = rng.choice(TEMPLATES), _draw_slots(rng)
        raw = [*template["key"], *template["detail"]]
        full = [_fill(_full(s), values) for s in raw]
        facts = [{"type": t, "value": v} for t, v in _typed_values(values)]
        for i, sentence in enumerate(raw):
            premise = full[i]
            hypothesis = _fill(rng.choice((_full, _short))(sentence), values)
            own = [f for f in facts if f["value"] in hypothesis]
            pairs.append((premise, hypothesis, 0))
            if own:
                pairs.append((premise, corrupt(hypothesis, premise, own, rng), 1))
            other = rng.choice([s for j, s in enumerate(full) if j != i])
            pairs.append((premise, other, 2))
    rng.shuffle(pairs)
    return pairs


def _typed_values(values: dict[str, str]):
    kinds = {"P": "person", "O": "organisation", "L": "place", "N": "number", "D": "date"}
    return [(kinds[slot[0]], value) for slot, value in values.items()]


def _train_nli(out: Path, seed: int, steps: int = 1500, batch: int = 64) -> dict:
    tok = tokenizer("pair")
    special = tiny_models.special_ids()
    config = transformers.BertConfig(
        vocab_size=VOCAB_SIZE, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=128, max_position_embeddings=CONTEXT, type_vocab_size=2, num_labels=3,
        id2label=NLI_LABELS, label2id={v: k for k, v in NLI_LABELS.items()},
        pad_token_id=special["pad_token_id"])
    model = transformers.BertForSequenceClassification(config)
    train_pairs = nli_pairs(4000, 1_000_000 + seed)
    rng = random.Random(seed)

    def loss_at(_step: int):
        chosen = [train_pairs[rng.randrange(len(train_pairs))] for _ in range(batch)]
        enc = tok([p for p, _, _ in chosen], [h for _, h, _ in chosen], padding=True,
                  return_tensors="pt")
        return model(**enc, labels=torch.tensor([y for _, _, y in chosen])).loss

    _train(model, loss_at, steps, lr=2e-3)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    held = nli_pairs(300, 2_000_000)
    with torch.inference_mode():
        enc = tok([p for p, _, _ in held], [h for _, h, _ in held], padding=True, return_tensors="pt")
        predicted = model(**enc).logits.argmax(-1).tolist()
    labels = [y for _, _, y in held]
    accuracy = sum(p == y for p, y in zip(predicted, labels)) / len(held)
    refuted = [p for p, y in zip(predicted, labels) if y == 1]
    return {"model": "NLI (SummaC scorer)", "accuracy": accuracy, "chance": 1 / 3, "steps": steps,
            "accuracy_name": "held-out 3-way accuracy on sentence pairs of the task's grammar "
                             "(entailed / fact corrupted / other sentence)",
            "refuted_recall": sum(p == 1 for p in refuted) / len(refuted)}


# -- SummaC-Conv head ---------------------------------------------------------------------


def _train_conv(out: Path, seed: int, n: int = 300) -> dict:
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
    report = train_summac_conv(out / "pairs.jsonl", trained_model("nli"), out / "head.bin",
                               seed=seed, note="trained on the synthetic facts task with the "
                                               "trained tiny NLI model; not the published head")
    return {"model": "SummaC-Conv head", "accuracy": report["balanced_accuracy"], "chance": 0.5,
            "accuracy_name": "held-out balanced accuracy (reference vs corrupted reference)"}
