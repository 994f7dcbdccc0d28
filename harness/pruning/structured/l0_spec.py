"""Settings of ``method: l0`` (learned HardConcrete masks): a plain dataclass, validated on
creation and torch-free, so the study config can embed it."""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness.errors import PrunescopeError


class L0SpecError(PrunescopeError, ValueError):
    """An impossible l0 setting (a ValueError, so pydantic names the field). Not the structured
    spec's error class: that module embeds this one, so this one cannot import it."""


@dataclass(frozen=True)
class L0Spec:
    """How the gates are trained (defaults follow LLM-Shearing where it has one).

    steps: optimizer steps, one calibration batch each (``structured.batch_size`` rows, in a
    seeded order). lr: Adam learning rate of the gates' log alpha. lambda_lr: Adam learning
    rate of the Lagrange multipliers (gradient ascent). warmup: share of the steps over which
    each mask type's target sparsity rises linearly from 0. beta, limits: HardConcrete
    temperature and stretch limits. init_log_alpha: start of every log alpha (plus N(0, 0.01)
    noise; near 5 every gate is almost surely open). log_alpha_range: log alpha is clamped to
    it after each step (LLM-Shearing: log 1e-2 .. log 1e2)."""

    steps: int = 200
    lr: float = 0.5
    lambda_lr: float = 1.0
    warmup: float = 0.2
    beta: float = 2 / 3
    limits: tuple[float, float] = (-0.1, 1.1)
    init_log_alpha: float = 5.0
    log_alpha_range: tuple[float, float] = (math.log(1e-2), math.log(1e2))

    def __post_init__(self):
        object.__setattr__(self, "limits", tuple(self.limits))
        object.__setattr__(self, "log_alpha_range", tuple(self.log_alpha_range))
        if self.steps < 1:
            raise L0SpecError(f"l0.steps must be >= 1 (got {self.steps})")
        for name in ("lr", "lambda_lr"):
            if getattr(self, name) <= 0:
                raise L0SpecError(f"l0.{name} must be > 0 (got {getattr(self, name)})")
        if not 0 <= self.warmup <= 1:
            raise L0SpecError(f"l0.warmup must be in [0, 1] (got {self.warmup})")
        if self.beta <= 0:
            raise L0SpecError(f"l0.beta must be > 0 (got {self.beta})")
        if len(self.limits) != 2 or not self.limits[0] < 0 < 1 < self.limits[1]:
            raise L0SpecError(f"l0.limits (l, r) need l < 0 < 1 < r (got {list(self.limits)})")
        low, high = self.log_alpha_range
        if not low < high:
            raise L0SpecError(f"l0.log_alpha_range needs low < high (got {list(self.log_alpha_range)})")
