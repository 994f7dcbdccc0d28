"""Bonsai (Dery et al., 2024): unit importance from forward passes only.

Per round, until the target: a prior (activation magnitudes, Wanda or magnitude scores, or
uniform) orders each block's alive units; the strongest are kept fixed, the rest are
candidates. ``samples / 2`` random masks each drop half of every block's candidates, drawn
with probability growing as the prior falls; each mask's complement drops the other half.
Every sub-model's calibration loss is measured (one forward pass over the calibration set),
a ridge regression of -loss on which candidates were kept estimates each candidate's
importance, and the least important units go (``prune_frac`` of a block's units per round;
fixed units are never dropped in that round). Seeded; no gradients anywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from harness.pruning.structured.spec import StructuredSpec
from harness.pruning.structured.stats import calibration_loss, unit_scores
from harness.pruning.structured.targets import drop_by_budget, drop_lowest, unit_count, unit_params
from harness.pruning.structured.units import UnitLayout, UnitMask

_PASS_PRIORS = ("activation", "wanda")  # priors measured by a forward pass


@dataclass
class BonsaiTrace:
    """What Bonsai spent and did: rounds, sub-models, forward passes over the calibration set."""

    rounds: int = 0
    submodels: int = 0
    forward_passes: int = 0
    history: list[dict] = field(default_factory=list)


def bonsai(model: nn.Module, layout: UnitLayout, ids: torch.Tensor, spec: StructuredSpec, *,
           keep: dict[str, int] | None = None, budget: int | None = None) -> tuple[UnitMask, BonsaiTrace]:
    """Prune to ``keep`` (kept units per block per kind, uniform) or, with allocation
    "global", until ``budget`` prunable parameters are removed. Returns the mask and the trace."""
    generator = torch.Generator().manual_seed(spec.seed)
    kinds = [k for k in layout.kinds() if k in spec.units]
    alive = {k: torch.ones(layout.num_blocks, unit_count(layout, k), dtype=torch.bool) for k in layout.kinds()}
    trace = BonsaiTrace()
    while True:
        step = _round_step(layout, spec, kinds, alive, keep, budget)
        if step is None:
            break
        factors = {k: a.float() for k, a in alive.items()}
        prior = unit_scores(model, layout, ids, spec.prior, spec.batch_size, keep=factors)
        trace.forward_passes += spec.prior in _PASS_PRIORS
        active = [k for k in kinds if step[k]]  # kinds that lose units this round
        candidates = {k: alive[k] & ~_fixed(prior[k], alive[k], spec, step[k]) for k in active}
        xs, losses = _sample_submodels(model, ids, spec, alive, candidates, prior, generator)
        trace.forward_passes += len(losses)
        trace.submodels += len(losses)
        beta = _ridge(xs, -torch.tensor(losses, dtype=torch.float64), spec.ridge)
        importance = _scatter(beta, candidates)
        if spec.allocation == "uniform":
            dropped = {k: drop_lowest(importance[k], alive[k], step[k]) for k in active}
        else:
            dropped = drop_by_budget(importance, {k: alive[k] for k in active}, layout, step["params"])
        if not any(d.any() for d in dropped.values()):
            break  # (global allocation) nothing left that may go
        for k in active:
            alive[k] &= ~dropped[k]
        trace.rounds += 1
        trace.history.append({"round": trace.rounds, "dropped": {k: int(d.sum()) for k, d in dropped.items()},
                              "candidates": {k: int(c.sum()) for k, c in candidates.items()},
                              "loss_min": min(losses), "loss_max": max(losses)})
    empty = [()] * layout.num_blocks
    mask = UnitMask.from_bools(alive["attn"] if "attn" in alive else empty, alive["ffn"],
                               [True] * layout.num_blocks)
    return mask, trace


def _round_step(layout, spec, kinds, alive, keep, budget) -> dict | None:
    """This round's removals: per kind, units per block (uniform), or a parameter budget
    (global); None when the target is reached."""
    if spec.allocation == "global":
        removed = sum(int((~alive[k]).sum()) * unit_params(layout, k) for k in kinds)
        left = budget - removed
        if left <= 0 or all(int(alive[k].sum(1).min()) <= 1 for k in kinds):
            return None
        per_round = math.ceil(spec.prune_frac * layout.prunable_params)
        step = {k: math.ceil(spec.prune_frac * unit_count(layout, k)) for k in kinds}
        return {**step, "params": min(left, per_round)}
    step = {}
    for k in kinds:
        ratio = spec.attn_ratio if k == "attn" else 1.0
        remaining = int(alive[k][0].sum()) - keep[k]
        if remaining > 0:
            step[k] = min(remaining, max(1, math.ceil(spec.prune_frac * ratio * unit_count(layout, k))))
        else:
            step[k] = 0
    return step if any(step.values()) else None


def _fixed_count(spec: StructuredSpec, alive: int, step: int) -> int:
    """How many of a block's ``alive`` units stay fixed this round (at most all but two)."""
    if spec.prior == "uniform":
        return 0  # no unit has a stronger prior than another
    if spec.fixed_share is not None:
        count = math.floor(spec.fixed_share * alive)
    else:
        count = alive - 2 * step  # the reference code: candidates are twice the round's removals
    return max(0, min(count, alive - 2))


def _fixed(prior: torch.Tensor, alive: torch.Tensor, spec: StructuredSpec, step: int) -> torch.Tensor:
    """Per block, the alive units with the highest prior that stay fixed this round."""
    fixed = torch.zeros_like(alive)
    ranked = torch.where(alive, prior.double(), -math.inf)
    order = torch.sort(ranked, dim=1, descending=True, stable=True).indices
    for block in range(alive.shape[0]):
        count = _fixed_count(spec, int(alive[block].sum()), step)
        fixed[block, order[block, :count]] = True
    return fixed


def _sample_submodels(model, ids, spec, alive, candidates, prior, generator):
    """``spec.samples`` sub-models (masks and complements): the kept-candidate indicators
    [samples, candidates] and each sub-model's calibration loss."""
    rows, losses = [], []
    for _ in range(spec.samples // 2):
        drops = {k: _draw(candidates[k], prior[k], alive[k], generator) for k in candidates}
        for complement in (False, True):
            dropped = {k: (candidates[k] & ~d) if complement else d for k, d in drops.items()}
            keep = {k: (alive[k] & ~dropped.get(k, torch.zeros_like(alive[k]))).float() for k in alive}
            losses.append(calibration_loss(model, ids, spec.batch_size, keep))
            rows.append(torch.cat([(~dropped[k])[candidates[k]] for k in candidates]).double())
    return torch.stack(rows), losses


def _draw(candidates: torch.Tensor, prior: torch.Tensor, alive: torch.Tensor, generator) -> torch.Tensor:
    """Per block, half of the candidates, drawn without replacement with probability
    proportional to (highest alive prior - prior): weak units are dropped more often."""
    dropped = torch.zeros_like(candidates)
    for block in range(candidates.shape[0]):
        index = candidates[block].nonzero().flatten()
        if len(index) < 2:
            continue
        top = prior[block][alive[block]].max()
        weights = (top - prior[block, index]).double().clamp(min=0)
        if weights.sum() <= 0:
            weights = torch.ones_like(weights)
        picks = torch.multinomial(weights, len(index) // 2, replacement=False, generator=generator)
        dropped[block, index[picks]] = True
    return dropped


def _ridge(xs: torch.Tensor, ys: torch.Tensor, ridge: float) -> torch.Tensor:
    """Coefficients of a ridge regression of ``ys`` on ``xs`` (both centred; penalty ``ridge``
    times the mean squared norm of a centred column), in the dual form when columns outnumber rows."""
    xc = xs - xs.mean(0)
    yc = ys - ys.mean()
    lam = ridge * max(float((xc ** 2).sum(0).mean()), 1e-12)
    n, p = xc.shape
    if p > n:
        return xc.T @ torch.linalg.solve(xc @ xc.T + lam * torch.eye(n, dtype=xc.dtype), yc)
    return torch.linalg.solve(xc.T @ xc + lam * torch.eye(p, dtype=xc.dtype), xc.T @ yc)


def _scatter(beta: torch.Tensor, candidates: dict) -> dict[str, torch.Tensor]:
    """Importance per unit: the coefficient of a candidate, +inf for every other unit."""
    out, start = {}, 0
    for k, cand in candidates.items():
        values = torch.full(cand.shape, math.inf, dtype=torch.float64)
        count = int(cand.sum())
        values[cand] = beta[start:start + count]
        start += count
        out[k] = values
    return out
