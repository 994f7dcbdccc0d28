"""HardConcrete gates (Louizos, Welling & Kingma, 2018): a relaxed 0/1 gate per unit whose
expected L0 norm (count of non-zero gates) has a closed form, so it can be trained by gradient.

With location ``log_alpha`` per gate, temperature ``beta`` and stretch limits ``(l, r)``
(``l < 0 < 1 < r``):

    u ~ Uniform(0, 1)
    s' = sigmoid((log u - log(1 - u) + log_alpha) / beta)
    s  = s' (r - l) + l            (stretched to (l, r))
    z  = min(1, max(0, s))         (so P(z = 0) > 0 and P(z = 1) > 0)

Since log u - log(1 - u) is standard logistic, P(s' <= x) = sigmoid(beta logit(x) - log_alpha),
which gives the closed forms below. Large ``log_alpha`` keeps the unit open. Defaults are the
paper's: beta = 2/3, limits (-0.1, 1.1).
"""

from __future__ import annotations

import math

import torch

BETA = 2 / 3
LIMITS = (-0.1, 1.1)
_EPS = 1e-6  # u is drawn from [eps, 1 - eps] so log u and log(1 - u) stay finite


def sample(log_alpha: torch.Tensor, beta: float = BETA, limits: tuple[float, float] = LIMITS,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """One gate draw per entry of ``log_alpha`` (differentiable in ``log_alpha``)."""
    low, high = limits
    u = torch.rand(log_alpha.shape, generator=generator, dtype=log_alpha.dtype, device="cpu")
    u = u.clamp(_EPS, 1 - _EPS).to(log_alpha.device)
    stretched = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / beta) * (high - low) + low
    return stretched.clamp(0.0, 1.0)


def deterministic_gate(log_alpha: torch.Tensor, limits: tuple[float, float] = LIMITS) -> torch.Tensor:
    """The paper's test-time gate: min(1, max(0, sigmoid(log_alpha) (r - l) + l))."""
    low, high = limits
    return (torch.sigmoid(log_alpha) * (high - low) + low).clamp(0.0, 1.0)


def prob_nonzero(log_alpha: torch.Tensor, beta: float = BETA, limits: tuple[float, float] = LIMITS) -> torch.Tensor:
    """P(z != 0) = sigmoid(log_alpha - beta log(-l / r)) per gate (differentiable)."""
    low, high = limits
    return torch.sigmoid(log_alpha - beta * math.log(-low / high))


def prob_one(log_alpha: torch.Tensor, beta: float = BETA, limits: tuple[float, float] = LIMITS) -> torch.Tensor:
    """P(z = 1) = P(s >= 1) = sigmoid(log_alpha - beta log((1 - l) / (r - 1))) per gate."""
    low, high = limits
    return torch.sigmoid(log_alpha - beta * math.log((1 - low) / (high - 1)))


def expected_l0(log_alpha: torch.Tensor, beta: float = BETA, limits: tuple[float, float] = LIMITS,
                dim: int | None = -1) -> torch.Tensor:
    """Expected number of open gates: the sum of P(z != 0) over ``dim`` (None: all gates)."""
    p = prob_nonzero(log_alpha, beta, limits)
    return p.sum() if dim is None else p.sum(dim)
