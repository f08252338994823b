"""ESAM (``harness_sam.esam``; Du et al., ICLR 2022, Alg. 1): one step against the algorithm written out by
hand in float64, the examples its second pass uses, its cost, its reductions to SAM and to the base
optimizer, and its seeds."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from harness_sam.esam import ESAM
from harness_sam.sam import SAM
from harness_schedules.basic import Constant
from torch import nn

from harness import ProtocolError, component_seed
from harness.contract.seeding import building_with
from harness.run.build import training_loss
from harness.run.closure import BatchClosure

LR, RHO, N = 0.1, 0.3, 12


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).double()


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    return torch.randn(N, 5, generator=generator, dtype=torch.float64), torch.randint(0, 3, (N,), generator=generator)


def esam(net: nn.Module, **options) -> ESAM:
    base = torch.optim.SGD(net.parameters(), lr=LR)
    return ESAM(list(net.named_parameters()), base_optimizer=base, scheduler=Constant(rho=RHO), **options)


def losses(net: nn.Module, weights: list[torch.Tensor], inputs, targets) -> torch.Tensor:
    return F.cross_entropy(
        torch.func.functional_call(net, dict(zip(NAMES, weights, strict=True)), (inputs,)), targets, reduction="none"
    )


NAMES = [name for name, _ in model().named_parameters()]


def by_hand(
    beta: float, gamma: float, seed: int, keep: str = "top"
) -> tuple[list[torch.Tensor], list[bool], list[int]]:
    """ESAM's step from Alg. 1: SWP chooses tensors, e = (rho / beta) g_S / ||g_S|| on them, SDS keeps the
    int(gamma n) examples whose loss rose most (``keep="bottom"``: those whose loss rose least, a wrong rule
    the test must tell apart), and SGD steps with their mean gradient at w + e."""
    net, (inputs, targets) = model(), batch()
    w = [p.detach().clone().requires_grad_(True) for p in net.parameters()]
    clean = losses(net, w, inputs, targets)
    g = torch.autograd.grad(clean.mean(), w)
    chosen = (torch.rand(len(w), generator=torch.Generator().manual_seed(component_seed(seed, "esam"))) < beta).tolist()
    norm = torch.sqrt(sum((gi**2).sum() for gi, c in zip(g, chosen, strict=True) if c))
    e = [RHO / beta * gi / norm if c else torch.zeros_like(gi) for gi, c in zip(g, chosen, strict=True)]
    moved = [(wi + ei).detach().requires_grad_(True) for wi, ei in zip(w, e, strict=True)]
    rise = losses(net, moved, inputs, targets).detach() - clean.detach()
    k = int(gamma * N)
    order = torch.argsort(rise, descending=keep == "top")[:k]
    gs = torch.autograd.grad(losses(net, moved, inputs[order], targets[order]).mean(), moved)
    return [(wi - LR * gi).detach() for wi, gi in zip(w, gs, strict=True)], chosen, sorted(order.tolist())


def one_step(**options) -> tuple[nn.Module, ESAM, BatchClosure]:
    net, (inputs, targets) = model(), batch()
    optimizer = esam(net, **options)
    closure = BatchClosure(net, F.cross_entropy, inputs, targets)
    optimizer.step(closure)
    return net, optimizer, closure


@pytest.mark.parametrize(("beta", "gamma", "seed"), [(1.0, 0.5, 3), (0.5, 0.5, 3), (0.5, 0.25, 11), (0.7, 1.0, 5)])
def test_one_step_is_algorithm_1_written_out_by_hand(beta, gamma, seed):
    expected, chosen, _ = by_hand(beta, gamma, seed)
    net, optimizer, _ = one_step(beta=beta, gamma=gamma, seed=seed)
    assert optimizer.last_step.extras["perturbed_tensors"] == sum(chosen)
    for name, actual, want in zip(NAMES, net.parameters(), expected, strict=True):
        torch.testing.assert_close(actual.detach(), want, rtol=0, atol=1e-12, msg=name)


def test_the_second_pass_uses_the_gamma_fraction_whose_loss_rose_most():
    """Recorded at the model: the second backward pass sees exactly the int(gamma n) examples of the largest
    rise, and the update differs from the one the examples of the smallest rise would give."""
    _, _, top = by_hand(1.0, 0.5, 3)
    _, _, bottom = by_hand(1.0, 0.5, 3, keep="bottom")
    assert top != bottom
    net, (inputs, targets) = model(), batch()
    seen: list[torch.Tensor] = []
    net[0].register_forward_hook(lambda module, args, out: seen.append(args[0].detach().clone()))
    esam(net, beta=1.0, gamma=0.5, seed=3).step(BatchClosure(net, F.cross_entropy, inputs, targets))
    assert [len(x) for x in seen] == [N, N, N // 2]  # pass 1, the forward pass at w + e, pass 2
    rows = sorted(int((inputs == row).all(dim=1).nonzero()) for row in seen[2])
    assert rows == top


def test_a_step_costs_one_plus_gamma_gradient_evaluations_and_one_forward_pass():
    _, optimizer, closure = one_step(beta=0.6, gamma=0.25)
    assert (closure.calls, closure.forward_only) == (2, 1)
    assert closure.evaluations == pytest.approx(1.25)
    assert optimizer.last_step.extras["gradient_evaluations"] == pytest.approx(1.25)
    assert optimizer.last_step.perturbed


def test_beta_and_gamma_one_is_sam_and_rho_zero_is_the_base_optimizer():
    sam_net, (inputs, targets) = model(), batch()
    SAM(
        list(sam_net.named_parameters()),
        base_optimizer=torch.optim.SGD(sam_net.parameters(), lr=LR),
        scheduler=Constant(rho=RHO),
    ).step(BatchClosure(sam_net, F.cross_entropy, inputs, targets))
    esam_net, _, closure = one_step(beta=1.0, gamma=1.0)
    assert closure.forward_only == 0
    for a, b in zip(esam_net.parameters(), sam_net.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-14)
    plain, zero = model(), model()
    torch.optim.SGD(plain.parameters(), lr=LR).zero_grad()
    F.cross_entropy(plain(inputs), targets).backward()
    torch.optim.SGD(plain.parameters(), lr=LR).step()
    base = torch.optim.SGD(zero.parameters(), lr=LR)
    ESAM(list(zero.named_parameters()), base_optimizer=base, scheduler=Constant(rho=0.0), gamma=0.5).step(
        BatchClosure(zero, F.cross_entropy, inputs, targets)
    )
    for a, b in zip(zero.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-14)


def test_the_chosen_tensors_come_from_the_run_seed_unless_a_seed_pins_them():
    def chosen(run_seed: int, seed: int | None) -> list[list[bool]]:
        with building_with(run_seed):
            optimizer = esam(model(), beta=0.5, seed=seed)
        return [optimizer.chosen(40) for _ in range(3)]

    assert chosen(0, None) == chosen(0, None)
    assert chosen(0, None) != chosen(1, None)
    assert chosen(0, 4) == chosen(1, 4)


def test_the_per_example_loss_is_the_training_loss_without_its_l2_term():
    net, (inputs, targets) = model(), batch()
    loss_fn = training_loss(0.1, 5e-4, list(net.parameters()))
    loss, per_example = BatchClosure(net, loss_fn, inputs, targets).with_sample_losses()
    smoothed = F.cross_entropy(net(inputs), targets, label_smoothing=0.1, reduction="none")
    torch.testing.assert_close(per_example, smoothed.detach(), rtol=0, atol=1e-14)
    l2 = 0.5 * 5e-4 * sum((p.detach() ** 2).sum() for p in net.parameters())
    torch.testing.assert_close(loss, smoothed.mean().detach() + l2, rtol=0, atol=1e-14)


@pytest.mark.parametrize(("options", "message"), [({"beta": 0.0}, "beta 0.0"), ({"gamma": 1.5}, "gamma 1.5")])
def test_fractions_outside_0_1_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        esam(model(), **options)


def test_a_plain_closure_cannot_select_examples():
    net, (inputs, targets) = model(), batch()

    def closure():
        net.zero_grad()
        loss = F.cross_entropy(net(inputs), targets)
        loss.backward()
        return loss

    with pytest.raises(ProtocolError, match="needs the harness closure"):
        esam(net).step(closure)
    esam(net, gamma=1.0).step(closure)  # no selection: any closure will do
