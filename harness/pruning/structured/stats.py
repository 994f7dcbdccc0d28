"""What forward passes over calibration ids tell about units: the calibration loss of a
(sub-)model, per-unit scores, and each block's influence. Every function that runs the model
counts as one forward pass over the calibration set."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from harness.pruning.driver import find_blocks
from harness.pruning.structured.units import UnitLayout, scale_units


@torch.no_grad()
def calibration_loss(model: nn.Module, ids: torch.Tensor, batch_size: int, keep: dict | None = None) -> float:
    """Mean next-token cross-entropy over ``ids`` [nsamples, seqlen], with the units where
    ``keep`` (kind -> [num_blocks, units] 0/1 tensor) is 0 switched off."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with scale_units(model, **(keep or {})):
        for chunk in torch.split(ids, batch_size):
            chunk = chunk.to(device)
            logits = model(input_ids=chunk, use_cache=False).logits[:, :-1].float()
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1),
                                               reduction="sum")
            total += loss.item()
            count += chunk[:, 1:].numel()
    return total / count


@torch.no_grad()
def unit_scores(model: nn.Module, layout: UnitLayout, ids: torch.Tensor | None, prior: str, batch_size: int,
                keep: dict | None = None) -> dict[str, torch.Tensor]:
    """Per kind, a [num_blocks, units] score (higher = more important), from the inputs of the
    Linear that reads the units (o_proj, down_proj, ...):

    - activation: mean |input| over tokens and the unit's columns;
    - wanda: sum over the unit's columns of ||input column||_2 * ||weight column||_2;
    - magnitude: sum over the unit's columns of ||weight column||_2 (no forward pass);
    - uniform: all ones (no forward pass)."""
    _, blocks = find_blocks(model)
    kinds = layout.kinds()
    if prior == "uniform":
        return {k: torch.ones(layout.num_blocks, _count(layout, k)) for k in kinds}
    columns = {k: [_weight_column_norms(blocks[i].get_submodule(layout.output_projection(k)[0]))
                   for i in range(len(blocks))] for k in kinds}
    if prior == "magnitude":
        return {k: _per_unit(torch.stack(columns[k]), layout.output_projection(k)[1], "sum") for k in kinds}
    with scale_units(model, **(keep or {})), _input_stats(blocks, layout, kinds) as stats:  # masks first
        for chunk in torch.split(ids, batch_size):
            model(input_ids=chunk.to(next(model.parameters()).device), use_cache=False)
    scores = {}
    for k in kinds:
        width = layout.output_projection(k)[1]
        abs_mean = torch.stack([s["abs"].cpu() / s["tokens"] for s in stats[k]])
        rms = torch.stack([torch.sqrt(s["sq"].cpu() / s["tokens"]) for s in stats[k]])
        if prior == "activation":
            scores[k] = _per_unit(abs_mean, width, "mean")
        else:
            scores[k] = _per_unit(rms * torch.stack(columns[k]), width, "sum")
    return scores


@torch.no_grad()
def block_influence(model: nn.Module, ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """ShortGPT's block influence per block: 1 - mean over tokens of cos(block input, block
    output) (a block that barely turns its input matters little)."""
    _, blocks = find_blocks(model)
    sums = torch.zeros(len(blocks), dtype=torch.float64)
    tokens = 0

    def hook(index):
        def record(_module, args, kwargs, output):
            x = args[0] if args else kwargs["hidden_states"]
            out = output[0] if isinstance(output, (tuple, list)) else output
            sums[index] += nn.functional.cosine_similarity(x.float(), out.float(), dim=-1).sum().item()
        return record

    handles = [b.register_forward_hook(hook(i), with_kwargs=True) for i, b in enumerate(blocks)]
    try:
        for chunk in torch.split(ids, batch_size):
            model(input_ids=chunk.to(next(model.parameters()).device), use_cache=False)
            tokens += chunk.numel()
    finally:
        for h in handles:
            h.remove()
    return (1 - sums / tokens).float()


def _count(layout: UnitLayout, kind: str) -> int:
    return layout.attn_units if kind == "attn" else layout.ffn_units


def _per_unit(per_column: torch.Tensor, width: int, how: str) -> torch.Tensor:
    grouped = per_column.reshape(per_column.shape[0], -1, width)
    return (grouped.mean(-1) if how == "mean" else grouped.sum(-1)).float().cpu()


def _weight_column_norms(layer: nn.Linear) -> torch.Tensor:
    return layer.weight.detach().float().norm(dim=0).cpu()


@contextmanager
def _input_stats(blocks, layout: UnitLayout, kinds):
    """Accumulate, per block and kind, sum |x|, sum x^2 per input column and the token count."""
    stats = {k: [] for k in kinds}
    handles = []

    def hook(entry):
        def record(_module, args):
            x = args[0].detach().float().reshape(-1, args[0].shape[-1])
            entry["abs"] += x.abs().sum(0)
            entry["sq"] += x.pow(2).sum(0)
            entry["tokens"] += x.shape[0]
        return record

    for k in kinds:
        name = layout.output_projection(k)[0]
        for block in blocks:
            layer = block.get_submodule(name)
            zeros = torch.zeros(layer.in_features, device=layer.weight.device)
            entry = {"abs": zeros, "sq": zeros.clone(), "tokens": 0}
            stats[k].append(entry)
            handles.append(layer.register_forward_pre_hook(hook(entry)))
    try:
        yield stats
    finally:
        for h in handles:
            h.remove()
