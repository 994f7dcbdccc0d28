"""Settings of the structured methods: plain dataclasses, validated on creation (torch-free,
so the study config can embed them)."""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import PrunescopeError
from harness.pruning.structured.l0_spec import L0Spec

# bonsai: forward-only regression (Dery et al., 2024); unit-norm: one-shot ranking of units by
# activation x weight norm; block-influence: whole blocks by 1 - cos(input, output) (ShortGPT);
# l0: HardConcrete gates trained towards the target (Sheared-LLaMA).
STRUCTURED_METHODS = ("bonsai", "unit-norm", "block-influence", "l0")
PRIORS = ("activation", "wanda", "magnitude", "uniform")
UNIT_KINDS = ("attn", "ffn")


class StructuredSpecError(PrunescopeError, ValueError):
    """An impossible structured-pruning setting (a ValueError, so pydantic names the field)."""


@dataclass(frozen=True)
class TargetShape:
    """An explicit target per block instead of a parameter share: kept attention units (KV
    groups), kept FFN channels, kept blocks. None leaves that dimension as it is."""

    attn_units: int | None = None
    ffn_units: int | None = None
    blocks: int | None = None

    def __post_init__(self):
        for name in ("attn_units", "ffn_units", "blocks"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise StructuredSpecError(f"target_shape.{name} must be >= 1 (got {value})")
        if self.attn_units is self.ffn_units is self.blocks is None:
            raise StructuredSpecError("target_shape needs at least one of attn_units, ffn_units, blocks")

    @property
    def label(self) -> str:
        """E.g. ``a1f128`` or ``b6`` (part of the checkpoint folder name)."""
        parts = [(p, v) for p, v in (("a", self.attn_units), ("f", self.ffn_units), ("b", self.blocks)) if v]
        return "".join(f"{p}{v}" for p, v in parts)


@dataclass(frozen=True)
class StructuredSpec:
    """Structured-pruning settings (defaults as in the Bonsai paper where it has one).

    units: which unit kinds bonsai and unit-norm remove ("attn" only exists where the config
    has head_dim). prior: per-unit statistic that orders units (unit-norm ranks by it; bonsai
    samples sub-models with it and keeps the strongest fixed). prune_frac: share of each
    block's units removed per bonsai round. samples: sub-models per round (half random masks,
    half their complements). fixed_share: share of alive units kept fixed per round (None: all
    but 2x the round's removals, as the reference code; a uniform prior fixes none). ridge:
    regression penalty, relative to the mean variance of the mask columns. attn_ratio: attention
    units are removed at this multiple of the FFN share. allocation: "uniform" (equal counts in
    every block: a standard, smaller config) or "global" (per-block counts: a masked model).
    l0: gate training settings of method l0 (None for every other method)."""

    units: tuple[str, ...] = UNIT_KINDS
    prior: str = "activation"
    prune_frac: float = 0.05
    samples: int = 200
    fixed_share: float | None = None
    ridge: float = 0.1
    attn_ratio: float = 1.0
    allocation: str = "uniform"
    target_shape: TargetShape | None = None
    seed: int = 0
    batch_size: int = 8
    l0: L0Spec | None = None

    def __post_init__(self):
        object.__setattr__(self, "units", tuple(self.units))
        if not self.units or any(u not in UNIT_KINDS for u in self.units):
            raise StructuredSpecError(f"units must be a non-empty subset of {list(UNIT_KINDS)} (got {list(self.units)})")
        if self.prior not in PRIORS:
            raise StructuredSpecError(f"prior must be one of {', '.join(PRIORS)} (got {self.prior!r})")
        if not 0 < self.prune_frac < 1:
            raise StructuredSpecError(f"prune_frac must be in (0, 1) (got {self.prune_frac})")
        if self.samples < 2 or self.samples % 2:
            raise StructuredSpecError(f"samples must be an even number >= 2 (masks and complements; got {self.samples})")
        if self.fixed_share is not None and not 0 <= self.fixed_share < 1:
            raise StructuredSpecError(f"fixed_share must be in [0, 1) (got {self.fixed_share})")
        if self.ridge <= 0:
            raise StructuredSpecError(f"ridge must be > 0 (got {self.ridge})")
        if self.attn_ratio < 0:
            raise StructuredSpecError(f"attn_ratio must be >= 0 (got {self.attn_ratio})")
        if self.allocation not in ("uniform", "global"):
            raise StructuredSpecError(f"allocation must be 'uniform' or 'global' (got {self.allocation!r})")
        if self.allocation == "global" and self.target_shape is not None:
            raise StructuredSpecError("a target_shape is uniform by definition; use allocation: uniform")
        if self.batch_size < 1:
            raise StructuredSpecError(f"batch_size must be >= 1 (got {self.batch_size})")


def parse_structured_args(*, units: str, target_shape: str | None, **settings) -> StructuredSpec:
    """Structured settings from command-line strings: ``units`` "attn,ffn", ``target_shape``
    "attn_units=4,ffn_units=2048" (or None)."""
    shape = None
    if target_shape:
        fields = {}
        for part in target_shape.split(","):
            name, _, value = part.partition("=")
            if name.strip() not in ("attn_units", "ffn_units", "blocks") or not value.strip().isdigit():
                raise StructuredSpecError(f"--target-shape: expected attn_units=N, ffn_units=N or blocks=N "
                                          f"separated by commas (got {part!r})")
            fields[name.strip()] = int(value)
        shape = TargetShape(**fields)
    return StructuredSpec(units=tuple(u.strip() for u in units.split(",") if u.strip()),
                          target_shape=shape, **settings)
