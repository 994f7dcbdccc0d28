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
# Files in a checkpoint directory that are reports about it, not part of the model.
_NOT_MODEL_FILES = {"sparsity.json", "identity.json", "perplexity.json", "README.md"}


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


def hash_checkpoint(directory: str | Path) -> str:
    """Hash of a model directory's files (names and contents), excluding reports about it."""
    directory = Path(directory)
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        if path.name in _NOT_MODEL_FILES or any(part.startswith(".") for part in rel.split("/")):
            continue
        digest.update(rel.encode() + b"\0" + hash_file(path).encode() + b"\n")
    return digest.hexdigest()[:KEY_LENGTH]
