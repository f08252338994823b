"""LayerSAM's ``inverse`` trust ratio is the exact maximiser of eq. 6's first-order problem.

000_821cd26b06e61c4d.txt Sec. 3.3: Lambda = diag(xi_i), xi_i = ||w_i|| / ||g_i|| per tensor, and the
perturbation maximises <g, e> subject to ||Lambda e||_p <= rho (eq. 6, first order). With ASAM's
T = |w| + eta as well the constraint is ||M e||_p <= rho, M = Lambda T^-1 elementwise. Substituting
u = M e turns it into the plain l_p ball: <g, e> = <M^-1 g, u>, so by Hoelder the maximum is
rho ||M^-1 g||_q (1/p + 1/q = 1), reached at

    p = 2:    e = rho M^-2 g / ||M^-1 g||_2        (Lambda only: rho Lambda^-2 g / ||Lambda^-1 g||)
    p = inf:  e = rho M^-1 sign(g)

The tests check the optimizer's e against this closed form, against 10,000 feasible directions
(random and near e), and against the old l2 form rho Lambda^-1 g / ||g||, which is feasible but
not the maximiser (Cauchy-Schwarz), so they fail on the old code.
"""

from __future__ import annotations

import math

import pytest
import torch
from harness_sam.sam import SAM
from harness_schedules.basic import Constant
from torch import nn

RHO, ETA = 0.7, 0.01
SHAPES = [(3, 4), (5,), (2, 2, 2), (1, 6)]
SAMPLES = 10_000
DUAL = {2.0: 2.0, math.inf: 1.0}  # p -> q, 1/p + 1/q = 1


def problem(seed: int):
    """Random weights and gradients, several tensors with different ||w_i|| / ||g_i||, float64."""
    generator = torch.Generator().manual_seed(seed)
    weights = [
        nn.Parameter(torch.randn(s, generator=generator, dtype=torch.float64) * (1 + i)) for i, s in enumerate(SHAPES)
    ]
    grads = [torch.randn(s, generator=generator, dtype=torch.float64) / (1 + 2 * i) for i, s in enumerate(SHAPES)]
    return weights, grads


def flat(tensors) -> torch.Tensor:
    return torch.cat([t.detach().flatten() for t in tensors])


def trust_ratio(weights, grads) -> torch.Tensor:
    """Lambda's diagonal, flat: xi_i = ||w_i|| / ||g_i|| on each entry of tensor i (eq. 6)."""
    return torch.cat([(w.detach().norm() / g.norm()).expand(w.numel()) for w, g in zip(weights, grads, strict=True)])


def asam_scale(weights, adaptive: bool) -> torch.Tensor:
    """T = |w| + eta, flat (1 without ASAM)."""
    return flat(weights).abs() + ETA if adaptive else torch.ones_like(flat(weights))


def constraint_operator(weights, grads, adaptive: bool) -> torch.Tensor:
    """M = Lambda T^-1 as a flat diagonal."""
    return trust_ratio(weights, grads) / asam_scale(weights, adaptive)


def perturbation(weights, grads, norm: str, adaptive: bool) -> torch.Tensor:
    optimizer = SAM(
        weights, base_optimizer=torch.optim.SGD(weights, lr=0.1), scheduler=Constant(), norm=norm,
        adaptive=adaptive, eta=ETA, layerwise=True, trust_ratio="inverse",
    )  # fmt: skip
    return flat(optimizer.perturbation(weights, grads, RHO, None))


def lp(x: torch.Tensor, p: float) -> torch.Tensor:
    return torch.linalg.vector_norm(x, ord=p, dim=-1)


CASES = [(norm, p, adaptive) for norm, p in (("l2", 2.0), ("linf", math.inf)) for adaptive in (False, True)]


@pytest.mark.parametrize(("norm", "p", "adaptive"), CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_inverse_perturbation_is_the_closed_form_maximiser(norm, p, adaptive, seed):
    weights, grads = problem(seed)
    m, g = constraint_operator(weights, grads, adaptive), flat(grads)
    e = perturbation(weights, grads, norm, adaptive)
    torch.testing.assert_close(lp(m * e, p), torch.tensor(RHO, dtype=torch.float64), rtol=1e-10, atol=0)
    maximum = RHO * lp(g / m, DUAL[p])
    torch.testing.assert_close(g @ e, maximum, rtol=1e-10, atol=0)
    closed = RHO * g / m**2 / lp(g / m, 2.0) if p == 2.0 else RHO * torch.sign(g) / m
    torch.testing.assert_close(e, closed, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize(("norm", "p", "adaptive"), CASES)
def test_no_feasible_direction_beats_the_inverse_perturbation(norm, p, adaptive):
    """Brute force: 10,000 directions scaled onto the boundary ||M e||_p = rho, half of them random
    and half within 1% of e (which a non-maximiser loses to: first-order ascent along the surface)."""
    weights, grads = problem(3)
    m, g = constraint_operator(weights, grads, adaptive), flat(grads)
    e = perturbation(weights, grads, norm, adaptive)
    generator = torch.Generator().manual_seed(4)
    noise = torch.randn(SAMPLES, e.numel(), generator=generator, dtype=torch.float64)
    half = SAMPLES // 2
    candidates = torch.cat([noise[:half], e + 0.01 * lp(e, 2.0) * noise[half:] / lp(noise[half:], 2.0)[:, None]])
    feasible = candidates * (RHO / lp(m * candidates, p))[:, None]
    assert torch.all(lp(m * feasible, p) <= RHO * (1 + 1e-12))
    assert torch.max(feasible @ g) <= (g @ e) * (1 + 1e-12)


@pytest.mark.parametrize("adaptive", [False, True])
def test_exact_l2_form_differs_from_the_ratio_times_sam_form(adaptive):
    """rho Lambda^-1 g / ||g|| (the l2 form with the inverse ratio multiplied in, the code before the
    fix; with ASAM, that ratio times ASAM's e) is feasible but strictly worse."""
    weights, grads = problem(5)
    m, g = constraint_operator(weights, grads, adaptive), flat(grads)
    t = asam_scale(weights, adaptive)
    old = RHO * t**2 * g / lp(t * g, 2.0) / trust_ratio(weights, grads)
    e = perturbation(weights, grads, "l2", adaptive)
    assert lp(m * old, 2.0) <= RHO * (1 + 1e-12)
    assert g @ old < (g @ e) * (1 - 1e-3)
    assert not torch.allclose(e, old, rtol=1e-3)
