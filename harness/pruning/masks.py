"""Which weights to zero, given a score per weight (lower score = pruned first).

All selections are vectorized over rows and groups (no Python loop over columns); the tie
rules follow the published code (docs/pruning-reference.md): per row a stable ascending sort, per
matrix a ``<=`` threshold (found with kthvalue, linear time, instead of a full sort).
"""

from __future__ import annotations

import torch


def row_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Zero the ``int(cols * sparsity)`` lowest scores of every row (ties: lower column first)."""
    mask = torch.zeros_like(scores, dtype=torch.bool)
    k = int(scores.shape[1] * sparsity)
    if k:
        order = torch.sort(scores, dim=1, stable=True).indices[:, :k]
        mask.scatter_(1, order, True)
    return mask


def threshold_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Zero every score <= the one at index ``int(numel * sparsity)`` of the sorted scores:
    one more than ``int(numel * sparsity)`` weights, plus exact ties (magnitude / SparseGPT).
    Sparsity 0 prunes nothing (the reference would still zero the smallest weight)."""
    if sparsity == 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    threshold = torch.kthvalue(scores.flatten(), int(scores.numel() * sparsity) + 1).values
    return scores <= threshold


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """In every group of ``m`` consecutive columns, zero the ``n`` lowest scores of each row."""
    rows, cols = scores.shape
    groups = scores.reshape(rows, cols // m, m)
    lowest = torch.topk(groups, n, dim=2, largest=False).indices
    mask = torch.zeros_like(groups, dtype=torch.bool)
    mask.scatter_(2, lowest, True)
    return mask.reshape(rows, cols)


def nm_satisfied(weight: torch.Tensor, n: int, m: int) -> bool:
    """True if every group of ``m`` consecutive input weights holds at least ``n`` zeros."""
    rows, cols = weight.shape
    if cols % m:
        return False
    zeros = (weight.reshape(rows, cols // m, m) == 0).sum(dim=2)
    return bool((zeros >= n).all())
