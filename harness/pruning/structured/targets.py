"""From a target (share of prunable parameters, or an explicit shape) to kept-unit counts, and
choosing which units to drop given their importance."""

from __future__ import annotations

import math

import torch

from harness.pruning.structured.spec import StructuredSpec, StructuredSpecError
from harness.pruning.structured.units import UnitLayout


def unit_count(layout: UnitLayout, kind: str) -> int:
    return layout.attn_units if kind == "attn" else layout.ffn_units


def unit_params(layout: UnitLayout, kind: str) -> int:
    return layout.attn_unit_params if kind == "attn" else layout.ffn_unit_params


def uniform_targets(layout: UnitLayout, sparsity: float, spec: StructuredSpec) -> dict[str, int]:
    """Kept units per block for each kind, the same in every block.

    By share: attention and FFN lose the same share of their units (attention times
    ``attn_ratio``), then the FFN count is set so the pruned share of prunable parameters is
    as close to ``sparsity`` as whole units allow (at least one unit of each kind stays)."""
    kinds = [k for k in layout.kinds() if k in spec.units]
    if not kinds:
        raise StructuredSpecError(f"units {list(spec.units)}: the {layout.family} model has none of them "
                                  f"(it has {list(layout.kinds())})")
    keep = {k: unit_count(layout, k) for k in layout.kinds()}
    shape = spec.target_shape
    if shape is not None:
        if shape.blocks not in (None, layout.num_blocks):
            raise StructuredSpecError(f"target_shape.blocks: {spec.units} units keep every block; "
                                      f"use method block-influence to remove blocks")
        for kind, wanted in (("attn", shape.attn_units), ("ffn", shape.ffn_units)):
            if wanted is None:
                continue
            if kind not in kinds or wanted > keep[kind]:
                have = keep[kind] if kind in kinds else 0
                raise StructuredSpecError(f"target_shape.{kind}_units={wanted}: the model has {have} prunable "
                                          f"{kind} units per block (units: {list(spec.units)})")
            keep[kind] = wanted
        return keep
    removable = sum(unit_count(layout, k) * unit_params(layout, k) for k in kinds)
    share = min(1.0, sparsity * layout.block_params / removable)
    after = (1 - sparsity) * layout.block_params - layout.fixed_block_params
    if "attn" in kinds:
        keep["attn"] = _clamp(round(layout.attn_units * (1 - min(1.0, share * spec.attn_ratio))), layout.attn_units)
    fill = "ffn" if "ffn" in kinds else "attn"
    other = sum(keep[k] * unit_params(layout, k) for k in layout.kinds() if k != fill)
    keep[fill] = _clamp(round((after - other) / unit_params(layout, fill)), unit_count(layout, fill))
    return keep


def blocks_to_keep(layout: UnitLayout, sparsity: float, spec: StructuredSpec) -> int:
    """Blocks kept by whole-block removal: the target shape's, else the nearest whole count to
    the parameter share (at least one)."""
    shape = spec.target_shape
    if shape is not None:
        if shape.attn_units is not None or shape.ffn_units is not None:
            raise StructuredSpecError("target_shape: block-influence removes whole blocks; give only 'blocks'")
        if shape.blocks > layout.num_blocks:
            raise StructuredSpecError(f"target_shape.blocks={shape.blocks}: the model has {layout.num_blocks}")
        return shape.blocks
    return max(1, layout.num_blocks - round(sparsity * layout.num_blocks))


def drop_lowest(importance: torch.Tensor, alive: torch.Tensor, count: int) -> torch.Tensor:
    """Per block (row), the ``count`` alive units of lowest importance (ties: lower index)."""
    masked = torch.where(alive, importance.double(), math.inf)
    order = torch.sort(masked, dim=1, stable=True).indices[:, :count]
    dropped = torch.zeros_like(alive)
    dropped.scatter_(1, order, True)
    return dropped & alive


def drop_by_budget(importance: dict, alive: dict, layout: UnitLayout, budget: int) -> dict:
    """Across blocks and kinds, the alive units of lowest importance per parameter, until their
    parameters reach ``budget``; every block keeps at least one unit of each kind."""
    entries = []
    for kind, scores in importance.items():
        per_param = scores.double() / unit_params(layout, kind)
        for block, unit in alive[kind].nonzero().tolist():
            entries.append((per_param[block, unit].item(), kind, block, unit))
    entries.sort(key=lambda e: (e[0], e[1], e[2], e[3]))
    dropped = {k: torch.zeros_like(a) for k, a in alive.items()}
    left = {k: a.sum(1).tolist() for k, a in alive.items()}
    spent = 0
    for _, kind, block, unit in entries:
        if spent >= budget:
            break
        if left[kind][block] > 1:
            dropped[kind][block, unit] = True
            left[kind][block] -= 1
            spent += unit_params(layout, kind)
    return dropped


def _clamp(value: int, high: int) -> int:
    return max(1, min(high, value))
