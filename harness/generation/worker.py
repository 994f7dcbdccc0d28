"""An engine serving checkpoints in turn (``serve``), here or in a process of its own:
``python -m harness.generation.worker REQUEST.json``.

vLLM does not reliably release memory when an engine is dropped in-process, nor start a
second engine in a process whose first was dropped; a process per engine does both. The
request file holds ``serve``'s arguments; the worker appends ``serve``'s events to
``REQUEST.json.events.jsonl`` as they happen (the parent relays them while it waits) and, if
it fails, an ``error`` event (kind, message, traceback) before exiting 1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from harness import atomic
from harness.config import GenerationConfig
from harness.errors import PrunescopeError
from harness.generation.cell import CellRequest, CheckpointRequest, generate_checkpoint
from harness.generation.engine import EngineSession, SwapRefused
from harness.records import ModelIdentity

TRACEBACK_TAIL = 3000  # characters of the child's output carried into the parent's error
_POLL_S = 0.2


class GenerationWorkerError(RuntimeError):
    """The worker process failed for a reason other than bad input (a bug or a crash)."""


def serve_in_subprocess(group: str, requests: list[CheckpointRequest], config: GenerationConfig,
                        emit, reason: str | None = None) -> tuple[int, str] | None:
    """``serve.serve`` in a fresh process, relaying its events to ``emit`` as they arrive.
    The child's input errors are raised here as a ``PrunescopeError`` with its message,
    anything else as ``GenerationWorkerError``."""
    folder = Path(requests[0].cells[0].out).parent
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".engine-", dir=folder) as tmp:
        request_path = Path(tmp) / "request.json"
        atomic.write_json(request_path, {"group": group, "config": config.model_dump(mode="json"),
                                         "reason": reason, "requests": [_encode(r) for r in requests]})
        events_path = _events_path(request_path)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            filter(None, [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH")])))
        env.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine core in this worker: one process
        with open(Path(tmp) / "output.log", "w+") as output:
            child = subprocess.Popen([sys.executable, "-m", "harness.generation.worker", str(request_path)],
                                     env=env, stdout=output, stderr=subprocess.STDOUT)
            relay = _Relay(events_path)
            try:
                while child.poll() is None:
                    relay.forward(emit)
                    time.sleep(_POLL_S)
            finally:
                if child.poll() is None:  # the parent was interrupted: do not leave an engine behind
                    child.kill()
                    child.wait()
            result = relay.forward(emit)
            if child.returncode != 0 or relay.error:
                output.seek(0)
                _raise_child_error(relay.error, child.returncode, output.read())
    return result


class _Relay:
    """Reads the events file from where it stopped; remembers a refusal and an error."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.refused: tuple[int, str] | None = None
        self.error: dict | None = None

    def forward(self, emit) -> tuple[int, str] | None:
        if self.path.exists():
            with open(self.path, encoding="utf-8") as fh:
                fh.seek(self.offset)
                for line in iter(fh.readline, ""):
                    if not line.endswith("\n"):  # a line still being written
                        break
                    self.offset += len(line.encode("utf-8"))
                    self._handle(json.loads(line), emit)
        return self.refused

    def _handle(self, event: dict, emit) -> None:
        if event["type"] == "refused":
            self.refused = (event["index"], event["reason"])
        elif event["type"] == "error":
            self.error = event
        else:
            emit(event)


def _raise_child_error(error: dict | None, returncode: int, output: str):
    if error and error["kind"] == "input":
        raise PrunescopeError(error["message"])
    detail = error["traceback"] if error else output  # no error event: killed (memory, a signal)
    exc = GenerationWorkerError(f"generation worker exited with status {returncode}: "
                                f"{error['message'] if error else 'no error report'}")
    exc.child_traceback = detail[-TRACEBACK_TAIL:]
    raise exc


def _events_path(request_path: Path) -> Path:
    return request_path.with_name(request_path.name + ".events.jsonl")


def _encode(request: CheckpointRequest) -> dict:
    return {"key": request.key, "model_dir": str(request.model_dir),
            "identity": request.identity.model_dump(mode="json"),
            "adapter": None if request.adapter is None else str(request.adapter),
            "cells": [{"key": c.key, "documents": [list(d) for d in c.documents], "prompt_id": c.prompt_id,
                       "out": str(c.out), "chat_family": c.chat_family} for c in request.cells]}


def _decode(raw: dict) -> CheckpointRequest:
    cells = tuple(CellRequest(c["key"], tuple(tuple(d) for d in c["documents"]), c["prompt_id"],
                              Path(c["out"]), c["chat_family"]) for c in raw["cells"])
    return CheckpointRequest(raw["key"], Path(raw["model_dir"]), ModelIdentity.model_validate(raw["identity"]),
                             cells, None if raw["adapter"] is None else Path(raw["adapter"]))


def serve(group: str, requests: list[CheckpointRequest], config: GenerationConfig, emit,
          reason: str | None = None) -> tuple[int, str] | None:
    """In this process: one engine for ``requests``, started on the first and swapped to the
    others. Stops at a refused swap and returns (its index, why); None when all were served."""
    session = EngineSession(config, label=group)
    try:
        for index, request in enumerate(requests):
            try:
                loaded = session.load(request.model_dir, reason, request.adapter)
            except SwapRefused as exc:
                return index, exc.reason
            if not loaded.swapped:
                emit({"type": "engine", "engine": loaded.engine, "group": group,
                      "started_from": request.key, "engine_start_s": round(loaded.engine_start_s, 3),
                      "verified": loaded.verified})
            result = generate_checkpoint(session, loaded, request, config,
                                         progress=lambda n: emit({"type": "progress", "n": n}),
                                         batched=lambda size: emit({"type": "batch", "prompts": size}))
            share = (loaded.engine_start_s + loaded.swap_s + result.generate_s) / len(request.cells)
            details = {**loaded.record(), "generate_s": round(result.generate_s, 3),
                       "batch_prompts": result.prompts}
            for cell in request.cells:
                outcome = result.cells[cell.key]
                if isinstance(outcome, Exception):
                    emit({"type": "cell", "key": cell.key, "status": "failed", "seconds": 0.0,
                          "details": {"error": f"{type(outcome).__name__}: {outcome}", "input": True}})
                else:
                    emit({"type": "cell", "key": cell.key, "status": "done", "seconds": round(share, 3),
                          "details": details})
    finally:
        session.close()
    return None


def main(request_path: str) -> int:
    path = Path(request_path)
    with open(_events_path(path), "a", encoding="utf-8") as events:
        def emit(event: dict) -> None:
            events.write(json.dumps(event) + "\n")
            events.flush()

        try:
            request = json.loads(path.read_text(encoding="utf-8"))
            refused = serve(request["group"], [_decode(r) for r in request["requests"]],
                            GenerationConfig.model_validate(request["config"]), emit, request["reason"])
            if refused is not None:
                emit({"type": "refused", "index": refused[0], "reason": refused[1]})
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
            kind = "input" if isinstance(exc, PrunescopeError) else "bug"
            emit({"type": "error", "kind": kind, "message": str(exc), "traceback": traceback.format_exc()})
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
