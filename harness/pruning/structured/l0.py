"""``method: l0``: structured masks learned with HardConcrete gates and a Lagrangian target
(Louizos et al., 2018; Xia et al., Sheared-LLaMA, 2023).

Every prunable unit (attention unit, FFN channel; whole blocks when the target shape removes
blocks) gets a gate z in [0, 1] that multiplies its output (``scale_units``). The gates'
log alpha are trained on calibration text, the model's weights frozen, to minimise

    LM loss + sum over mask types of  lambda1 (s - t) + lambda2 (s - t)^2

where s is a block's expected share of closed gates of that type (1 - expected L0 / units;
averaged over blocks) and t the target share, raised linearly from 0 over the first
``warmup`` share of steps; the lambdas are trained by gradient ascent, so the constraint
tightens while it is violated. The target counts per block are those every structured method
uses for a parameter share (``uniform_targets``) or the explicit target shape.

Binarisation keeps, in every block, the units with the largest log alpha (the same count in
every block, so the result is a standard, smaller config), and multiplies each kept unit's
test-time gate into its output-projection columns before the structured core cuts the rest.
Kept blocks' gates are not folded (a block gate scales block(x) - x, which no weight can);
their values are reported.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from harness.pruning.driver import find_blocks
from harness.pruning.structured import hardconcrete as hc
from harness.pruning.structured.l0_spec import L0Spec
from harness.pruning.structured.spec import StructuredSpec, StructuredSpecError, TargetShape
from harness.pruning.structured.targets import unit_count, uniform_targets
from harness.pruning.structured.units import UnitLayout, UnitMask, scale_units


def l0_targets(layout: UnitLayout, sparsity: float, settings: StructuredSpec) -> dict[str, int]:
    """Kept units per block of each kind ("attn", "ffn") and kept blocks ("blocks")."""
    shape = settings.target_shape
    blocks = layout.num_blocks
    if shape is not None and shape.blocks is not None:
        if shape.blocks > layout.num_blocks:
            raise StructuredSpecError(f"target_shape.blocks={shape.blocks}: the model has {layout.num_blocks}")
        blocks = shape.blocks
        units_only = TargetShape(shape.attn_units, shape.ffn_units) if (shape.attn_units or shape.ffn_units) else None
        if units_only is None:
            return {**{k: unit_count(layout, k) for k in layout.kinds()}, "blocks": blocks}
        settings = dataclasses.replace(settings, target_shape=units_only)
    return {**uniform_targets(layout, sparsity, settings), "blocks": blocks}


def l0_mask(model: nn.Module, layout: UnitLayout, ids: torch.Tensor, sparsity: float, settings: StructuredSpec,
            l0: L0Spec, *, progress: bool = True) -> tuple[UnitMask, dict]:
    """Train gates towards the target, binarise them, fold the kept gates into the weights of
    ``model`` (in place) and return the unit mask and what the training cost and reached."""
    targets = l0_targets(layout, sparsity, settings)
    totals = {k: unit_count(layout, k) for k in layout.kinds()} | {"blocks": layout.num_blocks}
    gated = [k for k in (*layout.kinds(), "blocks") if targets[k] < totals[k]]
    if not gated:  # the target keeps every unit: nothing to learn
        return UnitMask.full(layout), {"steps": 0, "tokens": 0, "targets": {}}
    log_alpha, history = train_gates(model, ids, targets, totals, gated, settings, l0, progress=progress)
    kept = {k: _top_k(log_alpha[k], targets[k]) if k in gated else torch.ones(_shape(k, layout, totals), dtype=torch.bool)
            for k in totals}
    folded = _fold_gates(model, layout, {k: log_alpha[k] for k in gated if k != "blocks"}, kept, l0.limits)
    empty = [()] * layout.num_blocks
    mask = UnitMask.from_bools(kept["attn"] if "attn" in kept else empty, kept["ffn"], kept["blocks"])
    final = history[-1]
    cost = {"steps": l0.steps, "tokens": l0.steps * min(settings.batch_size, len(ids)) * ids.shape[1],
            "targets": {k: targets[k] for k in gated},
            "expected_kept": final["expected_kept"], "lambdas": final["lambdas"],
            "folded_gates": folded, "history": history}
    if "blocks" in gated:
        gates = hc.deterministic_gate(log_alpha["blocks"], l0.limits)
        cost["kept_block_gates"] = [round(float(g), 6) for g in gates[kept["blocks"]]]
    return mask, cost


def train_gates(model: nn.Module, ids: torch.Tensor, targets: dict, totals: dict, gated: list[str],
                settings: StructuredSpec, l0: L0Spec, *, progress: bool = True) -> tuple[dict, list[dict]]:
    """The trained log alpha of each gated kind ([num_blocks, units], blocks: [num_blocks]) and
    a history of the loss, expected kept units per block and lambdas (about 20 entries)."""
    from tqdm import tqdm

    generator = torch.Generator().manual_seed(settings.seed)
    device = next(model.parameters()).device
    num_blocks = totals["blocks"]
    log_alpha = {}
    for k in gated:
        shape = (num_blocks,) if k == "blocks" else (num_blocks, totals[k])
        noise = torch.randn(shape, generator=generator, dtype=torch.float32) * 0.01
        log_alpha[k] = (noise + l0.init_log_alpha).to(device).requires_grad_(True)
    lambdas = {k: torch.zeros(2, device=device, requires_grad=True) for k in gated}
    gate_opt = torch.optim.Adam(log_alpha.values(), lr=l0.lr)
    lambda_opt = torch.optim.Adam(lambdas.values(), lr=l0.lambda_lr, maximize=True)
    warmup_steps = max(1, round(l0.warmup * l0.steps))
    batch = min(settings.batch_size, len(ids))
    order = torch.cat([torch.randperm(len(ids), generator=generator)
                       for _ in range(-(-l0.steps * batch // len(ids)))])
    history, every = [], max(1, l0.steps // 20)
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    was_training = model.training
    model.eval()
    try:
        bar = tqdm(range(l0.steps), desc="l0 gates", unit="step",
                   disable=None if progress else True)  # None: no bar off a terminal
        for step in bar:
            chunk = ids[order[step * batch:(step + 1) * batch]].to(device)
            z = {k: hc.sample(log_alpha[k], l0.beta, l0.limits, generator) for k in gated}
            with scale_units(model, attn=z.get("attn"), ffn=z.get("ffn"), blocks=z.get("blocks")):
                lm_loss = model(input_ids=chunk, labels=chunk, use_cache=False).loss
            ramp = min(1.0, (step + 1) / warmup_steps)
            lagrangian = sum(_constraint(log_alpha[k], targets[k], totals[k], ramp, lambdas[k], l0) for k in gated)
            gate_opt.zero_grad()
            lambda_opt.zero_grad()
            (lm_loss + lagrangian).backward()
            gate_opt.step()
            lambda_opt.step()
            with torch.no_grad():
                for value in log_alpha.values():
                    value.clamp_(*l0.log_alpha_range)
            if step % every == 0 or step == l0.steps - 1:
                history.append(_snapshot(step, lm_loss, log_alpha, lambdas, l0))
                bar.set_postfix(loss=f"{lm_loss.item():.3f}", kept=history[-1]["expected_kept"])
    finally:
        for p in frozen:
            p.requires_grad_(True)
        model.train(was_training)
    return {k: v.detach().cpu() for k, v in log_alpha.items()}, history


def _constraint(log_alpha, target: int, total: int, ramp: float, lambdas, l0: L0Spec) -> torch.Tensor:
    """lambda1 (s - t) + lambda2 (s - t)^2, averaged over blocks: s the expected share of
    closed gates (per block; the single row of block gates), t the ramped target share."""
    expected = hc.expected_l0(log_alpha, l0.beta, l0.limits)
    gap = (1 - expected / total) - (1 - target / total) * ramp
    return (lambdas[0] * gap + lambdas[1] * gap ** 2).mean()


def _snapshot(step: int, lm_loss, log_alpha: dict, lambdas: dict, l0: L0Spec) -> dict:
    with torch.no_grad():
        kept = {k: round(float(hc.expected_l0(v, l0.beta, l0.limits).float().mean()), 3) for k, v in log_alpha.items()}
    return {"step": step, "lm_loss": round(lm_loss.item(), 5), "expected_kept": kept,
            "lambdas": {k: [round(float(x), 5) for x in v.detach()] for k, v in lambdas.items()}}


def _shape(kind: str, layout: UnitLayout, totals: dict) -> tuple[int, ...]:
    return (layout.num_blocks,) if kind == "blocks" else (layout.num_blocks, totals[kind])


def _top_k(log_alpha: torch.Tensor, k: int) -> torch.Tensor:
    """True for the ``k`` largest log alpha of each row (ties: lower index first)."""
    order = torch.sort(log_alpha, dim=-1, descending=True, stable=True).indices[..., :k]
    kept = torch.zeros(log_alpha.shape, dtype=torch.bool)
    return kept.scatter_(-1, order, True)


@torch.no_grad()
def _fold_gates(model: nn.Module, layout: UnitLayout, log_alpha: dict, kept: dict, limits) -> dict:
    """Multiply each kept unit's test-time gate into its output-projection columns (the input
    that ``scale_units`` scales). Per kind: the smallest folded gate, and how many kept units
    have a test-time gate of 0 (kept for the shape, but silent: training had not decided)."""
    _, blocks = find_blocks(model)
    summary = {}
    for kind, values in log_alpha.items():
        gates = hc.deterministic_gate(values, limits)
        name, width = layout.output_projection(kind)
        for index, block in enumerate(blocks):
            if not kept["blocks"][index]:
                continue
            weight = block.get_submodule(name).weight
            factors = torch.where(kept[kind][index], gates[index], torch.zeros(()))
            weight.mul_(factors.repeat_interleave(width).to(weight.device, weight.dtype))
        folded = gates[kept[kind] & kept["blocks"][:, None]]
        summary[kind] = {"min": round(float(folded.min()), 6), "zero": int((folded == 0).sum())}
    return summary
