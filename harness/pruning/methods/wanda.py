"""Wanda (Sun et al., 2024): score |W_ij| * ||X_j||_2, compared within each output row."""

from __future__ import annotations

import torch

from harness.pruning.masks import nm_mask, row_mask
from harness.pruning.spec import PruneSpec


class Wanda:
    needs_calibration = True

    def __init__(self, layer: torch.nn.Linear, spec: PruneSpec | None = None):
        self.layer, self.spec = layer, spec
        self.sq_norms = torch.zeros(layer.in_features, dtype=torch.float32, device=layer.weight.device)
        self.nsamples = 0

    def add_batch(self, inp: torch.Tensor) -> None:
        # Mean over samples of each input channel's squared norm over the sample's tokens,
        # as the reference accumulates it; fp32 whatever the model dtype.
        batch = inp.shape[0] if inp.ndim == 3 else 1
        self.sq_norms += inp.reshape(-1, inp.shape[-1]).float().pow(2).sum(dim=0)
        self.nsamples += batch

    def scores(self) -> torch.Tensor:
        if self.nsamples == 0:
            raise RuntimeError("Wanda scores need calibration inputs; none reached this layer")
        return self.layer.weight.data.abs().float() * torch.sqrt(self.sq_norms / self.nsamples)

    def prune(self, sparsity: float) -> None:
        scores = self.scores()
        mask = nm_mask(scores, *self.spec.nm) if self.spec.nm else row_mask(scores, sparsity)
        self.layer.weight.data.masked_fill_(mask, 0)
