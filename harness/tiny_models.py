"""Tiny, seeded models built locally in seconds, for tests and the demo (never downloaded).

- causal LMs of several families (Llama, OPT, Mistral, Qwen2, GPT-NeoX, Falcon) with
  head_dim 32 (vLLM's CPU attention needs >= 32) and, as in real LLMs, a few outlier
  channels in the norm gains, so activation-aware pruning differs from magnitude pruning;
- a tiny BART (stand-in for the HaRiM+ scorer facebook/bart-large-cnn);
- a tiny 3-label ALBERT NLI classifier labelled like tals/albert-xlarge-vitaminc-mnli
  (0 SUPPORTS, 1 REFUTES, 2 NOT ENOUGH INFO), stand-in for the SummaC NLI model.

All share one byte-level BPE tokenizer trained here with `tokenizers`, and load with
``AutoTokenizer`` / ``AutoModel*`` from their folder with ``HF_HUB_OFFLINE=1``.
``tiny_model(name)`` builds once into a cache folder keyed by this file's content.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

CAUSAL_FAMILIES = ("llama", "opt", "mistral", "qwen2", "gpt_neox", "falcon")
SCORERS = ("bart", "nli")
NAMES = CAUSAL_FAMILIES + SCORERS

HIDDEN, HEADS, LAYERS, FFN, CONTEXT = 128, 4, 2, 256, 1024  # head_dim = 32
OUTLIER_CHANNELS, OUTLIER_GAIN = (3, 17, 77), 12.0
VOCAB_SIZE = 1024
SPECIALS = ["<s>", "</s>", "<pad>", "<unk>", "<mask>", "<|system|>", "<|user|>", "<|assistant|>"]
NLI_LABELS = {0: "SUPPORTS", 1: "REFUTES", 2: "NOT ENOUGH INFO"}

# A Llama-2-like chat layout; the template writes the BOS itself, so a caller that renders
# it to text must tokenize with add_special_tokens=False (the generation stage does).
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

_CORPUS = """\
The city council met on Tuesday to approve a new budget for public transport and schools.
Officials said the plan would add twenty buses and repair three bridges before the winter.
Scientists reported that the river had recovered after years of pollution from local mills.
A small company in the north announced record profits and promised to hire two hundred workers.
The hospital opened a new ward for children, funded by donations from residents and businesses.
Heavy rain flooded several streets, and the fire service rescued a family from their car.
Researchers found that patients who walked every day recovered faster after the operation.
The football club signed a young striker who scored twelve goals in his first season.
Farmers warned that the dry summer would reduce the harvest of wheat and barley this year.
The museum will display paintings that were lost for almost a century and found in an attic.
A court ruled that the contract was void because the agreement had not been signed by both parties.
The trial enrolled four hundred adults and compared the new drug with a placebo over six months.
Summary: the report says that prices rose, wages fell, and the government promised to act.
Students protested against higher fees, and the university agreed to review its decision.
The airline cancelled dozens of flights after a strike by ground staff at the main airport.
Police arrested two men after a robbery at a jewellery shop in the centre of the town.
The minister said the new law would protect workers and improve safety in factories.
A storm damaged power lines, leaving thousands of homes without electricity overnight.
"""


def cache_root() -> Path:
    """Where built tiny models live: $PRUNESCOPE_CACHE or <repo>/.cache, per builder version."""
    base = os.environ.get("PRUNESCOPE_CACHE") or Path(__file__).resolve().parents[1] / ".cache"
    version = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:10]
    return Path(base) / f"tiny-models-{version}"


def tiny_model(name: str) -> Path:
    """Path of a built tiny model (``llama``, ``opt``, ..., ``bart``, ``nli``), built on first use."""
    if name not in NAMES:
        raise ValueError(f"unknown tiny model {name!r}; choose from {', '.join(NAMES)}")
    return build_once(cache_root() / name, "config.json", lambda tmp: build(name, tmp))


def build_once(target: Path, marker: str, make: Callable[[Path], None]) -> Path:
    """``target``, made by ``make(tmp_folder)`` unless ``target/marker`` exists; the folder
    appears atomically, and a concurrent builder that finished first keeps its result."""
    if not (target / marker).exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            make(tmp)
            os.replace(tmp, target)
        except OSError:
            if not (target / marker).exists():
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def build_all(out: str | Path, names=NAMES) -> dict[str, Path]:
    """Build the named tiny models into ``out/<name>`` and return their paths."""
    out = Path(out)
    return {name: build(name, out / name) for name in names}


def build(name: str, out: str | Path, seed: int = 0) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if name in CAUSAL_FAMILIES:
        model = _causal_lm(name)
        tok = build_tokenizer("causal", chat=(name != "opt"))
    elif name == "bart":
        model, tok = _bart(), build_tokenizer("seq2seq")
    elif name == "nli":
        model, tok = _nli(), build_tokenizer("pair")
    else:
        raise ValueError(f"unknown tiny model {name!r}")
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def build_tokenizer(kind: str = "causal", chat: bool = True, corpus: list[str] | None = None,
                    vocab_size: int = VOCAB_SIZE, context: int = CONTEXT):
    """A byte-level BPE tokenizer (any text encodes, nothing maps to <unk>), learned on
    ``corpus`` (default: a few news-like sentences).

    kind: "causal" (prepends <s>), "seq2seq" (<s> A </s>, like BART) or "pair"
    (<s> A </s> B </s> with segment ids, for the NLI classifier)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus or _CORPUS.splitlines() * 4, trainer=trainer)
    ids = {t: tok.token_to_id(t) for t in ("<s>", "</s>")}
    specials = [("<s>", ids["<s>"]), ("</s>", ids["</s>"])]
    if kind == "causal":
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=specials[:1])
    elif kind == "seq2seq":
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=specials)
    elif kind == "pair":
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", pair="<s> $A </s> $B:1 </s>:1", special_tokens=specials)
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}")
    pair_inputs = {}
    if kind == "pair":
        pair_inputs["model_input_names"] = ["input_ids", "token_type_ids", "attention_mask"]
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        unk_token="<unk>", mask_token="<mask>",
        additional_special_tokens=["<|system|>", "<|user|>", "<|assistant|>"],
        model_max_length=context, **pair_inputs,
    )
    if kind == "causal" and chat:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def special_ids() -> dict:
    return {"bos_token_id": SPECIALS.index("<s>"), "eos_token_id": SPECIALS.index("</s>"),
            "pad_token_id": SPECIALS.index("<pad>")}


def _causal_lm(family: str):
    common = dict(vocab_size=VOCAB_SIZE, hidden_size=HIDDEN, num_attention_heads=HEADS,
                  num_hidden_layers=LAYERS, intermediate_size=FFN,
                  max_position_embeddings=CONTEXT, tie_word_embeddings=False, **special_ids())
    if family in ("llama", "mistral", "qwen2"):
        cls = {"llama": transformers.LlamaConfig, "mistral": transformers.MistralConfig,
               "qwen2": transformers.Qwen2Config}[family]
        extra = {"num_key_value_heads": 2, "head_dim": HIDDEN // HEADS}
        if family == "mistral":
            extra["sliding_window"] = None
        config = cls(**common, **extra)
    elif family == "opt":
        config = transformers.OPTConfig(
            vocab_size=VOCAB_SIZE, hidden_size=HIDDEN, num_attention_heads=HEADS,
            num_hidden_layers=LAYERS, ffn_dim=FFN, max_position_embeddings=CONTEXT,
            word_embed_proj_dim=HIDDEN, do_layer_norm_before=True, **special_ids())
    elif family == "gpt_neox":
        config = transformers.GPTNeoXConfig(**common, rotary_pct=1.0, use_parallel_residual=True)
    elif family == "falcon":
        config = transformers.FalconConfig(
            vocab_size=VOCAB_SIZE, hidden_size=HIDDEN, num_attention_heads=HEADS,
            num_hidden_layers=LAYERS, ffn_hidden_size=FFN, new_decoder_architecture=False,
            multi_query=True, parallel_attn=True, alibi=False, bias=False,
            max_position_embeddings=CONTEXT, **special_ids())
    else:
        raise ValueError(f"unknown causal family {family!r}")
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    _add_outlier_channels(model)
    return model


@torch.no_grad()
def _add_outlier_channels(model) -> None:
    """Scale a few hidden channels of every norm gain inside the blocks, as real LLMs have
    a few massive-activation channels; Wanda then weighs those inputs more than |W| does."""
    for name, param in model.named_parameters():
        if "norm" in name and ".weight" in name and param.ndim == 1 and param.shape[0] == HIDDEN:
            if any(f".{i}." in name for i in range(LAYERS)):  # inside a block, not the final norm
                param[list(OUTLIER_CHANNELS)] *= OUTLIER_GAIN


def _bart():
    config = transformers.BartConfig(
        vocab_size=VOCAB_SIZE, d_model=64, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=128,
        decoder_ffn_dim=128, max_position_embeddings=CONTEXT, init_std=0.2,
        decoder_start_token_id=SPECIALS.index("</s>"), **special_ids())
    return transformers.BartForConditionalGeneration(config)


def _nli():
    config = transformers.AlbertConfig(
        vocab_size=VOCAB_SIZE, embedding_size=32, hidden_size=64, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=128, max_position_embeddings=CONTEXT,
        type_vocab_size=2, num_labels=3, id2label=NLI_LABELS,
        label2id={v: k for k, v in NLI_LABELS.items()}, initializer_range=0.3,
        **special_ids())
    return transformers.AlbertForSequenceClassification(config)
