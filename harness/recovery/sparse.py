"""The pruned zeros of a checkpoint: found before training, held at zero during it, counted after.

The pruned weights are the zeros of the decoder blocks' Linear weights, the matrices the
pruning core prunes (a dense weight that happens to be exactly 0 is held too). Full fine-tuning
masks their gradients with a hook and re-zeroes them after every optimizer step, so neither
the gradient nor the optimizer (weight decay, momentum) can move them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from harness.pruning.driver import find_blocks, linear_layers
from harness.pruning.report import measure_sparsity


@dataclass
class PrunedWeight:
    name: str
    param: nn.Parameter  # the same object after peft wraps its layer
    mask: torch.Tensor  # True where the weight is pruned (zero)


def pruned_weights(model: nn.Module) -> list[PrunedWeight]:
    """Every decoder-block Linear weight with its zero mask, taken now."""
    prefix, blocks = find_blocks(model)
    return [PrunedWeight(f"{prefix}.{index}.{name}.weight", layer.weight, layer.weight.detach() == 0)
            for index, block in enumerate(blocks) for name, layer in linear_layers(block).items()]


def hold_zeros(weights: list[PrunedWeight]) -> None:
    """Make the zeros stay zero under training: gradients on them are masked to 0."""
    for weight in weights:
        weight.param.register_hook(lambda grad, mask=weight.mask: grad.masked_fill(mask.to(grad.device), 0))


@torch.no_grad()
def rezero(weights: list[PrunedWeight]) -> None:
    """Re-apply the masks after an optimizer step (its update of a masked weight is dropped)."""
    for weight in weights:
        weight.param.masked_fill_(weight.mask.to(weight.param.device), 0)


def zero_counts(weights: list[PrunedWeight]) -> dict:
    """``pruned``: weights pruned (masked); ``still_zero``: how many of them are zero now."""
    pruned = sum(int(w.mask.sum()) for w in weights)
    still_zero = sum(int((w.param.detach()[w.mask.to(w.param.device)] == 0).sum()) for w in weights)
    return {"pruned": pruned, "still_zero": still_zero}


def block_sparsity(model: nn.Module, nm: tuple[int, int] | None) -> dict:
    """The measured sparsity of the decoder blocks' Linears (as ``sparsity.json`` states it)."""
    prefix, blocks = find_blocks(model)
    return measure_sparsity(prefix, [linear_layers(b) for b in blocks], nm)
