"""Content hashes: cell keys and checkpoint identities.

A cell key is the hash of everything that changes a result; a checkpoint hash covers the
files that define the model (weights, config, tokenizer), so two different local checkpoints
never share a cache entry even under the same name.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import BaseModel

KEY_LENGTH = 16
_CHUNK = 1 << 20
# Files in a checkpoint directory that are reports about it, not part of the model
# (training.json: a built-in trained model's accuracy and training time, which differs from
# machine to machine while the weights are byte-identical).
_NOT_MODEL_FILES = {"sparsity.json", "identity.json", "perplexity.json", "quality.json",
                    "quality-samples.jsonl", "recovery.json", "training.json", "README.md"}


def canonical_json(obj) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal strings."""
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json")
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_key(obj) -> str:
    """A short stable hash of a JSON-able value (dicts compare by content, not order)."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:KEY_LENGTH]


def hash_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def hash_checkpoint(directory: str | Path, cache: dict | None = None) -> str:
    """Hash of a model directory's files (names and contents), excluding reports about it.

    ``cache`` (a dict the caller keeps, e.g. in a run manifest) remembers each folder's file
    names, sizes and modification times with its hash, so an unchanged 140 GB checkpoint is
    read once, not on every rerun."""
    directory = Path(directory)
    files = _model_files(directory)
    signature = [[rel, p.stat().st_size, p.stat().st_mtime_ns] for rel, p in files]
    entry = (cache or {}).get(str(directory.resolve()))
    if entry and entry["files"] == signature:
        return entry["hash"]
    digest = hashlib.sha256()
    for rel, path in files:
        digest.update(rel.encode() + b"\0" + hash_file(path).encode() + b"\n")
    result = digest.hexdigest()[:KEY_LENGTH]
    if cache is not None:
        cache[str(directory.resolve())] = {"files": signature, "hash": result}
    return result


def _model_files(directory: Path) -> list[tuple[str, Path]]:
    files = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        if path.name not in _NOT_MODEL_FILES and not any(part.startswith(".") for part in rel.split("/")):
            files.append((rel, path))
    return files
