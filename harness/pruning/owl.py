"""OWL (Yin et al., 2024): blocks with more outlier activations keep more weights.

The outlier ratio of a block is the share of its Wanda scores above ``M`` times their mean
(over all Linears of the block together). Ratios are min-max scaled to a spread of 2*lam as
in the reference code, centred so the parameter-weighted mean sparsity equals the target,
and shrunk (keeping the mean) where a block would leave target +/- lam.
"""

from __future__ import annotations

import torch

from harness.pruning.spec import OWLSpec


def outlier_ratio(scores: list[torch.Tensor], M: float) -> float:
    flat = torch.cat([s.flatten() for s in scores])
    return float((flat > M * flat.mean()).float().mean())


def allocate(ratios: list[float], params: list[int], target: float, owl: OWLSpec) -> list[float]:
    """Per-block sparsities: lower where the outlier ratio is higher (PruneSpec has checked
    that target +/- lam lies in [0, 1))."""
    r = torch.tensor(ratios, dtype=torch.float64)
    weights = torch.tensor(params, dtype=torch.float64) / sum(params)
    spread = r.max() - r.min()
    if spread == 0:
        return [target] * len(ratios)
    keep = (r - r.min()) / spread * 2 * owl.lam
    keep -= (keep * weights).sum()  # parameter-weighted mean 0
    widest = keep.abs().max()
    if widest > owl.lam:
        keep *= owl.lam / widest
    return [float(target - k) for k in keep]
