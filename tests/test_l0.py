"""HardConcrete gates and the l0 structured method (learned masks, Sheared-LLaMA style)."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import integrate

from harness.pruning.structured import hardconcrete as hc

DRAWS = 100_000


def concrete_density(x: float, log_alpha: float, beta: float) -> float:
    """Binary Concrete density (Maddison et al., 2017) of s' in (0, 1), written out here."""
    alpha = math.exp(log_alpha)
    num = alpha * beta * x ** (-beta - 1) * (1 - x) ** (-beta - 1)
    return num / (alpha * x ** (-beta) + (1 - x) ** (-beta)) ** 2


@pytest.mark.parametrize("log_alpha, beta, limits", [
    (0.0, 2 / 3, (-0.1, 1.1)), (1.5, 2 / 3, (-0.1, 1.1)), (-1.0, 0.5, (-0.1, 1.1)), (0.5, 0.9, (-0.2, 1.05)),
])
def test_sampler_matches_closed_forms_and_density(log_alpha, beta, limits):
    low, high = limits
    z = hc.sample(torch.full((DRAWS,), log_alpha, dtype=torch.float64), beta, limits,
                  generator=torch.Generator().manual_seed(1))
    la = torch.tensor(log_alpha, dtype=torch.float64)
    p_zero = 1 - float(hc.prob_nonzero(la, beta, limits))
    p_one = float(hc.prob_one(la, beta, limits))

    def density(x):
        return concrete_density(x, log_alpha, beta)

    # P(z = 0) = P(s' <= -l / (r - l)), P(z = 1) = P(s' >= (1 - l) / (r - l)), by integrating the density
    zero_edge, one_edge = -low / (high - low), (1 - low) / (high - low)
    assert integrate.quad(density, 0, zero_edge)[0] == pytest.approx(p_zero, abs=1e-6)
    assert integrate.quad(density, one_edge, 1)[0] == pytest.approx(p_one, abs=1e-6)
    mean = integrate.quad(lambda x: ((x * (high - low) + low)) * density(x), zero_edge, one_edge)[0] + p_one

    def close(empirical, expected):  # within 5 standard errors of a proportion / a mean in [0, 1]
        return abs(empirical - expected) < 5 * math.sqrt(max(expected * (1 - expected), 1e-4) / DRAWS)

    assert close(float((z == 0).double().mean()), p_zero)
    assert close(float((z == 1).double().mean()), p_one)
    assert close(float(z.mean()), mean)
    assert 0.01 < p_zero < 0.99 and 0.01 < p_one < 0.99  # both atoms are really exercised


def test_gate_gradients_and_test_time_gate():
    log_alpha = torch.tensor([-3.0, 0.0, 3.0], requires_grad=True)
    hc.expected_l0(log_alpha).backward()
    assert (log_alpha.grad > 0).all()  # opening a gate raises the expected count
    gate = hc.deterministic_gate(torch.tensor([-10.0, 0.0, 10.0]))
    assert gate.tolist() == pytest.approx([0.0, 0.5, 1.0])  # sigmoid(0) * 1.2 - 0.1 = 0.5
    with pytest.raises(ValueError, match="l < 0 < 1 < r"):
        hc.check_parameters(2 / 3, (0.0, 1.1))
