"""Magnitude pruning: score |W|; one threshold per matrix (default) or per output row."""

from __future__ import annotations

import torch

from harness.pruning.masks import nm_mask, row_mask, threshold_mask
from harness.pruning.spec import PruneSpec


class Magnitude:
    needs_calibration = False

    def __init__(self, layer: torch.nn.Linear, spec: PruneSpec):
        self.layer, self.spec = layer, spec

    def add_batch(self, inp: torch.Tensor) -> None:
        """Magnitude ignores activations."""

    def prune(self, sparsity: float) -> None:
        weight = self.layer.weight.data
        scores = weight.abs().float()
        if self.spec.nm:
            mask = nm_mask(scores, *self.spec.nm)
        elif self.spec.magnitude_scope == "row":
            mask = row_mask(scores, sparsity)
        else:
            mask = threshold_mask(scores, sparsity)
        weight.masked_fill_(mask, 0)
