"""Generate many checkpoints of one model with as few engine starts as the weights allow.

Checkpoints whose tensors have the same names and shapes form an engine group: one engine
starts on the group's first checkpoint and the others are swapped into it (``engine``). When a
swap is refused (the engine refuses, the weights do not verify), the rest of the group falls
back to one engine per checkpoint, never per cell, and each of its generations records why.
``engines="checkpoint"`` or ``"cell"`` asks for a fresh engine per checkpoint or per cell
(for comparisons).

With vLLM every engine lives in a worker process of its own (``worker``), so its memory is
released when it is done; transformers engines run in this process. Progress and results
arrive as events (plain dicts):

- ``{"type": "engine", "engine", "group", "started_from", "engine_start_s"}``: an engine start;
- ``{"type": "batch", "prompts"}``: a checkpoint's request batch is about to be generated;
- ``{"type": "progress", "n"}``: ``n`` more requests (a document of a cell each) answered;
- ``{"type": "cell", "key", "status": "done" | "failed", "seconds", "details"}``: a cell's
  generations were written (``details``: ``ENGINE_FIELDS``) or failed (``details``: error).
"""

from __future__ import annotations

import hashlib
import json
import traceback
import typing
from dataclasses import replace

from harness.config import GenerationConfig
from harness.errors import PrunescopeError
from harness.generation.cell import CheckpointRequest
from harness.generation.weights import shape_signature
from harness.generation.worker import serve, serve_in_subprocess

ENGINES = typing.get_args(GenerationConfig.model_fields["engines"].annotation)  # as the config allows
# What each generation records about its engine (in its .meta.json and the run manifest).
ENGINE_FIELDS = ("engine", "swapped", "not_swapped", "engine_start_s", "swap_s", "verified", "generate_s",
                 "batch_prompts")


def engine_group(model: str, config: GenerationConfig, signature: str) -> str:
    """The key of an engine group: model, engine settings and tensor shapes (for a LoRA
    system, its adapter too)."""
    settings = json.dumps([model, config.backend, config.engine.model_dump(mode="json"), config.seed,
                           signature], sort_keys=True)
    return hashlib.sha256(settings.encode()).hexdigest()[:12]


def plan_engines(model: str, requests: list[CheckpointRequest], config: GenerationConfig,
                 engines: str = "model") -> list[tuple[str, list[CheckpointRequest], str | None]]:
    """The engines to start, in order: (group key, the checkpoints it serves, why its first
    checkpoint could not be swapped into an earlier engine of this model, or None)."""
    if engines not in ENGINES:
        raise PrunescopeError(f"generation.engines: {engines!r} is not one of {', '.join(ENGINES)}")
    groups: dict[str, list[CheckpointRequest]] = {}
    for request in requests:
        signature = shape_signature(request.model_dir)
        if request.adapter is not None:  # never swapped: an engine with its adapter
            signature += f"+{request.adapter.name}"
        groups.setdefault(engine_group(model, config, signature), []).append(request)
    planned = []
    for number, (group, members) in enumerate(groups.items()):
        if engines == "model":
            lora = members[0].adapter is not None
            why = "a LoRA system is served by an engine of its own" if lora else \
                "tensor shapes differ from the model's first checkpoint"
            planned.append((group, members, why if number else None))
            continue
        reason = f"one engine per {engines} requested (generation.engines)"
        for request in members:
            cells = [[cell] for cell in request.cells] if engines == "cell" else [list(request.cells)]
            planned += [(group, [replace(request, cells=tuple(c))], reason) for c in cells]
    return planned


def generate_checkpoints(model: str, requests: list[CheckpointRequest], config: GenerationConfig,
                         emit, *, engines: str = "model", isolate: bool | None = None) -> None:
    """Generate every cell of ``requests`` (checkpoints of ``model``), reporting through ``emit``.

    ``isolate`` (default: with vLLM) runs each engine in a worker process of its own."""
    isolate = config.backend == "vllm" if isolate is None else isolate
    for group, members, reason in plan_engines(model, requests, config, engines):
        refused = _run_engine(group, members, config, emit, reason, isolate)
        if refused is None:
            continue
        index, why = refused
        reason = f"swap refused, one engine per checkpoint from here: {why}"
        for request in members[index:]:  # fall back: a fresh engine for each of the rest
            _run_engine(group, [request], config, emit, reason, isolate)


def _run_engine(group: str, requests: list[CheckpointRequest], config: GenerationConfig, emit,
                reason: str | None, isolate: bool) -> tuple[int, str] | None:
    """One engine serving ``requests`` in turn; a refused swap returns (its index, why)."""
    reported: set[str] = set()

    def tracked(event: dict) -> None:
        if event["type"] == "cell":
            reported.add(event["key"])
        emit(event)

    try:
        if isolate:
            return serve_in_subprocess(group, requests, config, tracked, reason)
        return serve(group, requests, config, tracked, reason)
    except Exception as exc:  # noqa: BLE001 - the engine failed: every cell it had left fails
        error = {"error": f"{type(exc).__name__}: {exc}",
                 "traceback": getattr(exc, "child_traceback", None) or traceback.format_exc()}
        for request in requests:
            for cell in request.cells:
                if cell.key not in reported:
                    emit({"type": "cell", "key": cell.key, "status": "failed", "seconds": 0.0,
                          "details": error})
        return None
