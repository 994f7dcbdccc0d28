"""One engine serves a model's checkpoints in turn: started on the first, later checkpoints
are swapped into it and the swap is verified.

``EngineSession.load(checkpoint)`` starts the engine (vLLM or transformers) on the first
checkpoint; a later checkpoint's weights are loaded in place (vLLM: ``reload_weights`` then a
prefix-cache reset; transformers: ``load_state_dict``) and checked against the checkpoint
folder through ``weights``' fingerprint (before the first swap, the engine is checked the
same way against the checkpoint it started on, which proves that the fingerprint can read
it). A checkpoint that cannot be swapped in raises ``SwapRefused`` with the reason: tensor
shapes differ, the engine refused, or the loaded weights do not verify. The session is then
unusable (it may hold half of the new weights); the caller starts a fresh engine for that
checkpoint, in a fresh process for vLLM, which releases memory reliably (and can start a
second engine) only when its process ends. A LoRA system (an adapter over a base) is never
swapped: it gets an engine of its own.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from harness.config import GenerationConfig
from harness.errors import PrunescopeError
from harness.generation.weights import checkpoint_fingerprint, compare, module_fingerprint, shape_signature

log = logging.getLogger("prunescope")


class SwapRefused(PrunescopeError):
    """A checkpoint that cannot be loaded into the running engine; ``reason`` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Loaded:
    """How a checkpoint came to be in the engine (recorded with each of its generations)."""

    engine: str  # the engine's id: one per engine start
    swapped: bool  # loaded into an engine started on an earlier checkpoint
    engine_start_s: float  # seconds to start the engine (0 when swapped in)
    swap_s: float  # seconds to load and verify swapped weights (0 when started on it)
    verified: str | None  # "fingerprint" for a swap, None for a fresh start
    not_swapped: str | None = None  # why a fresh engine, when not the model's first checkpoint
    served_by: dict | None = None  # for a LoRA system: which backend serves the adapter (and why)

    def record(self) -> dict:
        return {"engine": self.engine, "swapped": self.swapped, "not_swapped": self.not_swapped,
                "engine_start_s": round(self.engine_start_s, 3), "swap_s": round(self.swap_s, 3),
                "verified": self.verified}


class EngineSession:
    """An engine for one model's checkpoints of one tensor layout."""

    def __init__(self, config: GenerationConfig, label: str = "engine", llm=None):
        self.config = config
        self.label = label
        self.backend = None  # a backends.VLLMBackend or HFBackend
        self.model_dir: Path | None = None
        self.engine_id = ""
        self.broken: str | None = None  # why this engine must not serve another checkpoint
        self._checked = False  # the engine was found to hold its first checkpoint's weights
        self.served_by: dict = {}  # a LoRA system's: which backend serves the adapter
        self._given_llm = llm

    def load(self, model_dir: str | Path, fresh_reason: str | None = None, adapter: Path | None = None) -> Loaded:
        """Make ``model_dir`` (plus ``adapter``) the engine's weights: start on it
        (``fresh_reason``: why it gets an engine of its own rather than a swap, recorded), or
        swap it in."""
        model_dir = Path(model_dir)
        if self.backend is None:
            return self._start(model_dir, fresh_reason, adapter)
        if adapter is not None or self.served_by:
            raise SwapRefused("a LoRA system is served by an engine of its own")
        if self.broken:
            raise SwapRefused(self.broken)
        if shape_signature(model_dir) != shape_signature(self.model_dir):
            raise SwapRefused("tensor shapes differ from the running engine's checkpoint")
        started = time.perf_counter()
        if not self._checked:
            self._verify(self.model_dir, "the engine's weights could not be verified before a swap")
            self._checked = True
        self.broken = "an earlier swap into this engine did not complete"
        log.info("engine %s: swapping in %s", self.engine_id, model_dir)
        try:
            self._swap(model_dir)
        except Exception as exc:  # noqa: BLE001 - any refusal: the caller falls back
            raise SwapRefused(f"the engine refused the weights ({type(exc).__name__}: {exc})") from exc
        self._verify(model_dir, "swapped weights did not verify")
        self.broken = None
        self.model_dir = model_dir
        return Loaded(self.engine_id, True, 0.0, time.perf_counter() - started, "fingerprint")

    def _start(self, model_dir: Path, fresh_reason: str | None, adapter: Path | None) -> Loaded:
        from harness.generation.backends import build_backend

        started = time.perf_counter()
        self.backend, self.served_by = build_backend(model_dir, self.config, self._given_llm, adapter)
        self.model_dir = model_dir
        self.engine_id = f"{self.label}-{uuid.uuid4().hex[:8]}"
        return Loaded(self.engine_id, False, time.perf_counter() - started, 0.0, None, fresh_reason,
                      self.served_by or None)

    def _verify(self, model_dir: Path, what: str) -> None:
        try:
            mismatch = compare(self._fingerprint(), checkpoint_fingerprint(model_dir, self._dtype()))
        except Exception as exc:  # noqa: BLE001 - e.g. a layer type the fingerprint cannot read
            mismatch = f"{type(exc).__name__}: {exc}"
        if mismatch:
            raise SwapRefused(f"{what}: {mismatch}")

    def _swap(self, model_dir: Path) -> None:
        from harness.generation.backends import padding_token_id, stop_token_ids

        tokenizer = _tokenizer(model_dir)
        if self.backend.name == "vllm":
            llm = self.backend.llm
            llm.collective_rpc("reload_weights", kwargs={"weights_path": str(model_dir)})
            llm.reset_prefix_cache()  # cached prefixes hold the old weights' keys and values
        else:
            _load_state_dict(self.backend.model, model_dir)
            self.backend.pad_id = padding_token_id(tokenizer)
        self.backend.stop_ids = stop_token_ids(model_dir, tokenizer)

    def _fingerprint(self) -> dict:
        if self.backend.name == "hf":
            return module_fingerprint(self.backend.model, self._dtype(), kernels=False)
        shards = self.backend.llm.collective_rpc(_worker_fingerprint, args=(self._dtype(),))
        if len(shards) != 1:
            raise PrunescopeError("the fingerprint reads one worker's weights; this engine has "
                                  f"{len(shards)} (tensor parallelism)")
        return shards[0]

    def _dtype(self):
        if self.backend.name == "vllm":
            return self.backend.llm.llm_engine.model_config.dtype
        return next(self.backend.model.parameters()).dtype

    def generate(self, prompts: list[list[int]], progress=None):
        return self.backend.generate(prompts, progress)

    @property
    def context_length(self) -> int:
        return self.backend.context_length

    @property
    def backend_name(self) -> str:
        return self.backend.name

    def close(self) -> None:
        """Drop the engine (transformers: frees its GPU memory; vLLM: its process should end)."""
        self.backend = None
        if self.config.backend == "hf":
            import gc

            import torch

            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def _worker_fingerprint(worker, dtype) -> dict:
    """Runs inside a vLLM worker (``collective_rpc``)."""
    return module_fingerprint(worker.model_runner.get_model(), dtype, kernels=True)


def _load_state_dict(model, model_dir: Path) -> None:
    """Copy a checkpoint's tensors into a resident transformers model (same names and shapes)."""
    import torch
    from safetensors.torch import load_file

    state = {}
    for path in sorted(model_dir.glob("*.safetensors")):
        state.update(load_file(str(path)))
    with torch.no_grad():
        result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise PrunescopeError(f"tensors the model does not have: {result.unexpected_keys[:5]}")


def _tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)
