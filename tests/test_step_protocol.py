"""The sharpness-aware step protocol: SAM math, exact restore, BatchNorm policy, RNG replay, counts.

Every expected value is computed independently of the code under test: closed forms on a quadratic,
a base optimizer stepped by hand on recorded gradients, BatchNorm's running-average formula.
"""

from __future__ import annotations

import copy

import pytest
import torch
from harness_sam.erm import ERM
from harness_sam.sam import SAM
from harness_schedules.basic import Constant, Never
from torch import nn

from harness.contract.held import optimizer_state_bytes
from harness.contract.optim import StepContext
from harness.errors import ProtocolError
from harness.run.build import build_base_optimizer
from harness.run.closure import BatchClosure, batchnorm_modules


class Quadratic(nn.Module):
    """f(w) = 1/2 w^T A w, written as a model whose 'logits' are the loss itself."""

    def __init__(self, matrix: torch.Tensor, start: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("matrix", matrix)
        self.w = nn.Parameter(start.clone())

    def forward(self, _inputs: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.w @ self.matrix @ self.w


def quadratic_closure(model: Quadratic) -> BatchClosure:
    dummy = torch.zeros(1, dtype=torch.float64)
    return BatchClosure(model, lambda loss, _target: loss, dummy, dummy)


@pytest.fixture
def quadratic() -> Quadratic:
    generator = torch.Generator().manual_seed(0)
    root = torch.randn(4, 4, generator=generator, dtype=torch.float64)
    return Quadratic(
        root @ root.T + torch.eye(4, dtype=torch.float64), torch.randn(4, generator=generator, dtype=torch.float64)
    )


def make_sam(model: nn.Module, rho: float, lr: float = 0.1, momentum: float = 0.0, m: int = 0) -> SAM:
    base = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    return SAM(list(model.parameters()), base_optimizer=base, scheduler=Constant(rho), m=m)


def test_one_sam_step_on_a_quadratic_equals_the_closed_form(quadratic):
    rho, lr = 0.3, 0.1
    matrix, w = quadratic.matrix, quadratic.w.detach().clone()
    gradient = matrix @ w
    perturbed = w + rho * gradient / gradient.norm()
    expected = w - lr * (matrix @ perturbed)  # SGD on the gradient at w + e (SAM eq. 3)

    optimizer = make_sam(quadratic, rho, lr)
    closure = quadratic_closure(quadratic)
    loss = optimizer.step(closure)

    torch.testing.assert_close(quadratic.w.detach(), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(loss, 0.5 * w @ matrix @ w)
    assert closure.calls == 2
    info = optimizer.last_step
    assert info.perturbed and info.rho == rho
    torch.testing.assert_close(info.extras["perturbation_norm"], torch.tensor(rho, dtype=torch.float64))
    torch.testing.assert_close(info.extras["grad_norm"], gradient.norm())


def test_scheduler_sees_step_lr_and_squared_gradient_norm(quadratic):
    seen: list[StepContext] = []

    class Recording(Constant):
        def decide(self, ctx):
            seen.append(ctx)
            return super().decide(ctx)

    base = torch.optim.SGD(quadratic.parameters(), lr=0.05)
    optimizer = SAM(list(quadratic.parameters()), base_optimizer=base, scheduler=Recording(0.1))
    optimizer.total_steps = 7
    expected_sq_norm = (quadratic.matrix @ quadratic.w.detach()).pow(2).sum()
    optimizer.step(quadratic_closure(quadratic))
    optimizer.step(quadratic_closure(quadratic))
    assert [c.step for c in seen] == [0, 1] and {c.total_steps for c in seen} == {7}
    assert seen[0].lr == 0.05
    torch.testing.assert_close(seen[0].grad_sq_norm, expected_sq_norm)


def digits_like_batch(seed: int = 0, n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=generator), torch.randint(0, 10, (n,), generator=generator)


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    from harness_vision.small_models import small_cnn as factory

    return factory(num_classes=10, input_shape=(1, 8, 8), channels=8)


def train_steps(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int) -> list[int]:
    calls = []
    for step in range(steps):
        inputs, targets = digits_like_batch(step)
        closure = BatchClosure(model, nn.functional.cross_entropy, inputs, targets, batchnorm_modules(model))
        optimizer.step(closure)
        calls.append(closure.calls)
    return calls


@pytest.mark.parametrize(
    "base",
    [
        {"name": "momentum", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
        {"name": "adamw", "lr": 1e-3, "weight_decay": 0.05},
    ],
)
def test_sam_with_rho_zero_reproduces_its_base_optimizer_bit_for_bit(base):
    reference, candidate = small_cnn(), small_cnn()
    erm_base = build_base_optimizer(reference, dict(base))
    sam_base = build_base_optimizer(candidate, dict(base))
    erm = ERM([p for g in erm_base.param_groups for p in g["params"]], base_optimizer=erm_base, scheduler=Never())
    sam = SAM([p for g in sam_base.param_groups for p in g["params"]], base_optimizer=sam_base, scheduler=Constant(0.0))

    assert train_steps(reference, erm, 10) == [1] * 10  # ERM: one gradient evaluation per step
    assert train_steps(candidate, sam, 10) == [2] * 10  # SAM: two
    for (name, expected), actual in zip(reference.state_dict().items(), candidate.state_dict().values(), strict=True):
        assert torch.equal(expected, actual), name


class BranchyNet(nn.Module):
    """A network whose second branch is used on odd forward calls only (unused in SAM's second pass)."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Linear(6, 6)
        self.branch = nn.Linear(6, 6)
        self.head = nn.Linear(6, 3)
        self.calls = 0

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        hidden = torch.tanh(self.trunk(inputs))
        if self.calls % 2 == 1:
            hidden = hidden + torch.tanh(self.branch(hidden))
        return self.head(hidden)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_weights_after_a_step_are_the_base_update_of_the_unperturbed_weights(momentum):
    torch.manual_seed(1)
    model = BranchyNet()
    inputs, targets = torch.randn(16, 6), torch.randint(0, 3, (16,))
    optimizer = make_sam(model, rho=0.5, lr=0.1, momentum=momentum)
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    seen: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
    base_step = optimizer.base_optimizer.step

    def recording_step(*args, **kwargs):
        for name, p in model.named_parameters():
            seen[name] = (p.detach().clone(), None if p.grad is None else p.grad.clone())
        return base_step(*args, **kwargs)

    optimizer.base_optimizer.step = recording_step
    optimizer.step(BatchClosure(model, nn.functional.cross_entropy, inputs, targets))

    assert seen["branch.weight"][1] is None  # the branch got no gradient in the second pass
    for name, (weights, _) in seen.items():
        assert torch.equal(weights, start[name]), f"{name} was not restored exactly before the base step"
    # The same base optimizer applied by hand to the unperturbed weights and the recorded gradients.
    replica = BranchyNet()
    replica.load_state_dict({k: v for k, v in start.items()})
    for name, p in replica.named_parameters():
        p.grad = seen[name][1]
    torch.optim.SGD(replica.parameters(), lr=0.1, momentum=momentum).step()
    for (name, expected), actual in zip(replica.named_parameters(), model.parameters(), strict=True):
        assert torch.equal(expected, actual), name


def test_batchnorm_running_statistics_change_once_per_step():
    model = small_cnn()
    inputs, targets = digits_like_batch()
    bn = model[1]
    momentum = bn.momentum
    with torch.no_grad():
        features = model[0](inputs)
    batch_mean = features.mean(dim=(0, 2, 3))
    batch_var = features.var(dim=(0, 2, 3), unbiased=True)
    expected_mean = (1 - momentum) * bn.running_mean + momentum * batch_mean
    expected_var = (1 - momentum) * bn.running_var + momentum * batch_var

    optimizer = make_sam(model, rho=0.05)
    closure = BatchClosure(model, nn.functional.cross_entropy, inputs, targets, batchnorm_modules(model))
    optimizer.step(closure)

    assert closure.calls == 2
    assert int(bn.num_batches_tracked) == 1
    torch.testing.assert_close(bn.running_mean, expected_mean)
    torch.testing.assert_close(bn.running_var, expected_var)
    assert all(m.track_running_stats for m in batchnorm_modules(model))  # the policy is undone


def test_m_sharpness_running_statistics_are_the_mean_over_sub_batches():
    """Each sub-batch's clean pass is one device of SAM's data parallelism (003 Sec. 4.1): the running
    statistics take one update with the sub-batches' mean batch statistics, not the first m examples'."""
    model = small_cnn()
    inputs, targets = digits_like_batch(n=30)
    bn, m = model[1], 8  # sub-batches of 8, 8, 8 and 6 examples, weighted by size as their gradients are
    momentum = bn.momentum
    with torch.no_grad():
        features = model[0](inputs).split(m)
    weights = torch.tensor([len(f) / 30 for f in features])
    batch_mean = (torch.stack([f.mean(dim=(0, 2, 3)) for f in features]) * weights[:, None]).sum(0)
    batch_var = (torch.stack([f.var(dim=(0, 2, 3), unbiased=True) for f in features]) * weights[:, None]).sum(0)
    expected_mean = (1 - momentum) * bn.running_mean + momentum * batch_mean
    expected_var = (1 - momentum) * bn.running_var + momentum * batch_var

    optimizer = make_sam(model, rho=0.05, m=m)
    closure = BatchClosure(model, nn.functional.cross_entropy, inputs, targets, batchnorm_modules(model))
    optimizer.step(closure)

    assert closure.calls == 2 * len(features)
    assert int(bn.num_batches_tracked) == 1
    torch.testing.assert_close(bn.running_mean, expected_mean)
    torch.testing.assert_close(bn.running_var, expected_var)
    assert all(m.track_running_stats for m in batchnorm_modules(model))


class DropoutProbe(nn.Module):
    """Dropout that records its masks, to compare the passes of one step."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 4)
        self.masks: list[torch.Tensor] = []

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        mask = (torch.rand_like(inputs) > 0.5).float()
        self.masks.append(mask)
        return self.linear(inputs * mask)


def test_every_pass_of_a_step_draws_the_same_random_numbers():
    torch.manual_seed(3)
    model = DropoutProbe()
    optimizer = make_sam(model, rho=0.1)
    for _ in range(2):
        optimizer.step(BatchClosure(model, nn.functional.cross_entropy, torch.randn(5, 8), torch.randint(0, 4, (5,))))
    first, second, third, fourth = model.masks
    assert torch.equal(first, second) and torch.equal(third, fourth)
    assert not torch.equal(first, third)  # a new step draws new masks


def test_a_step_without_closure_is_a_protocol_error(quadratic):
    with pytest.raises(ProtocolError, match="closure"):
        make_sam(quadratic, rho=0.1).step()


def test_base_optimizer_must_own_the_same_parameters(quadratic):
    other = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="same parameters"):
        SAM(
            list(quadratic.parameters()),
            base_optimizer=torch.optim.SGD(other.parameters(), lr=0.1),
            scheduler=Constant(),
        )


def test_optimizer_state_bytes_counts_base_state_and_the_weight_backup():
    model = nn.Linear(10, 5)  # 55 float32 parameters
    weights = 55 * 4
    optimizer = make_sam(model, rho=0.05, momentum=0.9)
    inputs, targets = torch.randn(4, 10), torch.randint(0, 5, (4,))
    optimizer.step(BatchClosure(model, nn.functional.cross_entropy, inputs, targets))
    assert optimizer_state_bytes(optimizer) == 2 * weights  # momentum buffers + backup
    erm_model = nn.Linear(10, 5)
    base = torch.optim.SGD(erm_model.parameters(), lr=0.1, momentum=0.9)
    erm = ERM(list(erm_model.parameters()), base_optimizer=base, scheduler=Never())
    erm.step(BatchClosure(erm_model, nn.functional.cross_entropy, inputs, targets))
    assert optimizer_state_bytes(erm) == weights


def test_state_dict_round_trip_resumes_the_same_trajectory():
    def run(split: int | None) -> dict[str, torch.Tensor]:
        model = small_cnn()
        optimizer = make_sam(model, rho=0.05, momentum=0.9)
        for step in range(6):
            if step == split:
                saved_model, saved_optimizer = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
                model = small_cnn()
                model.load_state_dict(saved_model)
                optimizer = make_sam(model, rho=0.05, momentum=0.9)
                optimizer.load_state_dict(saved_optimizer)
            inputs, targets = digits_like_batch(step)
            optimizer.step(BatchClosure(model, nn.functional.cross_entropy, inputs, targets, batchnorm_modules(model)))
        assert optimizer.steps_taken == 6
        return model.state_dict()

    straight, resumed = run(None), run(3)
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name
