"""Two generation backends behind one small interface: token-id prompts in, token ids out.

Both receive the same prompt ids (rendered once in ``prompts``), return the generated ids
with the stop id (EOS) removed and a finish reason, and are greedy unless the config sets a
temperature. Heavy libraries are imported only when a backend is built.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from harness.config import EngineOptions, GenerationConfig
from harness.errors import PrunescopeError

log = logging.getLogger("prunescope")


@dataclass(frozen=True)
class Output:
    token_ids: list[int]  # generated ids, without the prompt and without the final stop id
    finish_reason: str  # "stop" (a stop id was generated) or "length" (max_new_tokens reached)


DTYPES = ("float32", "bfloat16", "float16")


def stop_token_ids(model_dir: str | Path, tokenizer) -> set[int]:
    """The ids that end a generation: the tokenizer's EOS and the model's generation-config
    EOS ids (e.g. Llama 3's end-of-turn), the set vLLM also stops on."""
    from transformers import GenerationConfig as HFGenerationConfig

    ids = {tokenizer.eos_token_id}
    try:
        ids.update(_as_list(HFGenerationConfig.from_pretrained(model_dir).eos_token_id))
    except OSError:  # no generation_config.json
        pass
    return {int(i) for i in ids if i is not None}


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


class Backend(Protocol):
    name: str
    context_length: int

    def generate(self, prompts: list[list[int]], progress=None) -> list[Output]:
        """Outputs in prompt order; ``progress(n)`` is called as ``n`` more prompts finish."""


def sampling_settings(config: GenerationConfig) -> dict:
    """The sampling parameters recorded with every generation."""
    return {"max_new_tokens": config.max_new_tokens, "temperature": config.temperature,
            "top_p": config.top_p, "seed": config.seed, "greedy": config.temperature == 0}


def model_context_length(model_dir: str | Path) -> int:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir).get_text_config()
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        if getattr(config, name, None):
            return int(getattr(config, name))
    raise PrunescopeError(f"{model_dir}: config.json states no context length; set engine.max_model_len")


# The LoRA ranks a vLLM engine accepts as ``max_lora_rank`` (vllm.config.lora.MaxLoRARanks).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def start_vllm(model_dir: str | Path, engine: EngineOptions, seed: int = 0, lora_rank: int | None = None):
    """A vLLM engine with the config's engine options (tensor parallelism for large models);
    ``lora_rank``: serve LoRA adapters of up to that rank beside the unchanged base weights."""
    from vllm import LLM

    lora = {}
    if lora_rank is not None:
        rank = next((r for r in VLLM_LORA_RANKS if r >= lora_rank), lora_rank)
        lora = {"enable_lora": True, "max_lora_rank": rank, "max_loras": 1}
    dtype = resolve_dtype(engine.dtype, model_dir)
    with _cpu_kv_cache(model_dir, engine.max_model_len, dtype):
        return LLM(model=str(model_dir), tensor_parallel_size=engine.tensor_parallel_size,
                   gpu_memory_utilization=engine.gpu_memory_utilization,
                   max_model_len=engine.max_model_len, dtype=dtype,
                   enforce_eager=engine.enforce_eager, seed=seed, **lora)


CPU_KV_SEQUENCES = 8  # full-length sequences a CPU engine's KV cache holds unless told otherwise


def cpu_kv_cache_gib(model_dir: str | Path, max_model_len: int | None, dtype: str) -> int:
    """GiB of KV cache for a vLLM engine on a CPU: room for ``CPU_KV_SEQUENCES`` sequences of
    ``max_model_len`` tokens (None: the model's context length; keys and values of every
    layer), at least 1. vLLM's own default
    takes most of the machine's memory (21 GiB on a 2-core CI machine), and zeroing it was 25 s
    of a tiny model's 28 s engine start; a smaller cache only queues requests."""
    import math

    import torch
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir).get_text_config()
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    width = torch.tensor([], dtype=getattr(torch, dtype)).element_size()
    per_token = 2 * config.num_hidden_layers * kv_heads * head_dim * width
    tokens = max_model_len or model_context_length(model_dir)
    return max(1, math.ceil(per_token * tokens * CPU_KV_SEQUENCES / 2**30))


@contextmanager
def _cpu_kv_cache(model_dir, max_model_len: int | None, dtype: str):
    """On a CPU with ``VLLM_CPU_KVCACHE_SPACE`` unset, sets it to :func:`cpu_kv_cache_gib`
    while an engine starts; a value the user set is kept."""
    import torch

    if torch.cuda.is_available() or "VLLM_CPU_KVCACHE_SPACE" in os.environ:
        yield
        return
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(cpu_kv_cache_gib(model_dir, max_model_len, dtype))
    try:
        yield
    finally:
        del os.environ["VLLM_CPU_KVCACHE_SPACE"]


def adapter_rank(adapter_dir: str | Path) -> int:
    """The rank ``r`` of a peft LoRA adapter folder."""
    import json

    return int(json.loads((Path(adapter_dir) / "adapter_config.json").read_text())["r"])


class VLLMBackend:
    """Offline vLLM: all prompts of a cell in one ``LLM.generate`` call; with ``adapter``, a
    LoRA adapter folder applied by vLLM's LoRA layers (never merged into the base)."""

    name = "vllm"

    def __init__(self, llm, config: GenerationConfig, stop_ids: set[int], adapter: str | Path | None = None):
        self.llm = llm
        self.config = config
        self.stop_ids = stop_ids
        self.context_length = int(llm.llm_engine.model_config.max_model_len)
        self.lora_request = None
        if adapter is not None:
            from vllm.lora.request import LoRARequest

            self.lora_request = LoRARequest(Path(adapter).name, 1, str(adapter))

    def generate(self, prompts: list[list[int]], progress=None) -> list[Output]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(max_tokens=self.config.max_new_tokens, temperature=self.config.temperature,
                                top_p=self.config.top_p, seed=self.config.seed)
        results = self.llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in prompts], params,
                                    use_tqdm=False, lora_request=self.lora_request)
        outputs = []
        for result in results:
            completion = result.outputs[0]
            ids = list(completion.token_ids)
            if ids and ids[-1] in self.stop_ids and completion.finish_reason == "stop":
                ids = ids[:-1]
            outputs.append(Output(ids, completion.finish_reason))
        if progress:  # one call for the whole batch: its prompts finish together
            progress(len(outputs))
        return outputs


class HFBackend:
    """transformers ``generate`` in batches with left padding (prompts end where output starts);
    with ``adapter``, a peft LoRA adapter kept unmerged on top of the base weights."""

    name = "hf"

    def __init__(self, model_dir: str | Path, tokenizer, config: GenerationConfig, stop_ids: set[int],
                 adapter: str | Path | None = None):
        import torch
        from transformers import AutoModelForCausalLM

        self.config = config
        self.pad_id = padding_token_id(tokenizer)
        self.stop_ids = stop_ids
        placement = _placement(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=getattr(torch, resolve_dtype(config.engine.dtype, model_dir)), **placement).eval()
        if adapter is not None:
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, adapter).eval()  # unmerged
        if not placement and torch.cuda.is_available():
            self.model.to("cuda")
        self.device = next(self.model.parameters()).device
        self.context_length = config.engine.max_model_len or model_context_length(model_dir)

    def generate(self, prompts: list[list[int]], progress=None) -> list[Output]:
        outputs = []
        size = self.config.batch_size
        for start in range(0, len(prompts), size):
            outputs.extend(self._batch(prompts[start:start + size]))
            if progress:
                progress(len(prompts[start:start + size]))
        return outputs

    def _batch(self, prompts: list[list[int]]) -> list[Output]:
        import torch

        width = max(len(ids) for ids in prompts)
        input_ids = torch.tensor([[self.pad_id] * (width - len(ids)) + ids for ids in prompts])
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in prompts])
        sample = self.config.temperature > 0
        extra = {"temperature": self.config.temperature, "top_p": self.config.top_p} if sample else {}
        torch.manual_seed(self.config.seed)
        with torch.inference_mode():
            generated = self.model.generate(
                input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                max_new_tokens=self.config.max_new_tokens, do_sample=sample,
                pad_token_id=self.pad_id, eos_token_id=sorted(self.stop_ids) or None, **extra)
        outputs = []
        for row in generated[:, width:].tolist():
            end = next((i for i, token in enumerate(row) if token in self.stop_ids), None)
            outputs.append(Output(row, "length") if end is None else Output(row[:end], "stop"))
        return outputs


def build_backend(model_dir, config: GenerationConfig, llm=None, adapter: str | Path | None = None):
    """The configured backend on ``model_dir`` (``llm``: a started vLLM engine to use), and
    for a LoRA ``adapter`` which backend serves it: vLLM's LoRA layers, or, where the vLLM
    engine refuses it, transformers + peft (a warning; the reason is returned)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    stop_ids = stop_token_ids(model_dir, tokenizer)
    if config.backend == "hf":
        served = {"served_by": "hf-peft"} if adapter is not None else {}
        return HFBackend(model_dir, tokenizer, config, stop_ids, adapter), served
    if adapter is None:
        llm = llm if llm is not None else start_vllm(model_dir, config.engine, config.seed)
        return VLLMBackend(llm, config, stop_ids), {}
    try:
        llm = llm if llm is not None else start_vllm(model_dir, config.engine, config.seed, adapter_rank(adapter))
        backend = VLLMBackend(llm, config, stop_ids, adapter)
        backend.generate([[padding_token_id(tokenizer)]])  # vLLM loads an adapter on first use
        return backend, {"served_by": "vllm-lora"}
    except Exception as exc:  # noqa: BLE001 - any refusal of vLLM's LoRA path: fall back, recorded
        reason = f"{type(exc).__name__}: {exc}"[:500]
        log.warning("vLLM could not serve the adapter %s (%s); using transformers + peft, unmerged",
                    adapter, reason)
        return HFBackend(model_dir, tokenizer, config, stop_ids, adapter), {"served_by": "hf-peft",
                                                                            "fallback_reason": reason}


def padding_token_id(tokenizer) -> int:
    """The tokenizer's pad id, else its EOS id (masked out, so any id would do), else 0."""
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    return 0


def resolve_dtype(name: str, model_dir: str | Path) -> str:
    """The dtype both backends load in: an explicit name as given; ``auto`` the checkpoint's
    own (config.json's ``dtype``/``torch_dtype``, float32 when unstated), except float32 on a
    GPU, which becomes bfloat16. vLLM gets the resolved name, never ``auto`` (its own rule
    downcasts float32 even on a CPU)."""
    import json

    import torch

    if name != "auto":
        if name not in DTYPES:
            raise PrunescopeError(f"generation.engine.dtype: {name!r} is not one of auto, "
                                  f"{', '.join(DTYPES)}")
        return name
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise PrunescopeError(f"{model_dir}/config.json: cannot read the checkpoint's dtype: {exc}") from None
    own = config.get("dtype") or config.get("torch_dtype") or "float32"
    if own not in DTYPES:
        raise PrunescopeError(f"{model_dir}/config.json: dtype {own!r} is not one of {', '.join(DTYPES)}")
    return "bfloat16" if own == "float32" and torch.cuda.is_available() else own


def _placement(model_dir) -> dict:
    """``device_map="auto"`` when the weights exceed one GPU's memory, so they span the node."""
    import torch

    if not torch.cuda.is_available():
        return {}
    weights = sum(p.stat().st_size for p in Path(model_dir).glob("*.safetensors"))
    weights = weights or sum(p.stat().st_size for p in Path(model_dir).glob("*.bin"))
    if weights > 0.9 * torch.cuda.get_device_properties(0).total_memory:
        return {"device_map": "auto"}
    return {}
