"""Two causal-LM summarizer families (Llama, GPT-NeoX) trained on the facts task.

Hidden 64, 2 layers, head_dim 32 (vLLM's CPU attention needs it), the task's BPE tokenizer;
prompted with prompt A through their chat template. Training: a copy warm-up (the answer is
the document), then the reference summaries, which reuse the document's wording."""

from __future__ import annotations

import random
from pathlib import Path

import torch
import transformers

from harness import tiny_models
from harness.trained.fitting import CONTEXT, fit, pad_rows, task_tokenizer

FAMILIES = ("llama", "gpt_neox")
HIDDEN, HEADS, LAYERS, FFN = 64, 2, 2, 128


def causal_config(family: str, vocab_size: int):
    """Llama (RMSNorm, SwiGLU, separate q/k/v) or GPT-NeoX (LayerNorm, GELU, fused qkv,
    parallel residual): two block designs for the pruning core and vLLM."""
    common = dict(vocab_size=vocab_size, hidden_size=HIDDEN, num_attention_heads=HEADS,
                  num_hidden_layers=LAYERS, intermediate_size=FFN, max_position_embeddings=CONTEXT,
                  tie_word_embeddings=False, **tiny_models.special_ids())
    if family == "llama":
        return transformers.LlamaConfig(**common, num_key_value_heads=HEADS, head_dim=HIDDEN // HEADS)
    if family == "gpt_neox":
        return transformers.GPTNeoXConfig(**common, rotary_pct=1.0, use_parallel_residual=True)
    raise ValueError(f"unknown summarizer family {family!r}; choose from {', '.join(FAMILIES)}")


def train_summarizer(family: str, out: Path, seed: int, warmup_steps: int = 200,
                     steps: int = 500, batch: int = 32, lr: float = 4e-3) -> dict:
    """Train, save and measure one summarizer; returns its training report."""
    from harness.generation.prompts import prompt_template, render_ids
    from tasks.synthetic import TRAIN_SEED, records

    tok = task_tokenizer("causal")
    model = transformers.AutoModelForCausalLM.from_config(causal_config(family, len(tok)),
                                                          dtype=torch.float32)
    tok = served_tokenizer(tok, model.config, out)
    template = prompt_template("A")
    data = records(4000, TRAIN_SEED + seed)
    prompts = [render_ids(tok, template, r["document"], "chat") for r in data]
    answers = {field: [ids + [tok.eos_token_id] for ids in
                       tok([r[field] for r in data], add_special_tokens=False).input_ids]
               for field in ("document", "reference")}
    rng = random.Random(seed)

    def loss_at(step: int):
        chosen = [rng.randrange(len(data)) for _ in range(batch)]
        field = "document" if step < warmup_steps else "reference"
        return answer_loss(model, [prompts[i] for i in chosen],
                           [answers[field][i] for i in chosen], tok.pad_token_id)

    loss = fit(model, loss_at, warmup_steps + steps, lr=lr, warmup=50)
    model.generation_config = transformers.GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    quality = summarizer_quality(out)
    return {"model": f"summarizer ({family})", "accuracy": quality["fact_recall"],
            "accuracy_name": f"held-out fact recall (facts task, {quality['heldout_documents']} "
                             "documents, greedy)",
            "chance": 0.0, **quality, "learned": faithful(quality), "steps": warmup_steps + steps, "copy_warmup": warmup_steps,
            "batch": batch, "final_loss": loss}


FAITHFUL_RECALL, FAITHFUL_HALLUCINATION = 0.9, 0.02  # what a dense summarizer must reach


def faithful(quality: dict) -> bool:
    """A summarizer has learned when its held-out summaries state >= 90% of the key facts and
    <= 2% of them state a fact the document does not: recall alone would call a summarizer
    that copies facts and invents others learned."""
    return bool(quality["fact_recall"] >= FAITHFUL_RECALL
                and quality["hallucination"] <= FAITHFUL_HALLUCINATION)


def served_tokenizer(tok, config, out: Path):
    """``tok`` as its users will load it from ``out`` (transformers' AutoTokenizer, which
    vLLM uses too). For some configs that is another class: a Qwen2 folder gets transformers'
    Qwen2 tokenizer, whose pre-tokenizer splits the task's words and digits into pieces; a
    Qwen2 summarizer trained on ``tok`` as built was served other ids (held-out recall 0.30),
    and trained on the served ids still hallucinated (0.98), so the second family is
    GPT-NeoX, which keeps the task's tokenizer."""
    config.save_pretrained(out)
    tok.save_pretrained(out)
    return transformers.AutoTokenizer.from_pretrained(str(out))


def answer_loss(model, prompts: list[list[int]], answers: list[list[int]], pad: int):
    """Mean next-token cross-entropy on the answer tokens of prompt + answer rows; the output
    layer runs on answer positions only (most of a row is prompt)."""
    rows = [p + a for p, a in zip(prompts, answers)]
    hidden = model.base_model(input_ids=pad_rows(rows, pad),
                              attention_mask=pad_rows([[1] * len(r) for r in rows], 0))
    targets = pad_rows([[-100] * len(p) + a for p, a in zip(prompts, answers)], -100)[:, 1:]
    scored = targets != -100
    logits = model.get_output_embeddings()(hidden.last_hidden_state[:, :-1][scored])
    return torch.nn.functional.cross_entropy(logits, targets[scored])


def summarizer_quality(path: str | Path, n: int = 100, max_new_tokens: int = 64) -> dict:
    """Greedy summaries (transformers) of the facts task's first ``n`` documents, which no
    trained model saw: mean ground-truth fact recall and hallucination rate."""
    from harness.generation.prompts import prompt_template, render_ids
    from harness.scoring.ground_truth import ground_truth
    from tasks import load_task

    tok = transformers.AutoTokenizer.from_pretrained(str(path))
    model = transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    records = load_task("facts", limit=n).records
    template = prompt_template("A")
    found = []
    for start in range(0, len(records), 100):
        chunk = records[start:start + 100]
        ids = [render_ids(tok, template, r.document, "chat") for r in chunk]
        texts = greedy(model, tok, ids, max_new_tokens)
        found += [ground_truth(t, r.document, r.facts) for r, t in zip(chunk, texts)]
    return {"fact_recall": sum(f["gt_fact_recall"] for f in found) / len(found),
            "hallucination": sum(f["gt_hallucination"] for f in found) / len(found),
            "heldout_documents": len(found)}


@torch.inference_mode()
def greedy(model, tok, prompts: list[list[int]], max_new_tokens: int) -> list[str]:
    """Greedy continuations of left-padded ``prompts``, decoded without specials."""
    width = max(map(len, prompts))
    pad = tok.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    out = model.generate(input_ids=input_ids, attention_mask=mask, do_sample=False,
                         max_new_tokens=max_new_tokens, pad_token_id=pad)
    return tok.batch_decode(out[:, width:], skip_special_tokens=True)
