"""The prunable units of a decoder block, unit masks, and applying a mask to a model.

Units per block (``UnitLayout``):
- FFN intermediate channels, every supported family;
- attention units, only where the config carries ``head_dim`` (Llama, Mistral, Qwen2): one
  unit is a KV group, i.e. one key/value head with the ``num_heads // num_kv_heads`` query
  heads that read it (in a model without GQA a group is one head);
- the whole block.

A ``UnitMask`` lists, per block, the kept attention units, the kept FFN channels and whether
the block is kept. ``apply_unit_mask`` turns a mask with the same kept counts in every kept
block into a physically smaller model with a standard HF config (fewer heads, smaller FFN,
fewer layers); any other mask zeroes the removed units' weights in a model of the original
shape (HF configs cannot state per-layer sizes). ``scale_units`` multiplies units' outputs
by per-unit factors through forward hooks, without touching weights: 0/1 factors evaluate a
sub-model (Bonsai), learned gates fit there too (L0).
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from harness.errors import PrunescopeError
from harness.pruning.driver import find_blocks


class UnitError(PrunescopeError):
    """A model family without a unit map, or a mask that does not fit the model."""


@dataclass(frozen=True)
class Family:
    """Where a family's units sit inside one block. A cut is (module path, dim, width):
    dim 0 takes output rows (and bias entries), dim 1 input columns; width is the rows or
    columns per unit: "group" (query heads of a KV group x head_dim), "head" (head_dim) or 1."""

    ffn: tuple[tuple[str, int], ...]
    ffn_size: str  # config field of the FFN width
    attn_out: str  # the attention output projection (zeroed when a block is removed)
    attn: tuple[tuple[str, int, str], ...] = ()


_LLAMA = Family(
    ffn=(("mlp.gate_proj", 0), ("mlp.up_proj", 0), ("mlp.down_proj", 1)),
    ffn_size="intermediate_size",
    attn_out="self_attn.o_proj",
    attn=(("self_attn.q_proj", 0, "group"), ("self_attn.k_proj", 0, "head"),
          ("self_attn.v_proj", 0, "head"), ("self_attn.o_proj", 1, "group")),
)
FAMILIES = {
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "opt": Family(ffn=(("fc1", 0), ("fc2", 1)), ffn_size="ffn_dim", attn_out="self_attn.out_proj"),
    "gpt_neox": Family(ffn=(("mlp.dense_h_to_4h", 0), ("mlp.dense_4h_to_h", 1)),
                       ffn_size="intermediate_size", attn_out="attention.dense"),
    "falcon": Family(ffn=(("mlp.dense_h_to_4h", 0), ("mlp.dense_4h_to_h", 1)),
                     ffn_size="ffn_hidden_size", attn_out="self_attention.dense"),
}


@dataclass(frozen=True)
class UnitLayout:
    """Unit counts and parameter counts of one model (every block has the same shape)."""

    family: str
    prefix: str  # module path of the block list, e.g. "model.layers"
    num_blocks: int
    attn_units: int  # per block; 0 where the family has no attention units
    ffn_units: int
    heads_per_group: int  # query heads per attention unit
    head_dim: int
    attn_unit_params: int
    ffn_unit_params: int
    block_params: int  # every parameter of one block (norms included)
    other_params: int  # embeddings, final norm, LM head

    @property
    def prunable_params(self) -> int:
        return self.num_blocks * self.block_params

    @property
    def fixed_block_params(self) -> int:
        """Parameters of a kept block that no unit owns (norms, shared biases)."""
        return self.block_params - self.attn_units * self.attn_unit_params - self.ffn_units * self.ffn_unit_params

    def output_projection(self, kind: str) -> tuple[str, int]:
        """(module, columns per unit) of the Linear that reads a unit kind's outputs
        (o_proj / down_proj ...): scaling its input columns scales the units."""
        name, _, width = next(c for c in self.cuts(kind) if c[1] == 1)
        return name, width

    def kinds(self) -> tuple[str, ...]:
        """The unit kinds this model has below the block level."""
        return ("attn", "ffn") if self.attn_units else ("ffn",)

    def cuts(self, kind: str) -> list[tuple[str, int, int]]:
        """(module, dim, width) for "attn" or "ffn" units."""
        family = FAMILIES[self.family]
        if kind == "ffn":
            return [(name, dim, 1) for name, dim in family.ffn]
        widths = {"group": self.heads_per_group * self.head_dim, "head": self.head_dim}
        return [(name, dim, widths[w]) for name, dim, w in family.attn]


@dataclass(frozen=True)
class UnitMask:
    """Kept units per block: sorted indices of kept attention units and FFN channels, and
    whether the block is kept (a removed block's other entries are ignored)."""

    attn: tuple[tuple[int, ...], ...]
    ffn: tuple[tuple[int, ...], ...]
    blocks: tuple[bool, ...]

    @classmethod
    def full(cls, layout: UnitLayout) -> "UnitMask":
        n = layout.num_blocks
        return cls(attn=(tuple(range(layout.attn_units)),) * n,
                   ffn=(tuple(range(layout.ffn_units)),) * n, blocks=(True,) * n)

    @classmethod
    def from_bools(cls, attn, ffn, blocks) -> "UnitMask":
        """From per-block boolean rows (lists or tensors) of kept attention units and channels."""
        def kept(rows):
            return tuple(tuple(i for i, keep in enumerate(row) if bool(keep)) for row in rows)
        return cls(attn=kept(attn), ffn=kept(ffn), blocks=tuple(bool(b) for b in blocks))

    @classmethod
    def from_dict(cls, data: dict) -> "UnitMask":
        return cls(attn=tuple(tuple(r) for r in data["attn"]), ffn=tuple(tuple(r) for r in data["ffn"]),
                   blocks=tuple(data["blocks"]))

    def to_dict(self) -> dict:
        return {"attn": [list(r) for r in self.attn], "ffn": [list(r) for r in self.ffn],
                "blocks": list(self.blocks)}

    def kept_counts(self) -> list[dict]:
        """Per block: kept attention units, FFN channels and whether the block is kept."""
        return [{"block": i, "kept": kept, "attn": len(a) if kept else 0, "ffn": len(f) if kept else 0}
                for i, (a, f, kept) in enumerate(zip(self.attn, self.ffn, self.blocks))]

    def validate(self, layout: UnitLayout) -> None:
        n = layout.num_blocks
        if not len(self.attn) == len(self.ffn) == len(self.blocks) == n:
            raise UnitError(f"unit mask has {len(self.attn)}/{len(self.ffn)}/{len(self.blocks)} "
                            f"attn/ffn/blocks rows; the model has {n} blocks")
        for kind, rows, size in (("attn", self.attn, layout.attn_units), ("ffn", self.ffn, layout.ffn_units)):
            for i, row in enumerate(rows):
                if list(row) != sorted(set(row)) or any(not 0 <= u < size for u in row):
                    raise UnitError(f"unit mask {kind}[{i}] must be sorted distinct indices in [0, {size}) "
                                    f"(got {list(row)})")
        if not any(self.blocks):
            raise UnitError("unit mask removes every block")

    def is_uniform(self, layout: UnitLayout) -> bool:
        """Whether a standard HF config can express the pruned model: every kept block keeps
        the same numbers of attention units and FFN channels, at least one of each."""
        counts = {(c["attn"], c["ffn"]) for c in self.kept_counts() if c["kept"]}
        if len(counts) != 1:
            return False
        attn, ffn = counts.pop()
        return ffn > 0 and (attn > 0 or layout.attn_units == 0)


def unit_layout(model: nn.Module) -> UnitLayout:
    """The unit map of a loaded model; raises UnitError for a family without one."""
    config = model.config
    family_name = config.model_type
    if family_name not in FAMILIES:
        raise UnitError(f"structured pruning knows the units of {', '.join(sorted(FAMILIES))}; "
                        f"not of model_type {family_name!r}")
    family = FAMILIES[family_name]
    prefix, blocks = find_blocks(model)
    block = blocks[0]
    ffn_units = getattr(config, family.ffn_size)
    heads_per_group = head_dim = attn_units = 0
    if family.attn:
        head_dim = config.head_dim
        attn_units = config.num_key_value_heads
        heads_per_group = config.num_attention_heads // attn_units
    partial = UnitLayout(family_name, prefix, len(blocks), attn_units, ffn_units, heads_per_group,
                         head_dim, 0, 0, 0, 0)

    def unit_params(kind):
        total = 0
        for name, dim, width in partial.cuts(kind):
            layer = block.get_submodule(name)
            total += width * layer.weight.shape[1 - dim]
            if dim == 0 and layer.bias is not None:
                total += width
        return total

    block_params = sum(p.numel() for p in block.parameters())
    all_params = sum(p.numel() for p in model.parameters())
    return UnitLayout(family_name, prefix, len(blocks), attn_units, ffn_units, heads_per_group, head_dim,
                      unit_params("attn") if attn_units else 0, unit_params("ffn"), block_params,
                      all_params - len(blocks) * block_params)


def parameter_counts(layout: UnitLayout, mask: UnitMask) -> dict:
    """Parameters before and after the mask: prunable (inside blocks) and the whole model."""
    after = sum(layout.fixed_block_params + c["attn"] * layout.attn_unit_params + c["ffn"] * layout.ffn_unit_params
                for c in mask.kept_counts() if c["kept"])
    return {"prunable_before": layout.prunable_params, "prunable_after": after,
            "total_before": layout.prunable_params + layout.other_params,
            "total_after": after + layout.other_params,
            "pruned_share": 1 - after / layout.prunable_params}


def apply_unit_mask(model: nn.Module, mask: UnitMask) -> nn.Module:
    """The pruned model. A uniform mask (``mask.is_uniform``) gives a new, physically smaller
    model with a standard config (``model`` is left as it was); any other mask zeroes the
    removed units' weights of ``model`` in place and returns it."""
    layout = unit_layout(model)
    mask.validate(layout)
    if mask.is_uniform(layout):
        return _smaller_model(model, layout, mask)
    _zero_removed(model, layout, mask)
    return model


def _rows(kept, width: int) -> torch.Tensor:
    return torch.tensor([u * width + j for u in kept for j in range(width)], dtype=torch.long)


@torch.no_grad()
def _smaller_model(model, layout: UnitLayout, mask: UnitMask) -> nn.Module:
    from transformers import AutoModelForCausalLM

    kept_blocks = [i for i, kept in enumerate(mask.blocks) if kept]
    counts = mask.kept_counts()[kept_blocks[0]]
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = len(kept_blocks)
    setattr(config, FAMILIES[layout.family].ffn_size, counts["ffn"])
    if layout.attn_units:
        config.num_key_value_heads = counts["attn"]
        config.num_attention_heads = counts["attn"] * layout.heads_per_group
        config.head_dim = layout.head_dim
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = [config.layer_types[i] for i in kept_blocks]
    cuts = {}  # "<module>.weight|bias" inside a block -> (dim, width, kind)
    for kind in layout.kinds():
        for name, dim, width in layout.cuts(kind):
            cuts[f"{name}.weight"] = (dim, width, kind)
            if dim == 0:
                cuts[f"{name}.bias"] = (0, width, kind)
    state = {}
    head = layout.prefix + "."
    for key, tensor in model.state_dict().items():
        if not key.startswith(head):
            state[key] = tensor
            continue
        index, inner = key[len(head):].split(".", 1)
        index = int(index)
        if not mask.blocks[index]:
            continue
        if inner in cuts:
            dim, width, kind = cuts[inner]
            kept = (mask.attn if kind == "attn" else mask.ffn)[index]
            tensor = tensor.index_select(dim, _rows(kept, width).to(tensor.device))
        state[f"{head}{kept_blocks.index(index)}.{inner}"] = tensor
    smaller = AutoModelForCausalLM.from_config(config, dtype=next(model.parameters()).dtype)
    smaller.load_state_dict(state, strict=True)
    smaller.generation_config = copy.deepcopy(model.generation_config)
    return smaller.to(next(model.parameters()).device).eval()


@torch.no_grad()
def _zero_removed(model, layout: UnitLayout, mask: UnitMask) -> None:
    _, blocks = find_blocks(model)
    family = FAMILIES[layout.family]
    for index, block in enumerate(blocks):
        if not mask.blocks[index]:  # zero outputs -> the block passes its input through
            for name in (family.attn_out, layout.output_projection("ffn")[0]):
                layer = block.get_submodule(name)
                layer.weight.zero_()
                if layer.bias is not None:
                    layer.bias.zero_()
            continue
        for kind, total in (("attn", layout.attn_units), ("ffn", layout.ffn_units)):
            kept = set((mask.attn if kind == "attn" else mask.ffn)[index])
            removed = [u for u in range(total) if u not in kept]
            if not removed:
                continue
            for name, dim, width in layout.cuts(kind):
                layer = block.get_submodule(name)
                rows = _rows(removed, width).to(layer.weight.device)
                layer.weight.index_fill_(dim, rows, 0)
                if dim == 0 and layer.bias is not None:
                    layer.bias.index_fill_(0, rows, 0)


@contextmanager
def scale_units(model: nn.Module, attn=None, ffn=None, blocks=None):
    """Multiply units' outputs by factors while the context is open (forward hooks; weights
    untouched, so gradients flow into factors that require them).

    ``attn``: [num_blocks, attn_units], ``ffn``: [num_blocks, ffn_units], ``blocks``:
    [num_blocks] tensors (None: all ones). A unit's factor scales its input to the output
    projection (o_proj / down_proj columns); a block's factor s gives x + s * (block(x) - x)."""
    layout = unit_layout(model)
    _, block_list = find_blocks(model)
    factors = {"attn": attn if layout.attn_units else None, "ffn": ffn}
    handles = []

    def scale_input(factors, width):
        def hook(_module, args):
            x = args[0]
            return (x * factors.to(x.dtype).repeat_interleave(width),) + tuple(args[1:])
        return hook

    def blend(factor):
        def hook(_module, args, kwargs, output):
            x = args[0] if args else kwargs["hidden_states"]
            out = output[0] if isinstance(output, (tuple, list)) else output
            mixed = x + factor.to(out.dtype) * (out - x)
            return (mixed, *output[1:]) if isinstance(output, (tuple, list)) else mixed
        return hook

    try:
        for index, block in enumerate(block_list):
            for kind, scale in factors.items():
                if scale is not None:
                    name, width = layout.output_projection(kind)
                    handles.append(block.get_submodule(name).register_forward_pre_hook(
                        scale_input(scale[index], width)))
            if blocks is not None:
                handles.append(block.register_forward_hook(blend(blocks[index]), with_kwargs=True))
        yield layout
    finally:
        for handle in handles:
            handle.remove()
