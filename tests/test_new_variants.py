"""F-SAM, Momentum-SAM and VaSSO (``harness_sam.fsam``, ``harness_sam.momentum_sam``, ``harness_sam.vasso``):
each against its paper's update rule written out again here in float64 (its own gradients by
``torch.autograd.grad`` at weights it computes, its own momentum-SGD or AdamW), the reduction to the base
optimizer at rho = 0, and the memory each holds against a count by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from harness_sam.erm import ERM
from harness_sam.fsam import FriendlySAM
from harness_sam.momentum_sam import MomentumSAM
from harness_sam.sam import SAM
from harness_sam.vasso import VaSSO
from harness_schedules.basic import Constant, Never
from torch import nn
from torch.func import functional_call

from harness.contract.held import optimizer_state_bytes
from harness.run.closure import BatchClosure

LR, MU, WD, STEPS = 0.1, 0.9, 5e-4, 6


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).double()


NAMES = [name for name, _ in model().named_parameters()]


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(100 + step)
    return torch.randn(12, 5, generator=generator, dtype=torch.float64), torch.randint(0, 3, (12,), generator=generator)


def gradient(weights: list[torch.Tensor], step: int) -> list[torch.Tensor]:
    """The batch loss's gradient at ``weights`` (float64, independent of the optimizers under test)."""
    inputs, targets = batch(step)
    at = [w.detach().clone().requires_grad_(True) for w in weights]
    loss = F.cross_entropy(functional_call(model(), dict(zip(NAMES, at, strict=True)), (inputs,)), targets)
    return [g.detach() for g in torch.autograd.grad(loss, at)]


def norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.sqrt(sum((t * t).sum() for t in tensors))


class MomentumSGD:
    """torch's SGD with momentum and coupled weight decay, by hand: v = mu v + (g + wd w), w -= lr v."""

    def __init__(self) -> None:
        self.v: list[torch.Tensor] | None = None

    def step(self, w: list[torch.Tensor], g: list[torch.Tensor]) -> list[torch.Tensor]:
        d = [gi + WD * wi for gi, wi in zip(g, w, strict=True)]
        self.v = d if self.v is None else [MU * vi + di for vi, di in zip(self.v, d, strict=True)]
        return [wi - LR * vi for wi, vi in zip(w, self.v, strict=True)]


class HandAdamW:
    """torch's AdamW by hand: decoupled decay, bias-corrected moments (betas 0.9, 0.999, eps 1e-8)."""

    def __init__(self) -> None:
        self.m: list[torch.Tensor] | None = None
        self.s: list[torch.Tensor] | None = None
        self.t = 0

    def step(self, w: list[torch.Tensor], g: list[torch.Tensor]) -> list[torch.Tensor]:
        self.t += 1
        zeros = [torch.zeros_like(gi) for gi in g]
        self.m = [0.9 * mi + 0.1 * gi for mi, gi in zip(self.m or zeros, g, strict=True)]
        self.s = [0.999 * si + 0.001 * gi * gi for si, gi in zip(self.s or zeros, g, strict=True)]
        c1, c2 = 1 - 0.9**self.t, 1 - 0.999**self.t
        return [
            wi * (1 - LR * WD) - (LR / c1) * mi / (si.sqrt() / math.sqrt(c2) + 1e-8)
            for wi, mi, si in zip(w, self.m, self.s, strict=True)
        ]


def initial_weights() -> list[torch.Tensor]:
    return [p.detach().clone() for p in model().parameters()]


def run(optimizer_class, rho: float, steps: int = STEPS, base: str = "momentum", scheduler=None, **options):
    """The optimizer under test on the float64 model, ``steps`` steps; its final weights and the optimizer."""
    net = model()
    if base == "momentum":
        base_optimizer = torch.optim.SGD(net.parameters(), lr=LR, momentum=MU, weight_decay=WD)
    else:
        base_optimizer = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=WD)
    optimizer = optimizer_class(
        list(net.named_parameters()),
        base_optimizer=base_optimizer,
        scheduler=scheduler or Constant(rho=rho),
        **options,
    )
    calls = []
    for step in range(steps):
        closure = BatchClosure(net, F.cross_entropy, *batch(step))
        optimizer.step(closure)
        calls.append(closure.calls)
    return [p.detach().clone() for p in net.parameters()], optimizer, calls


def assert_close(actual: list[torch.Tensor], expected: list[torch.Tensor], atol: float = 1e-10) -> None:
    for name, a, e in zip(NAMES, actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=0, atol=atol, msg=name)


def differ(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


# --- F-SAM --------------------------------------------------------------------------------------------


def fsam_by_hand(rho: float, sigma: float, lmbda: float, form: str) -> list[torch.Tensor]:
    """F-SAM's step: m_t = lambda m_{t-1} + (1 - lambda) g_t, d_t = g_t - sigma m_t (paper; m_{-1} = 0), or
    d_t = g_t - sigma m_{t-1} with m_0 = g_0, d_0 = g_0 (the reference code); e = rho d / ||d||; momentum SGD
    with the gradient at w + e."""
    w, sgd, m = initial_weights(), MomentumSGD(), None
    for step in range(STEPS):
        g = gradient(w, step)
        if form == "paper":
            previous = m if m is not None else [torch.zeros_like(gi) for gi in g]
            m = [lmbda * mi + (1 - lmbda) * gi for mi, gi in zip(previous, g, strict=True)]
            d = [gi - sigma * mi for gi, mi in zip(g, m, strict=True)]
        elif m is None:
            m, d = g, g
        else:
            d = [gi - sigma * mi for gi, mi in zip(g, m, strict=True)]
            m = [lmbda * mi + (1 - lmbda) * gi for mi, gi in zip(m, g, strict=True)]
        length = norm(d)
        e = [rho * di / (length + 1e-12) for di in d]
        w = sgd.step(w, gradient([wi + ei for wi, ei in zip(w, e, strict=True)], step))
    return w


@pytest.mark.parametrize("form", ["paper", "code"])
@pytest.mark.parametrize("sigma", [1.0, 0.6])
def test_fsam_is_its_update_rule_written_out_in_float64(form, sigma):
    expected = fsam_by_hand(0.3, sigma, 0.8, form)
    actual, optimizer, calls = run(FriendlySAM, 0.3, sigma=sigma, lmbda=0.8, form=form)
    assert_close(actual, expected)
    assert calls == [2] * STEPS and optimizer.last_step.perturbed
    torch.testing.assert_close(optimizer.last_step.extras["perturbation_norm"], torch.tensor(0.3).double())


def test_fsam_paper_and_code_forms_are_different_rules():
    """The test above can tell the two forms apart: they give different weights (and SAM's differ from both)."""
    paper = fsam_by_hand(0.3, 0.6, 0.8, "paper")
    assert differ(paper, fsam_by_hand(0.3, 0.6, 0.8, "code")) > 1e-6
    sam, _, _ = run(SAM, 0.3)
    assert differ(paper, sam) > 1e-6


# --- VaSSO --------------------------------------------------------------------------------------------


def vasso_by_hand(rho: float, theta: float, init: str) -> list[torch.Tensor]:
    """VaSSO's step: d_t = (1 - theta) d_{t-1} + theta g_t from d_0 = g_0 (the code) or d_{-1} = 0;
    e = rho d / ||d||; momentum SGD with the gradient at w + e."""
    w, sgd, d = initial_weights(), MomentumSGD(), None
    for step in range(STEPS):
        g = gradient(w, step)
        if d is None:
            d = g if init == "gradient" else [theta * gi for gi in g]
        else:
            d = [(1 - theta) * di + theta * gi for di, gi in zip(d, g, strict=True)]
        length = norm(d)
        e = [rho * di / (length + 1e-12) for di in d]
        w = sgd.step(w, gradient([wi + ei for wi, ei in zip(w, e, strict=True)], step))
    return w


@pytest.mark.parametrize("init", ["gradient", "zero"])
def test_vasso_is_its_update_rule_written_out_in_float64(init):
    expected = vasso_by_hand(0.3, 0.4, init)
    actual, optimizer, calls = run(VaSSO, 0.3, theta=0.4, init=init)
    assert_close(actual, expected)
    assert calls == [2] * STEPS and optimizer.last_step.perturbed
    assert differ(expected, vasso_by_hand(0.3, 0.4, "zero" if init == "gradient" else "gradient")) > 1e-6


def test_vasso_with_theta_one_is_sam():
    sam, _, _ = run(SAM, 0.3)
    vasso, _, _ = run(VaSSO, 0.3, theta=1.0)
    assert_close(vasso, sam, atol=1e-12)


# --- Momentum-SAM -------------------------------------------------------------------------------------


def msam_by_hand(rho: float, base: str) -> list[torch.Tensor]:
    """MSAM's step: the one gradient at w - rho v / ||v|| (v: the momentum before the step, SGD's v or AdamW's
    first moment m; none on the first step), and the base optimizer's step from w with it."""
    w = initial_weights()
    optimizer = MomentumSGD() if base == "momentum" else HandAdamW()
    for step in range(STEPS):
        v = optimizer.v if base == "momentum" else optimizer.m
        if v is None:
            at = w
        else:
            length = norm(v)
            at = [wi - rho * vi / (length + 1e-12) for wi, vi in zip(w, v, strict=True)]
        w = optimizer.step(w, gradient(at, step))
    return w


@pytest.mark.parametrize("base", ["momentum", "adamw"])
def test_msam_is_its_update_rule_written_out_in_float64(base):
    expected = msam_by_hand(0.5, base)
    actual, optimizer, calls = run(MomentumSAM, 0.5, base=base)
    assert_close(actual, expected)
    assert calls == [1] * STEPS  # one gradient per step
    info = optimizer.last_step
    assert not info.perturbed and info.rho == 0.0  # no second pass: %SAM counts it as a one-pass step
    torch.testing.assert_close(info.extras["perturbation_norm"], torch.tensor(0.5).double())
    assert info.extras["msam_rho"] == 0.5
    # the gradient at the perturbed point differs from the clean one: the weights would differ without it
    plain, _, _ = run(ERM, 0.0, base=base, scheduler=Never())
    assert differ(expected, plain) > 1e-6


def test_msam_first_step_is_the_base_optimizers_and_weights_are_w_after_each_step():
    """No momentum before the first step: plain gradient at w. After every step the weights are the base
    optimizer's update of w (restored bit for bit), not the perturbed point the reference code leaves."""
    first, optimizer, _ = run(MomentumSAM, 0.5, steps=1)
    plain, _, _ = run(ERM, 0.0, steps=1, scheduler=Never())
    assert all(torch.equal(a, b) for a, b in zip(first, plain, strict=True))
    assert float(optimizer.last_step.extras["perturbation_norm"]) == 0.0
    w, sgd = initial_weights(), MomentumSGD()
    w = sgd.step(w, gradient(w, 0))
    length = norm(sgd.v)
    at = [wi - 0.5 * vi / (length + 1e-12) for wi, vi in zip(w, sgd.v, strict=True)]
    expected = sgd.step(w, gradient(at, 1))
    second, _, _ = run(MomentumSAM, 0.5, steps=2)
    assert_close(second, expected)


def test_msam_without_a_momentum_is_the_base_optimizer():
    """SGD with momentum 0 keeps no buffer: every step takes the plain gradient at w."""
    net, reference = model(), model()
    optimizer = MomentumSAM(
        list(net.named_parameters()),
        base_optimizer=torch.optim.SGD(net.parameters(), lr=LR),
        scheduler=Constant(rho=0.5),
    )
    base = torch.optim.SGD(reference.parameters(), lr=LR)
    for step in range(3):
        optimizer.step(BatchClosure(net, F.cross_entropy, *batch(step)))
        BatchClosure(reference, F.cross_entropy, *batch(step))()
        base.step()
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), reference.parameters(), strict=True))


# --- rho = 0 and memory -------------------------------------------------------------------------------

VARIANTS = [
    (FriendlySAM, {"form": "paper"}),
    (FriendlySAM, {"form": "code", "sigma": 0.6}),
    (VaSSO, {"init": "gradient"}),
    (VaSSO, {"init": "zero"}),
    (MomentumSAM, {}),
]


@pytest.mark.parametrize(("optimizer_class", "options"), VARIANTS, ids=lambda v: str(v))
@pytest.mark.parametrize("base", ["momentum", "adamw"])
def test_rho_zero_is_the_base_optimizer_bit_for_bit(optimizer_class, options, base):
    expected, _, _ = run(ERM, 0.0, base=base, scheduler=Never())
    actual, _, _ = run(optimizer_class, 0.0, base=base, **options)
    assert all(torch.equal(a, b) for a, b in zip(actual, expected, strict=True))


#: Weight copies each holds beyond momentum SGD's buffer: the backup of w, and F-SAM's m or VaSSO's d.
COPIES = {FriendlySAM: 2, VaSSO: 2, MomentumSAM: 1}


@pytest.mark.parametrize("optimizer_class", [FriendlySAM, VaSSO, MomentumSAM], ids=lambda c: c.__name__)
def test_memory_is_the_count_by_hand(optimizer_class):
    _, optimizer, _ = run(optimizer_class, 0.3)
    one_copy = sum(p.numel() * p.element_size() for p in model().parameters())
    assert optimizer_state_bytes(optimizer.base_optimizer) == one_copy  # SGD's momentum buffers
    assert optimizer_state_bytes(optimizer) == (1 + COPIES[optimizer_class]) * one_copy
