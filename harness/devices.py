"""Where model work runs when the user does not say."""

from __future__ import annotations


def resolve_device(device: str | None = "auto") -> str:
    """``"auto"`` or None: the CUDA device when there is one, else the CPU; anything else as given."""
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device
