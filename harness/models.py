"""Where a study's models come from: a local directory, or a hub id at a pinned revision.

Hub downloads happen only when the study allows them (``allow_downloads: true``) and
``HF_HUB_OFFLINE`` is not set; otherwise the model must already be in the local HF cache.
"""

from __future__ import annotations

import os
from pathlib import Path

from harness.errors import PrunescopeError
from harness.hashing import hash_checkpoint
from harness.records import ModelIdentity


class ModelNotAvailableError(PrunescopeError):
    """A model that is neither on disk nor allowed to be downloaded."""


def downloads_allowed(allow: bool) -> bool:
    return allow and os.environ.get("HF_HUB_OFFLINE", "0") in ("", "0", "false", "False")


def resolve_model_dir(model, allow_downloads: bool = False) -> tuple[Path, str | None]:
    """Local directory of a ``ModelConfig`` and, for hub models, the resolved commit hash."""
    if model.path is not None:
        return Path(model.path), None
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    online = downloads_allowed(allow_downloads)
    try:
        local = snapshot_download(
            model.hub_id, revision=model.revision, local_files_only=not online,
            allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"],
        )
    except LocalEntryNotFoundError:
        raise ModelNotAvailableError(
            f"models[{model.name}]: {model.hub_id}@{model.revision} is not in the local Hugging "
            "Face cache and downloads are off (set allow_downloads: true and unset "
            "HF_HUB_OFFLINE, or give a local path)"
        ) from None
    return Path(local), Path(local).name  # snapshot folders are named by commit hash


def model_identity(name: str, directory: Path, source: str, revision: str | None = None,
                   hash_cache: dict | None = None) -> ModelIdentity:
    """Identity of a checkpoint folder: name, where it came from, and a hash of its files
    (``hash_cache``: see ``harness.hashing.hash_checkpoint``)."""
    return ModelIdentity(name=name, source=source, revision=revision,
                         checkpoint_hash=hash_checkpoint(directory, hash_cache))


def weight_shapes(directory: str | Path) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in a checkpoint's safetensors files (headers only). Two
    checkpoints can share an engine that swaps weights in place only when these are equal; a
    structured-pruned checkpoint has smaller or fewer tensors than its dense model."""
    from safetensors import safe_open

    shapes = {}
    for path in sorted(Path(directory).glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as fh:
            shapes.update({name: tuple(fh.get_slice(name).get_shape()) for name in fh.keys()})
    return shapes
