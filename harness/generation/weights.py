"""What a checkpoint's weights are, read without loading a model: tensor shapes (which
checkpoints can share an engine) and a fingerprint (which weights an engine really holds).

The fingerprint reads a few fixed columns of every weight matrix (for vectors such as norm
gains and biases, all of it) and sums, per transformer block, their values, squares, absolute
values and non-zero count. A running vLLM engine is read through its layers: a layer's output
on a one-hot input is exactly one column of the weight its kernel uses, even when the engine
repacked or emptied the parameter; products with 1 and sums with 0 round nowhere, so the
engine's numbers equal the checkpoint's (cast to the engine's dtype) up to summation order.
Fusing checkpoint tensors into one layer (q/k/v, gate/up) or reordering rows changes nothing;
a block that kept stale weights after a swap differs, in its non-zero count at least when
the checkpoints were pruned differently.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

_BLOCK = re.compile(r"\.(\d+)\.")  # the first number in a name: the block (layer) index
_COLUMNS = 4  # columns read per weight matrix
_RELATIVE = 1e-9  # summation-order tolerance, relative to the sum of absolute values


def shape_signature(model_dir: str | Path) -> str:
    """A short hash of the folder's tensor names and shapes (``harness.models.weight_shapes``):
    checkpoints with equal signatures can be swapped into one engine."""
    from harness.models import weight_shapes

    shapes = {name: list(shape) for name, shape in weight_shapes(model_dir).items()}
    return hashlib.sha256(json.dumps(shapes, sort_keys=True).encode()).hexdigest()[:16]


def columns(k: int) -> list[int]:
    """The fixed columns read from a matrix with ``k`` columns (the same in every process)."""
    import torch

    generator = torch.Generator().manual_seed(k)
    return sorted(torch.randperm(k, generator=generator)[:_COLUMNS].tolist())


def block_of(name: str) -> str:
    match = _BLOCK.search(name)
    return f"block {match.group(1)}" if match else "outside blocks"


class Fingerprint:
    """Per block: non-zero count, sum, sum of squares and sum of absolute values of the values
    read so far."""

    def __init__(self, dtype):
        self.dtype = dtype
        self.blocks: dict[str, list[float]] = {}

    def add(self, name: str, values) -> None:
        values = values.detach().to("cpu").double()
        totals = self.blocks.setdefault(block_of(name), [0, 0.0, 0.0, 0.0])
        for i, value in enumerate((int(values.count_nonzero()), float(values.sum()),
                                   float(values.square().sum()), float(values.abs().sum()))):
            totals[i] += value

    def add_tensor(self, name: str, tensor) -> None:
        """A weight held as a plain tensor: its fixed columns (a vector: all of it)."""
        tensor = tensor.detach().to("cpu", self.dtype)
        if tensor.ndim > 1:
            tensor = tensor.reshape(-1, tensor.shape[-1])[:, columns(tensor.shape[-1])]
        self.add(name, tensor)

    def as_dict(self) -> dict[str, list[float]]:
        return dict(sorted(self.blocks.items()))


def checkpoint_fingerprint(model_dir: str | Path, dtype) -> dict[str, list[float]]:
    """The fingerprint of a checkpoint folder's weights as an engine of ``dtype`` holds them."""
    from safetensors import safe_open

    fingerprint = Fingerprint(dtype)
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(path), "pt") as fh:
            for name in fh.keys():
                fingerprint.add_tensor(name, fh.get_tensor(name))
    return fingerprint.as_dict()


def module_fingerprint(model, dtype, *, kernels: bool) -> dict[str, list[float]]:
    """The fingerprint of a loaded model's weights. ``kernels``: read each vLLM layer that has
    a ``quant_method`` through its kernel (its weight may be repacked or emptied); every other
    parameter, and all of them otherwise (transformers), is read as a tensor."""
    import torch

    fingerprint = Fingerprint(dtype)
    seen: set[int] = set()
    if kernels:
        with torch.inference_mode():
            for name, module in model.named_modules():
                weight = getattr(module, "weight", None)
                method = getattr(module, "quant_method", None)
                if not isinstance(weight, torch.Tensor) or not hasattr(method, "apply") or id(weight) in seen:
                    continue
                seen.add(id(weight))
                k = int(getattr(module, "input_size_per_partition", 0) or weight.shape[-1])
                one_hot = torch.zeros(_COLUMNS, k, dtype=dtype, device=weight.device)
                for row, column in enumerate(columns(k)):
                    one_hot[row, column] = 1
                fingerprint.add(name + ".", method.apply(module, one_hot[:len(columns(k))]))
    for name, param in model.named_parameters():
        if id(param) not in seen:
            seen.add(id(param))
            fingerprint.add_tensor(name, param)
    return fingerprint.as_dict()


def compare(engine: dict[str, list[float]], checkpoint: dict[str, list[float]]) -> str | None:
    """None when the engine holds the checkpoint's weights, else where they differ."""
    if set(engine) != set(checkpoint):
        return f"blocks differ: engine {sorted(engine)}, checkpoint {sorted(checkpoint)}"
    wrong = []
    for block, (nonzero, *sums) in checkpoint.items():
        tolerance = _RELATIVE * sums[2] + 1e-12
        got = engine[block]
        if got[0] != nonzero or any(abs(a - b) > tolerance * (1 + abs(b)) for a, b in zip(got[1:], sums)):
            wrong.append(f"{block} (non-zero values read: engine {got[0]}, checkpoint {nonzero})")
    return f"weights differ from the checkpoint in {', '.join(wrong)}" if wrong else None
