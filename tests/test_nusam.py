"""nuSAM (plugins/harness_sam/nusam.py): power iteration, in-place rank-1 perturbation, memory, filter, state.

Expected values are computed independently of the code under test: the exact SVD (torch.linalg.svd) of
a gradient with a known spectrum, a base optimizer stepped by hand on gradients recomputed at the
recorded perturbed weights, an ERM twin for the rho=0 and memory comparisons, and an uninterrupted run
for the state round trip.
"""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from harness_sam.erm import ERM
from harness_sam.nusam import NuSAM
from harness_schedules.basic import Constant, Never
from torch import nn
from torch.func import functional_call

from harness import PerturbationScheduler
from harness.contract.held import held_tensors, optimizer_state_bytes
from harness.run.closure import BatchClosure

# The defaults the plugin registers (YAML-friendly: a list for exclude).
DEFAULTS = {
    "power_iterations": 1,
    "tau": 1e-12,
    "normalized": False,
    "exclude": ["embed", "pos_embed", "cls_token"],
    "include_conv": False,
    "seed": 0,
}


# --- a loss whose gradient is a fixed matrix --------------------------------------------------------


class FixedGradients(nn.Module):
    """loss = sum_i <W_i, G_i>: the gradient with respect to W_i is G_i wherever the weights are.

    Records the weights at every forward pass, so ``seen[1] - seen[0]`` is the perturbation of a step.
    """

    def __init__(self, gradients: list[torch.Tensor], seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.gradients = list(gradients)
        self.weights = nn.ParameterList(
            [nn.Parameter(torch.randn(g.shape, generator=generator, dtype=g.dtype)) for g in gradients]
        )
        self.seen: list[list[torch.Tensor]] = []

    def forward(self, _inputs: torch.Tensor) -> torch.Tensor:
        self.seen.append([w.detach().clone() for w in self.weights])
        return sum((w * g).sum() for w, g in zip(self.weights, self.gradients, strict=True))


def loss_closure(model: nn.Module) -> BatchClosure:
    dummy = torch.zeros(1, dtype=torch.float64)
    return BatchClosure(model, lambda loss, _target: loss, dummy, dummy)


def with_spectrum(rows: int, cols: int, singular_values: list[float], seed: int) -> torch.Tensor:
    """A float64 matrix U diag(s) V^T with orthonormal random U, V and the given singular values."""
    generator = torch.Generator().manual_seed(seed)
    k = len(singular_values)
    left, _ = torch.linalg.qr(torch.randn(rows, k, generator=generator, dtype=torch.float64))
    right, _ = torch.linalg.qr(torch.randn(cols, k, generator=generator, dtype=torch.float64))
    return left @ torch.diag(torch.tensor(singular_values, dtype=torch.float64)) @ right.T


def top_rank_one(matrix: torch.Tensor) -> torch.Tensor:
    """u1 v1^T of the exact SVD; u1^T G v1 = s1 > 0, so it is the ascent direction."""
    left, _, right_t = torch.linalg.svd(matrix)
    return torch.outer(left[:, 0], right_t[0])


def make_nusam(model: nn.Module, rho: float, lr: float = 0.0, named: bool = True, **hparams) -> NuSAM:
    base = torch.optim.SGD(model.parameters(), lr=lr)
    params = list(model.named_parameters()) if named else list(model.parameters())
    return NuSAM(params, base_optimizer=base, scheduler=Constant(rho), **{**DEFAULTS, **hparams})


def perturbations(model: FixedGradients, step: int) -> list[torch.Tensor]:
    """The perturbation of each matrix on optimizer step ``step`` (two forward passes per step)."""
    clean, perturbed = model.seen[2 * step], model.seen[2 * step + 1]
    return [p - c for c, p in zip(clean, perturbed, strict=True)]


GAPPED = with_spectrum(7, 5, [4.0, 2.0, 1.0, 0.5], seed=1)


def test_power_iteration_converges_to_the_top_singular_pair():
    rho = 0.1
    expected = rho * top_rank_one(GAPPED)
    errors = []
    for iterations in (1, 5, 50):
        model = FixedGradients([GAPPED])
        optimizer = make_nusam(model, rho, power_iterations=iterations)
        optimizer.step(loss_closure(model))
        (eps,) = perturbations(model, 0)
        assert (eps * GAPPED).sum() > 0  # ascent direction
        torch.testing.assert_close(torch.linalg.matrix_norm(eps), torch.tensor(rho, dtype=torch.float64))
        errors.append(float(torch.linalg.matrix_norm(eps - expected)) / rho)
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 1e-5, errors
    assert errors[0] > 1e-3  # one iteration from a random start is not yet converged: the test can tell


def test_warm_start_one_iteration_per_step_converges_and_equals_cold_start_iterations():
    rho, steps = 0.1, 30
    expected = rho * top_rank_one(GAPPED)
    model = FixedGradients([GAPPED])
    optimizer = make_nusam(model, rho, lr=0.01, power_iterations=1)
    for _ in range(steps):
        optimizer.step(loss_closure(model))
    errors = [float(torch.linalg.matrix_norm(perturbations(model, k)[0] - expected)) / rho for k in range(steps)]
    assert all(later <= earlier + 1e-12 for earlier, later in zip(errors, errors[1:], strict=False)), errors
    assert errors[-1] < 1e-9 and errors[0] > 1e-3, errors

    # T=1 warm-started over k steps is the same computation as T=k from the same initial u.
    cold = FixedGradients([GAPPED])
    make_nusam(cold, rho, power_iterations=5).step(loss_closure(cold))
    torch.testing.assert_close(perturbations(model, 4)[0], perturbations(cold, 0)[0], rtol=0, atol=1e-12)


class PerturbFrom(PerturbationScheduler):
    """No perturbation before step ``start`` (a delay), then a constant rho."""

    def __init__(self, start: int, rho: float) -> None:
        self.start, self.rho = start, rho

    def decide(self, ctx):
        return ctx.step >= self.start, self.rho


@pytest.mark.parametrize(("refresh", "iterations"), [(False, 1), (True, 5)])
def test_refresh_during_delay_warms_u_on_the_unperturbed_steps(refresh, iterations):
    """With the refresh, 4 delay steps and the first perturbed step are 5 warm-started power iterations:
    the first perturbation equals a cold start with T=5; without it, a cold start with T=1 (seed_nusam 3.5)."""
    rho, delay = 0.1, 4
    model = FixedGradients([GAPPED])
    base = torch.optim.SGD(model.parameters(), lr=0.0)
    params = list(model.named_parameters())
    hparams = {**DEFAULTS, "refresh_during_delay": refresh}
    optimizer = NuSAM(params, base_optimizer=base, scheduler=PerturbFrom(delay, rho), **hparams)
    for _ in range(delay + 1):
        optimizer.step(loss_closure(model))
    first = model.seen[delay + 1][0] - model.seen[delay][0]  # one pass per delay step, then clean and perturbed
    cold = FixedGradients([GAPPED])
    make_nusam(cold, rho, power_iterations=iterations).step(loss_closure(cold))
    torch.testing.assert_close(first, perturbations(cold, 0)[0], rtol=0, atol=1e-12)


def test_a_zero_gradient_keeps_the_warm_start_vector():
    rho = 0.1
    model = FixedGradients([torch.zeros(7, 5, dtype=torch.float64)])
    optimizer = make_nusam(model, rho)
    initial_u = optimizer._u[0].clone()
    optimizer.step(loss_closure(model))
    assert torch.equal(perturbations(model, 0)[0], torch.zeros(7, 5, dtype=torch.float64))
    assert float(optimizer.last_step.extras["perturbation_norm"]) == 0.0
    assert torch.equal(optimizer._u[0], initial_u)  # not collapsed to zero

    model.gradients = [GAPPED]
    optimizer.step(loss_closure(model))
    torch.testing.assert_close(torch.linalg.matrix_norm(perturbations(model, 1)[0]), torch.tensor(rho).double())


def test_plain_extras_report_rho_sqrt_l_and_the_matrix_count():
    rho = 0.2
    gradients = [GAPPED, with_spectrum(4, 6, [3.0, 1.0], seed=2), with_spectrum(3, 3, [1.0, 0.1], seed=3)]
    model = FixedGradients(gradients)
    optimizer = make_nusam(model, rho)
    optimizer.step(loss_closure(model))
    extras = optimizer.last_step.extras
    assert extras["perturbed_matrices"] == 3 and optimizer.last_step.perturbed
    measured = torch.linalg.vector_norm(torch.stack([e.norm() for e in perturbations(model, 0)]))
    torch.testing.assert_close(extras["perturbation_norm"], torch.tensor(rho * math.sqrt(3), dtype=torch.float64))
    torch.testing.assert_close(measured, torch.tensor(rho * math.sqrt(3), dtype=torch.float64))


def test_nusam_norm_has_global_norm_rho_and_layer_scales_proportional_to_sigma():
    rho = 0.3
    gradients = [with_spectrum(7, 5, [4.0, 1.0], seed=4), with_spectrum(5, 3, [3.0, 0.5], seed=5)]
    model = FixedGradients(gradients)
    optimizer = make_nusam(model, rho, normalized=True, power_iterations=60)
    optimizer.step(loss_closure(model))
    eps = perturbations(model, 0)
    # Appendix C.1, eq. 21 with the exact top singular values 4 and 3: scales 4/5 and 3/5 of rho.
    for e, g, share in zip(eps, gradients, (0.8, 0.6), strict=True):
        torch.testing.assert_close(e, rho * share * top_rank_one(g), rtol=0, atol=1e-9)
    global_norm = torch.linalg.vector_norm(torch.stack([e.norm() for e in eps]))
    torch.testing.assert_close(global_norm, torch.tensor(rho, dtype=torch.float64))
    torch.testing.assert_close(optimizer.last_step.extras["perturbation_norm"], torch.tensor(rho).double())


# --- a small MLP -----------------------------------------------------------------------------------


def mlp(dtype: torch.dtype = torch.float32, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(8, 16), nn.LayerNorm(16), nn.GELU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 4)
    ).to(dtype)


def batch(step: int, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1000 + step)
    return torch.randn(16, 8, generator=generator, dtype=dtype), torch.randint(0, 4, (16,), generator=generator)


def mlp_closure(model: nn.Module, step: int, dtype: torch.dtype = torch.float32) -> BatchClosure:
    inputs, targets = batch(step, dtype)
    return BatchClosure(model, nn.functional.cross_entropy, inputs, targets)


class Recorder:
    """Wraps a closure; keeps the weights and gradients of every pass by parameter name."""

    def __init__(self, model: nn.Module, closure: BatchClosure) -> None:
        self.model, self.closure = model, closure
        self.weights: list[dict[str, torch.Tensor]] = []
        self.grads: list[dict[str, torch.Tensor]] = []

    def __call__(self) -> torch.Tensor:
        self.weights.append({n: p.detach().clone() for n, p in self.model.named_parameters()})
        loss = self.closure()
        self.grads.append({n: p.grad.clone() for n, p in self.model.named_parameters() if p.grad is not None})
        return loss


def matrix_names(model: nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if p.ndim == 2]


def test_perturb_then_unperturb_restores_the_weights():
    model = mlp()
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = make_nusam(model, rho=0.5, lr=0.0)  # SGD with lr 0 leaves what descend restored
    recorder = Recorder(model, mlp_closure(model, 0))
    optimizer.step(recorder)
    assert optimizer._backup is None
    for name, p in model.named_parameters():
        moved = (recorder.weights[1][name] - original[name]).norm()
        if name in matrix_names(model):
            assert moved > 0.4, name  # the second pass ran at a perturbed point
            relative = float((p.detach() - original[name]).norm() / original[name].norm())
            assert relative < 1e-6, (name, relative)  # restored up to rounding (not bit for bit)
        else:
            assert moved == 0 and torch.equal(p.detach(), original[name]), name


def test_weights_after_a_step_are_the_base_optimizer_on_the_perturbed_point_gradient():
    rho, settings = 0.05, {"lr": 1e-2, "weight_decay": 0.05}
    model = mlp()
    reference = copy.deepcopy(model)
    base = torch.optim.AdamW(model.parameters(), **settings)
    optimizer = NuSAM(list(model.named_parameters()), base_optimizer=base, scheduler=Constant(rho), **DEFAULTS)
    inputs, targets = batch(0)
    recorder = Recorder(model, BatchClosure(model, nn.functional.cross_entropy, inputs, targets))
    optimizer.step(recorder)

    clean, perturbed = recorder.weights
    for name in matrix_names(model):  # each perturbation is rank 1 with Frobenius norm rho
        singular = torch.linalg.svdvals((perturbed[name] - clean[name]).double())
        assert abs(float(singular[0]) - rho) < 1e-5 and float(singular[1]) < 1e-6, (name, singular[:2])

    # Independently: the gradient at the recorded perturbed weights, then AdamW on the original weights.
    at = {name: w.clone().requires_grad_(True) for name, w in perturbed.items()}
    loss = nn.functional.cross_entropy(functional_call(reference, at, (inputs,)), targets)
    grads = torch.autograd.grad(loss, [at[name] for name, _ in reference.named_parameters()])
    for p, g in zip(reference.parameters(), grads, strict=True):
        p.grad = g
    torch.optim.AdamW(reference.parameters(), **settings).step()
    for (name, expected), actual in zip(reference.named_parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(actual.detach(), expected.detach(), rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("base_name", ["sgd", "momentum", "adamw"])
def test_state_is_the_base_state_plus_one_u_and_one_v_per_matrix(base_name):
    def base_for(model):
        if base_name == "sgd":
            return torch.optim.SGD(model.parameters(), lr=0.1)
        if base_name == "momentum":
            return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        return torch.optim.AdamW(model.parameters(), lr=1e-3)

    twin, model = mlp(), mlp()
    erm = ERM(list(twin.parameters()), base_optimizer=base_for(twin), scheduler=Never())
    optimizer = NuSAM(list(model.named_parameters()), base_optimizer=base_for(model), scheduler=Constant(0.05))
    for step in range(2):
        erm.step(mlp_closure(twin, step))
        optimizer.step(mlp_closure(model, step))

    matrices = [p for p in model.parameters() if p.ndim == 2]
    vector_floats = sum(p.shape[0] + p.shape[1] for p in matrices)
    extra = optimizer_state_bytes(optimizer) - optimizer_state_bytes(erm)
    assert extra == 4 * vector_floats  # at most sum(rows + cols) floats; here exactly that

    base_ptrs = {
        t.data_ptr() for s in optimizer.base_optimizer.state.values() for t in s.values() if torch.is_tensor(t)
    }
    params = list(model.parameters())
    own = [t for t in held_tensors(optimizer, params=params) if t.data_ptr() not in base_ptrs]
    smallest_matrix = min(p.numel() for p in matrices)
    assert own and all(t.ndim == 1 and t.numel() < smallest_matrix for t in own)
    assert optimizer._backup is None
    # Nothing else the optimizer keeps is a tensor of more than one dimension (no weight copy, no dense e).
    parameters = {id(p) for p in model.parameters()}
    for name, value in vars(optimizer).items():
        if name in ("base_optimizer", "param_groups", "state", "matrices", "_params"):
            continue
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if torch.is_tensor(item):
                assert id(item) in parameters or item.ndim <= 1, name


class Mixed(nn.Module):
    """Every kind of parameter: conv, embedding, 3-D token, linear weights and biases, LayerNorm."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 2, 3)
        self.embed = nn.Embedding(10, 6)
        self.cls_token = nn.Parameter(torch.randn(1, 1, 6))
        self.fc = nn.Linear(8, 6)
        self.norm = nn.LayerNorm(6)
        self.head = nn.Linear(6, 3)
        self.register_buffer("tokens", torch.arange(4))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        hidden = self.fc(self.conv(inputs).flatten(1)) + self.embed(self.tokens).mean(0) + self.cls_token.view(-1)
        return self.head(torch.tanh(self.norm(hidden)))


def mixed_step(named: bool, lr: float = 0.1, **hparams) -> tuple[Mixed, Recorder, dict[str, torch.Tensor]]:
    model = Mixed()
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = make_nusam(model, rho=0.1, lr=lr, named=named, **hparams)
    generator = torch.Generator().manual_seed(0)
    inputs, targets = torch.randn(5, 1, 4, 4, generator=generator), torch.randint(0, 3, (5,), generator=generator)
    recorder = Recorder(model, BatchClosure(model, nn.functional.cross_entropy, inputs, targets))
    optimizer.step(recorder)
    assert optimizer.last_step.extras["perturbed_matrices"] == len(optimizer.matrices)
    return model, recorder, original


def moved_in_second_pass(recorder: Recorder) -> set[str]:
    clean, perturbed = recorder.weights
    return {name for name in clean if not torch.equal(clean[name], perturbed[name])}


def test_only_two_dimensional_weight_matrices_are_perturbed():
    lr = 0.1
    model, recorder, original = mixed_step(named=True, lr=lr)
    assert moved_in_second_pass(recorder) == {"fc.weight", "head.weight"}
    # Parameters that are not perturbed are still updated, with their gradient from the second pass.
    second_grads = recorder.grads[1]
    for name, p in model.named_parameters():
        if name not in ("fc.weight", "head.weight"):
            expected = original[name] - lr * second_grads[name]
            torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-7, msg=name)


def test_without_names_the_filter_is_by_shape_only():
    _, recorder, _ = mixed_step(named=False)
    assert moved_in_second_pass(recorder) == {"fc.weight", "head.weight", "embed.weight"}


def test_include_conv_perturbs_the_reshaped_kernel_with_rank_one():
    _, recorder, _ = mixed_step(named=True, include_conv=True)
    assert moved_in_second_pass(recorder) == {"fc.weight", "head.weight", "conv.weight"}
    clean, perturbed = recorder.weights
    kernel = (perturbed["conv.weight"] - clean["conv.weight"]).reshape(2, -1).double()
    singular = torch.linalg.svdvals(kernel)
    assert abs(float(singular[0]) - 0.1) < 1e-6 and float(singular[1]) < 1e-7


def test_exclude_accepts_a_custom_list():
    _, recorder, _ = mixed_step(named=True, exclude=["head"])
    assert moved_in_second_pass(recorder) == {"fc.weight", "embed.weight"}


@pytest.mark.parametrize(
    "make_base",
    [
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=5e-4),
        lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.05),
    ],
    ids=["momentum", "adamw"],
)
def test_rho_zero_reproduces_the_base_optimizer_bit_for_bit(make_base):
    reference, candidate = mlp(), mlp()
    erm = ERM(list(reference.parameters()), base_optimizer=make_base(reference.parameters()), scheduler=Never())
    optimizer = NuSAM(
        list(candidate.named_parameters()), base_optimizer=make_base(candidate.parameters()), scheduler=Constant(0.0)
    )
    for step in range(20):
        erm.step(mlp_closure(reference, step))
        closure = mlp_closure(candidate, step)
        optimizer.step(closure)
        assert closure.calls == 2
    for (name, expected), actual in zip(reference.named_parameters(), candidate.parameters(), strict=True):
        assert torch.equal(expected, actual), name


class SkipFirst(PerturbationScheduler):
    """No perturbation on the first ``delay`` steps (the delay of the paper's preset), then rho."""

    def __init__(self, delay: int, rho: float) -> None:
        self.delay, self.rho = delay, rho

    def decide(self, ctx):
        return (False, 0.0) if ctx.step < self.delay else (True, self.rho)


def test_unperturbed_steps_are_plain_base_steps_and_leave_u_alone():
    model, twin = mlp(), mlp()
    optimizer = NuSAM(
        list(model.named_parameters()),
        base_optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        scheduler=SkipFirst(2, 0.05),
    )
    erm = ERM(list(twin.parameters()), base_optimizer=torch.optim.SGD(twin.parameters(), lr=0.1), scheduler=Never())
    initial_u = [u.clone() for u in optimizer._u]
    for step in range(2):
        closure = mlp_closure(model, step)
        optimizer.step(closure)
        erm.step(mlp_closure(twin, step))
        assert closure.calls == 1 and not optimizer.last_step.perturbed
    assert all(torch.equal(a, b) for a, b in zip(optimizer._u, initial_u, strict=True))
    for expected, actual in zip(twin.parameters(), model.parameters(), strict=True):
        assert torch.equal(expected, actual)
    closure = mlp_closure(model, 2)
    optimizer.step(closure)
    assert closure.calls == 2 and optimizer.last_step.perturbed
    assert not any(torch.equal(a, b) for a, b in zip(optimizer._u, initial_u, strict=True))


def build_run(seed: int, optimizer_seed: int) -> tuple[nn.Module, NuSAM]:
    model = mlp(torch.float64, seed=seed)
    base = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    optimizer = NuSAM(
        list(model.named_parameters()),
        base_optimizer=base,
        scheduler=Constant(0.1),
        **{**DEFAULTS, "seed": optimizer_seed},
    )
    return model, optimizer


def run_steps(model: nn.Module, optimizer: NuSAM, steps: range) -> None:
    for step in steps:
        optimizer.step(mlp_closure(model, step, torch.float64))


@pytest.mark.parametrize("restore_variant", [True, False])
def test_state_dict_round_trip_resumes_on_the_same_trajectory(restore_variant):
    straight, straight_opt = build_run(0, 0)
    run_steps(straight, straight_opt, range(8))

    first, first_opt = build_run(0, 0)
    run_steps(first, first_opt, range(4))
    buffer = io.BytesIO()
    torch.save({"model": first.state_dict(), "optimizer": first_opt.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer)

    resumed, resumed_opt = build_run(1, 99)  # another init and another u: everything must come from the checkpoint
    resumed.load_state_dict(checkpoint["model"])
    if not restore_variant:
        checkpoint["optimizer"]["variant"] = resumed_opt.variant_state_dict()
    resumed_opt.load_state_dict(checkpoint["optimizer"])
    assert resumed_opt.steps_taken == 4
    run_steps(resumed, resumed_opt, range(4, 8))

    gap = max(
        float((a - b).detach().abs().max()) for a, b in zip(straight.parameters(), resumed.parameters(), strict=True)
    )
    if restore_variant:
        assert gap < 1e-6
    else:
        assert gap > 1e-5  # control: without the warm-start vectors the trajectory differs


def test_loading_state_of_another_model_is_refused():
    _, optimizer = build_run(0, 0)
    with pytest.raises(ValueError, match="warm-start vectors"):
        optimizer.load_variant_state_dict({"u": optimizer.variant_state_dict()["u"][:-1]})


def test_bad_hyperparameters_are_refused():
    model = mlp()
    with pytest.raises(ValueError, match="power_iterations"):
        make_nusam(model, 0.1, power_iterations=0)
    with pytest.raises(ValueError, match="tau"):
        make_nusam(model, 0.1, tau=0.0)


def test_building_does_not_touch_the_global_rng():
    state = torch.get_rng_state()
    model = mlp()
    torch.set_rng_state(state)
    make_nusam(model, 0.1)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("normalized", [False, True])
def test_cuda_matches_cpu(normalized):
    results = []
    for device in ("cpu", "cuda"):
        model = mlp(torch.float64).to(device)
        optimizer = NuSAM(
            list(model.named_parameters()),
            base_optimizer=torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01),
            scheduler=Constant(0.1),
            normalized=normalized,
        )
        for step in range(3):
            inputs, targets = batch(step, torch.float64)
            optimizer.step(BatchClosure(model, nn.functional.cross_entropy, inputs.to(device), targets.to(device)))
        assert optimizer.last_step.extras["perturbation_norm"].device.type == device
        assert all(u.device.type == device for u in optimizer._u)
        results.append([p.detach().cpu() for p in model.parameters()])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
