"""Structured pruning of a loaded model: choose a unit mask with the spec's method, apply it,
and describe the result (parameters before/after, kept units per block, the checkpoint's shape).

- bonsai: forward-only regression over sub-models (``bonsai.py``);
- unit-norm: one-shot ranking of units by the spec's prior (activation or weight norms);
- block-influence: drop the blocks whose output is most like their input (ShortGPT);
- l0: HardConcrete gates trained towards the target shape, then binarised (``l0.py``).
"""

from __future__ import annotations

import time
from dataclasses import asdict

import torch
from torch import nn

from harness.pruning.driver import find_blocks, ids_provenance, linear_layers
from harness.pruning.report import SCHEMA_VERSION, memory_peak, reset_memory_peak
from harness.pruning.spec import PruneSpec
from harness.pruning.structured.bonsai import bonsai
from harness.pruning.structured.l0 import l0_mask
from harness.pruning.structured.stats import block_influence, unit_scores
from harness.pruning.structured.targets import (blocks_to_keep, drop_by_budget, drop_lowest, unit_count,
                                                uniform_targets)
from harness.pruning.structured.units import UnitLayout, UnitMask, apply_unit_mask, parameter_counts, unit_layout


def choose_mask(model: nn.Module, spec: PruneSpec, ids: torch.Tensor) -> tuple[UnitMask, dict]:
    """The unit mask the spec's method picks, and what it cost (forward passes, rounds)."""
    layout = unit_layout(model)
    settings = spec.structured
    if spec.method == "block-influence":
        influence = block_influence(model, ids, settings.batch_size)
        count = blocks_to_keep(layout, spec.sparsity, settings)
        kept = set(torch.sort(influence, descending=True, stable=True).indices[:count].tolist())
        full = UnitMask.full(layout)
        mask = UnitMask(full.attn, full.ffn, tuple(i in kept for i in range(layout.num_blocks)))
        return mask, {"forward_passes": 1, "block_influence": [round(float(v), 6) for v in influence]}
    if spec.method == "l0":  # (folds the kept gates into model's weights)
        return l0_mask(model, layout, ids, spec.sparsity, settings, settings.l0)
    keep = uniform_targets(layout, spec.sparsity, settings) if settings.allocation == "uniform" else None
    budget = round(spec.sparsity * layout.prunable_params)
    if spec.method == "bonsai":
        mask, trace = bonsai(model, layout, ids, settings, keep=keep, budget=budget)
        return mask, {"forward_passes": trace.forward_passes, "rounds": trace.rounds,
                      "submodels": trace.submodels, "history": trace.history}
    scores = unit_scores(model, layout, ids, settings.prior, settings.batch_size)
    kinds = [k for k in layout.kinds() if k in settings.units]
    alive = {k: torch.ones(layout.num_blocks, unit_count(layout, k), dtype=torch.bool) for k in layout.kinds()}
    if keep is not None:
        dropped = {k: drop_lowest(scores[k], alive[k], unit_count(layout, k) - keep[k]) for k in kinds}
    else:
        dropped = drop_by_budget({k: scores[k] for k in kinds}, {k: alive[k] for k in kinds}, layout, budget)
    for k in kinds:
        alive[k] &= ~dropped[k]
    empty = [()] * layout.num_blocks
    mask = UnitMask.from_bools(alive["attn"] if "attn" in alive else empty, alive["ffn"], [True] * layout.num_blocks)
    return mask, {"forward_passes": int(settings.prior in ("activation", "wanda"))}


def prune_model(model: nn.Module, spec: PruneSpec, calibration_ids: torch.Tensor, *, device=None) -> dict:
    """The registry's entry point (``level="model"``): prune ``model`` itself and return the
    report. A uniform mask yields a new, smaller model of the same class, whose state then
    replaces ``model``'s (so the caller's object is the smaller model, config included)."""
    pruned, report = prune_structured(model, spec, calibration_ids, device=device)
    if pruned is not model:
        model.__dict__ = pruned.__dict__  # same class, freshly built: swap in its modules and config
    return report


def prune_structured(model: nn.Module, spec: PruneSpec, ids: torch.Tensor, *, device=None) -> tuple[nn.Module, dict]:
    """Prune ``model`` per a structured ``spec`` with calibration ``ids`` [nsamples, seqlen];
    returns the pruned model (a new smaller one when the kept counts are uniform, else
    ``model`` itself with the removed units zeroed) and its report."""
    started = time.perf_counter()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    reset_memory_peak(device)
    layout = unit_layout(model)
    home = next(model.parameters()).device
    was_training = model.training
    model.to(device).eval()
    try:
        mask, cost = choose_mask(model, spec, ids)
    finally:
        model.to(home).train(was_training)
    pruned = apply_unit_mask(model, mask)
    report = structured_report(layout, mask, spec, pruned, cost)
    report["calibration"] = ids_provenance(ids)
    report["device"] = str(device)
    report["wall_time_s"] = time.perf_counter() - started
    report["peak_memory_bytes"] = memory_peak(device)
    return pruned, report


def structured_report(layout: UnitLayout, mask: UnitMask, spec: PruneSpec, pruned: nn.Module, cost: dict) -> dict:
    """The checkpoint report: ``shape`` is "uniform" (a standard, smaller config) or "masked"
    (original shapes, removed units zeroed; per-block counts only here). ``measured_sparsity``
    is the share of prunable parameters removed."""
    counts = parameter_counts(layout, mask)
    prefix, blocks = find_blocks(pruned)
    modules = {}
    for index, block in enumerate(blocks):
        for name, layer in linear_layers(block).items():
            modules[f"{prefix}.{index}.{name}"] = float((layer.weight == 0).float().mean())
    uniform = mask.is_uniform(layout)
    return {
        "schema_version": SCHEMA_VERSION,
        "method": spec.method,
        "spec": spec.to_dict(),
        "target_sparsity": spec.sparsity,
        "measured_sparsity": counts["pruned_share"],
        "parameters": counts,
        "shape": "uniform" if uniform else "masked",
        "layout": asdict(layout),
        "kept_units": mask.kept_counts(),
        "unit_mask": mask.to_dict(),
        "config_changes": _config_changes(layout, mask) if uniform else {},
        "cost": cost,
        "modules": modules,
        "nm_valid": None,
    }


def _config_changes(layout: UnitLayout, mask: UnitMask) -> dict:
    kept = [c for c in mask.kept_counts() if c["kept"]]
    changes = {"num_hidden_layers": [layout.num_blocks, len(kept)],
               "ffn_units": [layout.ffn_units, kept[0]["ffn"]]}
    if layout.attn_units:
        changes["num_key_value_heads"] = [layout.attn_units, kept[0]["attn"]]
        changes["num_attention_heads"] = [layout.attn_units * layout.heads_per_group,
                                          kept[0]["attn"] * layout.heads_per_group]
    return changes
