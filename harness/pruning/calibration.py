"""Calibration samples: seeded windows of ``seqlen`` tokens, with their provenance.

Sources: ``task:<name>`` (that task's documents, read from the study's data for it when the
study gives one: ``task`` below), a text file, a JSONL file (one record per
line with a ``text`` or ``document`` field), or pre-tokenized ids [nsamples, seqlen] in a
.pt (loaded with weights_only), .npy or .safetensors file, so a study can reuse another
tool's exact samples. Documents are joined by a blank line into one token stream and windows
start at seeded random offsets (with replacement, as the reference C4 loader draws them).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from harness.errors import PrunescopeError
from harness.jsonl import json_objects
from harness.pruning.spec import CalibrationSpec

TOKEN_FILES = (".pt", ".npy", ".safetensors")


class CalibrationError(PrunescopeError):
    """Calibration data that is missing, malformed or too short."""


def load_calibration(spec: CalibrationSpec, tokenizer, task=None) -> tuple[torch.Tensor, dict]:
    """Return (ids [nsamples, seqlen] int64, provenance: source, data hash, indices, seed).

    ``task`` (a ``harness.runner.plan.CalibrationTask``: data, fields, split) says where a
    ``task:<name>`` source reads its documents; None: the task's own data."""
    if spec.source.startswith("task:"):
        text, data_hash = _task_text(spec.source[len("task:"):], task)
        return _windows(text, data_hash, spec, tokenizer)
    path = Path(spec.source)
    if not path.is_file():
        raise CalibrationError(f"{path}: calibration file not found (source must be 'task:<name>' or a file)")
    data_hash = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    if path.suffix in TOKEN_FILES:
        return _token_file(path, data_hash, spec)
    text = _jsonl_text(path) if path.suffix == ".jsonl" else path.read_text(encoding="utf-8")
    return _windows(text, data_hash, spec, tokenizer)


def _task_text(name: str, task=None) -> tuple[str, str]:
    from tasks import load_task  # optional at import time: the GPU box may lack tasks' deps

    where = {} if task is None else {"data": task.data, "fields": task.fields, "split": task.split}
    data = load_task(name, **where)
    return "\n\n".join(r.document for r in data.records), data.content_hash


def _jsonl_text(path: Path) -> str:
    documents = []
    for number, record in json_objects(path, CalibrationError):
        text = record.get("text", record.get("document"))
        if not isinstance(text, str):
            raise CalibrationError(f"{path}: line {number}: field 'text' (or 'document') missing or not a string")
        documents.append(text)
    return "\n\n".join(documents)


def _windows(text: str, data_hash: str, spec: CalibrationSpec, tokenizer) -> tuple[torch.Tensor, dict]:
    stream = torch.tensor(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"], dtype=torch.int64)
    if stream.numel() < spec.seqlen:
        raise CalibrationError(
            f"{spec.source}: calibration text too short: {stream.numel()} tokens, need at least "
            f"calibration.seqlen = {spec.seqlen}"
        )
    generator = torch.Generator().manual_seed(spec.seed)
    starts = torch.randint(0, stream.numel() - spec.seqlen + 1, (spec.nsamples,), generator=generator)
    ids = torch.stack([stream[s : s + spec.seqlen] for s in starts.tolist()])
    provenance = {"source": spec.source, "data_hash": data_hash, "tokens": stream.numel(),
                  "sample_starts": starts.tolist()}
    return ids, _provenance(provenance, spec)


def _token_file(path: Path, data_hash: str, spec: CalibrationSpec) -> tuple[torch.Tensor, dict]:
    ids = _read_tokens(path)
    if ids.ndim != 2 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise CalibrationError(f"{path}: token ids must be an integer array [nsamples, seqlen] (got {ids.dtype} {tuple(ids.shape)})")
    rows, cols = ids.shape
    if rows < spec.nsamples or cols < spec.seqlen:
        raise CalibrationError(
            f"{path}: holds {rows} samples x {cols} tokens; calibration asks for "
            f"nsamples = {spec.nsamples} x seqlen = {spec.seqlen}"
        )
    ids = ids[: spec.nsamples, : spec.seqlen].to(torch.int64).contiguous()
    provenance = {"source": str(path), "data_hash": data_hash, "sample_rows": list(range(spec.nsamples))}
    return ids, _provenance(provenance, spec)


def _read_tokens(path: Path) -> torch.Tensor:
    try:
        if path.suffix == ".pt":
            data = torch.load(path, weights_only=True, map_location="cpu")
        elif path.suffix == ".npy":
            import numpy as np

            data = torch.from_numpy(np.load(path, allow_pickle=False))
        else:
            from safetensors.torch import load_file

            data = load_file(path)
    except Exception as exc:  # any reader failure is a bad file, reported with its path
        raise CalibrationError(f"{path}: cannot read token ids ({type(exc).__name__}: {exc})") from None
    if isinstance(data, dict):
        if len(data) != 1 and "input_ids" not in data:
            raise CalibrationError(f"{path}: holds tensors {sorted(data)}; name the ids 'input_ids' or store one tensor")
        data = data["input_ids"] if "input_ids" in data else next(iter(data.values()))
    if not isinstance(data, torch.Tensor):
        raise CalibrationError(f"{path}: expected a tensor of token ids (got {type(data).__name__})")
    return data


def _provenance(fields: dict, spec: CalibrationSpec) -> dict:
    return {**fields, "nsamples": spec.nsamples, "seqlen": spec.seqlen, "seed": spec.seed}
