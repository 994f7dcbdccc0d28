"""Run one cell in a fresh Python process: ``python -m harness.generation.worker REQUEST.json``.

vLLM does not reliably release GPU memory when an engine is dropped in-process; a process
per cell does. The request file holds ``generate_cell``'s arguments; on failure the worker
writes ``REQUEST.json.error.json`` (kind, message, traceback) and exits 1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Sequence
from pathlib import Path

from harness import atomic
from harness.config import GenerationConfig
from harness.errors import PrunescopeError
from harness.records import GenerationRecord, ModelIdentity

TRACEBACK_TAIL = 3000  # characters of the child's traceback carried into the parent's error


class GenerationWorkerError(RuntimeError):
    """The worker process failed for a reason other than bad input (a bug or a crash)."""


def generate_cell_in_subprocess(model_dir: str | Path, documents: Sequence[tuple[str, str]],
                                prompt_id: str, config: GenerationConfig, identity: ModelIdentity,
                                out: str | Path, *, chat_family: str = "auto",
                                adapter: str | Path | None = None) -> list[GenerationRecord]:
    """``generate_cell`` in its own process; the child's bad-input errors are raised here as a
    ``PrunescopeError`` with its message, anything else as ``GenerationWorkerError``."""
    from harness.records import read_generations

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    request = {"model_dir": str(model_dir), "documents": [list(d) for d in documents],
               "prompt_id": prompt_id, "config": config.model_dump(mode="json"),
               "identity": identity.model_dump(mode="json"), "out": str(out), "chat_family": chat_family,
               "adapter": None if adapter is None else str(adapter)}
    with tempfile.TemporaryDirectory(prefix=".generate-", dir=out.parent) as folder:
        request_path = Path(folder) / "request.json"
        atomic.write_json(request_path, request)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            filter(None, [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH")])))
        child = subprocess.run([sys.executable, "-m", "harness.generation.worker", str(request_path)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if child.returncode != 0:
            _raise_child_error(_error_path(request_path), child)
    return read_generations(out)


def _raise_child_error(error_path: Path, child: subprocess.CompletedProcess):
    if error_path.exists():
        error = json.loads(error_path.read_text(encoding="utf-8"))
        if error["kind"] == "input":
            raise PrunescopeError(error["message"])
        detail = error["traceback"]
    else:  # killed before it could report (out of memory, a signal)
        detail = child.stdout
    raise GenerationWorkerError(f"generation worker exited with status {child.returncode}:\n"
                                f"{detail[-TRACEBACK_TAIL:]}")


def _error_path(request_path: Path) -> Path:
    return request_path.with_name(request_path.name + ".error.json")


def main(request_path: str) -> int:
    from harness.generation.cell import generate_cell

    path = Path(request_path)
    try:
        request = json.loads(path.read_text(encoding="utf-8"))
        generate_cell(request["model_dir"], [tuple(d) for d in request["documents"]], request["prompt_id"],
                      GenerationConfig.model_validate(request["config"]),
                      ModelIdentity.model_validate(request["identity"]), request["out"],
                      chat_family=request["chat_family"], adapter=request["adapter"])
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        kind = "input" if isinstance(exc, PrunescopeError) else "bug"
        atomic.write_json(_error_path(path), {"kind": kind, "message": str(exc),
                                              "traceback": traceback.format_exc()})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
