"""Sharpness metrics (plugins/harness_sharpness) against values computed independently.

Exact Hessians come from ``torch.autograd.functional.hessian`` over the flattened parameter vector, SAM
sharpness on a quadratic from its closed form and from the secular equation of the trust-region
subproblem (scipy's ``brentq``), gradient statistics from the closed-form gradients of least squares.
"""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch
from scipy.optimize import brentq
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from harness.run.metrics import run_metrics

METRICS = ("hessian_max_eig", "hessian_trace", "sam_sharpness", "surrogate_gap", "grad_stats")
SMALL_BUDGETS = {
    "hessian_max_eig": {"max_iterations": 5, "top_k": 2},
    "hessian_trace": {"samples": 3},
    "sam_sharpness": {"steps": 2, "m": 8},
    "surrogate_gap": {},
    "grad_stats": {},
}


def tiny_problem() -> tuple[nn.Module, list, torch.Tensor, torch.Tensor]:
    """Linear(6, 12)-tanh-Linear(12, 3) in float64 (123 parameters), 40 examples in batches of 25 and 15."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 3)).double()
    inputs = torch.randn(40, 6, dtype=torch.float64)
    targets = torch.randint(0, 3, (40,))
    batches = [(inputs[:25], targets[:25]), (inputs[25:], targets[25:])]
    return model, batches, inputs, targets


def flat_loss(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor):
    """The mean loss over all examples as a function of the flattened parameter vector, and that vector."""
    names = [name for name, _ in model.named_parameters()]
    shapes = [param.shape for param in model.parameters()]
    point = torch.cat([param.detach().reshape(-1) for param in model.parameters()])

    def loss(vector: torch.Tensor) -> torch.Tensor:
        pieces = torch.split(vector, [math.prod(shape) for shape in shapes])
        params = {name: piece.view(shape) for name, piece, shape in zip(names, pieces, shapes, strict=True)}
        return F.cross_entropy(functional_call(model, params, (inputs,)), targets)

    return loss, point


def exact_spectrum(model, inputs, targets) -> tuple[torch.Tensor, float]:
    """Eigenvalues sorted by decreasing magnitude, and the trace, of the exact Hessian."""
    loss, point = flat_loss(model, inputs, targets)
    hessian = torch.autograd.functional.hessian(loss, point)
    eigenvalues = torch.linalg.eigvalsh(hessian)
    return eigenvalues[eigenvalues.abs().argsort(descending=True)], float(hessian.trace())


class Quadratic(nn.Module):
    """``1/2 w^T A w + b^T w`` whatever the input; with ``loss_fn = lambda out, y: out`` that is the loss."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("a", a)
        self.register_buffer("b", b)
        self.w = nn.Parameter(w.clone())

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.w @ self.a @ self.w + self.b @ self.w


def identity_loss(outputs, targets):
    return outputs


ONE_BATCH = [(torch.zeros(1), torch.zeros(1))]


def quadratic_problem(eigenvalues, seed: int = 1):
    """``A = Q diag(eigenvalues) Q^T`` with a random rotation ``Q``, a random ``b`` and the minimizer ``w*``."""
    generator = torch.Generator().manual_seed(seed)
    dim = len(eigenvalues)
    rotation, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
    a = rotation @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ rotation.T
    b = torch.randn(dim, generator=generator, dtype=torch.float64)
    w_star = -torch.linalg.solve(a, b)
    return a, b, rotation, w_star, generator


def ball_maximum(a: torch.Tensor, g: torch.Tensor, rho: float) -> float:
    """``max_{||e|| <= rho} g^T e + 1/2 e^T A e`` for PSD ``A`` with ``g`` not orthogonal to the top
    eigenvector: ``e = (mu I - A)^{-1} g`` on the sphere with ``mu > lambda_max`` (the trust-region
    subproblem's optimality conditions), ``mu`` found by ``brentq`` on ``||e(mu)|| = rho``."""
    values, vectors = np.linalg.eigh(a.numpy())
    coefficients = vectors.T @ g.numpy()
    radius = lambda mu: np.linalg.norm(coefficients / (mu - values)) - rho  # noqa: E731
    mu = brentq(radius, values[-1] + 1e-12, values[-1] + np.linalg.norm(coefficients) / rho + 1.0, xtol=1e-15)
    e = vectors @ (coefficients / (mu - values))
    return float(g.numpy() @ e + 0.5 * e @ a.numpy() @ e)


# -- registry ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", METRICS)
def test_registry_lists_the_metric_with_the_factorys_keyword_defaults(registry, name):
    spec = registry.get("metric", name)
    signature = inspect.signature(spec.load())
    keywords = {key: p.default for key, p in signature.parameters.items() if p.kind is p.KEYWORD_ONLY}
    assert dict(spec.defaults) == keywords
    assert spec.provider == "sam-harness" and spec.paper and spec.description


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("hessian_max_eig", {"top_k": 0}),
        ("hessian_max_eig", {"max_iterations": 0}),
        ("hessian_trace", {"samples": 0}),
        ("sam_sharpness", {"rho": 0.0}),
        ("sam_sharpness", {"steps": 0}),
        ("sam_sharpness", {"m": -1}),
        ("surrogate_gap", {"rho": -0.1}),
    ],
)
def test_invalid_parameters_are_refused_naming_the_metric(registry, name, params):
    with pytest.raises(ValueError, match=name):
        registry.create("metric", name, **params)


# -- Hessian spectrum and trace ---------------------------------------------------------------------------


def test_hessian_max_eig_matches_the_exact_top_eigenvalue(registry):
    model, batches, inputs, targets = tiny_problem()
    eigenvalues, _ = exact_spectrum(model, inputs, targets)
    columns = registry.create("metric", "hessian_max_eig")(model, batches, F.cross_entropy)
    assert columns["hessian_max_eig"] == pytest.approx(float(eigenvalues[0]), rel=0.01)
    assert columns["hessian_max_eig_batches"] == 2 and columns["hessian_max_eig_converged"] == 1
    assert columns["hessian_max_eig_hvps"] == 2 * columns["hessian_max_eig_iterations"] <= 200


class Attention(nn.Module):
    """One attention layer through ``scaled_dot_product_attention`` (as timm's ViTs), float64."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv, self.head = nn.Linear(4, 12), nn.Linear(4, 3)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(inputs).chunk(3, dim=-1)
        return self.head(F.scaled_dot_product_attention(q, k, v).mean(1))


def test_hessian_metrics_differentiate_fused_attention_twice(registry):
    """The fused attention kernels have no double backward: the Hessian-vector products use the math one."""
    torch.manual_seed(0)
    model = Attention().double()
    inputs, targets = torch.randn(10, 5, 4, dtype=torch.float64), torch.randint(0, 3, (10,))
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        eigenvalues, trace = exact_spectrum(model, inputs, targets)
    metric = registry.create("metric", "hessian_max_eig", tolerance=1e-8, max_iterations=1000)
    assert metric(model, [(inputs, targets)], F.cross_entropy)["hessian_max_eig"] == pytest.approx(
        float(eigenvalues[0]), rel=1e-4
    )
    columns = registry.create("metric", "hessian_trace", samples=2000)(model, [(inputs, targets)], F.cross_entropy)
    assert abs(columns["hessian_trace"] - trace) < 4 * columns["hessian_trace_stderr"]


def test_hessian_max_eig_top_3_by_deflation_matches_the_exact_spectrum(registry):
    model, batches, inputs, targets = tiny_problem()
    eigenvalues, _ = exact_spectrum(model, inputs, targets)
    metric = registry.create("metric", "hessian_max_eig", top_k=3, tolerance=1e-6, max_iterations=1000)
    columns = metric(model, batches, F.cross_entropy)
    found = [columns["hessian_max_eig"], columns["hessian_max_eig_2"], columns["hessian_max_eig_3"]]
    assert found == pytest.approx(eigenvalues[:3].tolist(), rel=0.02)
    assert "hessian_max_eig_4" not in columns and "hessian_max_eig_ratio_5" not in columns


def test_hessian_max_eig_is_the_largest_in_magnitude_and_gives_the_ratio_to_the_fifth(registry):
    a, b, _, _, generator = quadratic_problem([-6.0, 3.0, 2.0, 1.5, 0.5])
    model = Quadratic(a, b, torch.randn(5, generator=generator, dtype=torch.float64))
    metric = registry.create("metric", "hessian_max_eig", top_k=5, tolerance=1e-10, max_iterations=2000)
    columns = metric(model, ONE_BATCH, identity_loss)
    found = [columns["hessian_max_eig"]] + [columns[f"hessian_max_eig_{k}"] for k in range(2, 6)]
    assert found == pytest.approx([-6.0, 3.0, 2.0, 1.5, 0.5], rel=1e-6)
    assert columns["hessian_max_eig_ratio_5"] == pytest.approx(-12.0, rel=1e-6)


def test_hessian_trace_matches_the_exact_trace_within_its_standard_error(registry):
    model, batches, inputs, targets = tiny_problem()
    _, trace = exact_spectrum(model, inputs, targets)
    # one sample's standard deviation is about 1.1 x the trace here (large off-diagonal entries), so 5% at
    # three standard errors takes over 4,300 samples
    columns = registry.create("metric", "hessian_trace", samples=5000)(model, batches, F.cross_entropy)
    error = abs(columns["hessian_trace"] - trace)
    assert error <= 0.05 * abs(trace)
    assert error <= 4 * columns["hessian_trace_stderr"] and columns["hessian_trace_stderr"] <= 0.05 * abs(trace)
    assert columns["hessian_trace_samples"] == 5000 and columns["hessian_trace_hvps"] == 10000


def test_hessian_trace_of_a_diagonal_hessian_is_exact_with_zero_error(registry):
    a = torch.diag(torch.tensor([4.0, -1.0, 0.25], dtype=torch.float64))
    model = Quadratic(a, torch.ones(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64))
    columns = registry.create("metric", "hessian_trace", samples=7)(model, ONE_BATCH, identity_loss)
    assert columns["hessian_trace"] == pytest.approx(3.25, abs=1e-12) and columns["hessian_trace_stderr"] == 0.0


# -- SAM sharpness and surrogate gap on a quadratic -------------------------------------------------------


def test_one_step_sam_sharpness_and_surrogate_gap_equal_the_closed_form(registry):
    a, b, _, _, generator = quadratic_problem([10.0, 4.0, 2.0, 1.0, 0.5])
    w = torch.randn(5, generator=generator, dtype=torch.float64)
    model, rho = Quadratic(a, b, w), 0.3
    g = a @ w + b
    g_hat = g / g.norm()
    closed_form = float(rho * g.norm() + 0.5 * rho**2 * g_hat @ a @ g_hat)
    sharpness = registry.create("metric", "sam_sharpness", rho=rho)(model, ONE_BATCH, identity_loss)
    assert sharpness["sam_sharpness"] == pytest.approx(closed_form, rel=1e-12)
    assert sharpness["sam_sharpness_error"] is None  # not a classification
    assert sharpness["sam_sharpness_steps"] == 1 and sharpness["sam_sharpness_batches"] == 1
    gap = registry.create("metric", "surrogate_gap", rho=rho)(model, ONE_BATCH, identity_loss)
    assert gap["surrogate_gap"] == pytest.approx(closed_form, rel=1e-10)
    assert gap["surrogate_gap_eig_estimate"] == pytest.approx(2 * closed_form / rho**2, rel=1e-10)


def test_multi_step_sam_sharpness_reaches_the_maximum_over_the_ball(registry):
    a, b, rotation, w_star, _ = quadratic_problem([10.0, 4.0, 2.0, 1.0, 0.5])
    # near w*, g = A (w - w*) points mostly along the flattest direction: rho A dominates g, and the
    # maximum lies near the top eigenvector, far from where one step along g goes
    w = w_star + 1e-3 * (rotation[:, 4] + 0.01 * rotation[:, 0] + 0.01 * rotation[:, 2])
    model, rho = Quadratic(a, b, w), 0.5
    target = ball_maximum(a, a @ w + b, rho)
    values = [
        registry.create("metric", "sam_sharpness", rho=rho, steps=k)(model, ONE_BATCH, identity_loss)["sam_sharpness"]
        for k in (1, 2, 3, 5, 50)
    ]
    assert values[0] < 0.2 * target
    assert values == sorted(values)  # the iterates do not depend on steps: never worse with more
    assert values[-1] == pytest.approx(target, rel=1e-6) and values[-1] <= target * (1 + 1e-12)


class Sine(nn.Module):
    """``sin(w)`` for one parameter, whatever the input."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.w)


def test_multi_step_sam_sharpness_keeps_the_best_iterate_not_the_last(registry):
    # from w = 0 the first step reaches e = 2 (sin 2 = 0.909); there cos 2 < 0, so the second step returns
    # to e = 0, whose increase is 0
    values = [
        registry.create("metric", "sam_sharpness", rho=2.0, steps=k)(Sine(), ONE_BATCH, identity_loss)["sam_sharpness"]
        for k in (1, 2)
    ]
    assert values == pytest.approx([math.sin(2.0)] * 2, rel=1e-12)


def test_surrogate_gap_estimates_the_top_eigenvalue_near_a_minimum(registry):
    a, b, rotation, w_star, _ = quadratic_problem([10.0, 4.0, 2.0, 1.0, 0.5])
    # Lemma 3.3 needs g to point along the top eigenvector: near w*, g = A (w - w*).
    w = w_star + 1e-6 * (rotation[:, 0] + 0.05 * rotation[:, 1] + 0.05 * rotation[:, 4])
    columns = registry.create("metric", "surrogate_gap", rho=0.05)(Quadratic(a, b, w), ONE_BATCH, identity_loss)
    assert columns["surrogate_gap_eig_estimate"] == pytest.approx(10.0, rel=0.05)


def test_sam_sharpness_error_is_the_error_increase_of_the_same_perturbation(registry):
    model, batches, inputs, targets = tiny_problem()
    loss, point = flat_loss(model, inputs, targets)
    gradient = torch.autograd.grad(loss(point.requires_grad_()), point)[0]
    rho = 2.0
    adversarial = point.detach() + rho * gradient / gradient.norm()
    names = [name for name, _ in model.named_parameters()]
    pieces = torch.split(adversarial, [p.numel() for p in model.parameters()])
    params = {n: piece.view_as(p) for n, piece, p in zip(names, pieces, model.parameters(), strict=True)}
    error = lambda logits: float((logits.argmax(1) != targets).double().mean())  # noqa: E731
    expected = error(functional_call(model, params, (inputs,))) - error(model(inputs))
    columns = registry.create("metric", "sam_sharpness", rho=rho)(model, batches, F.cross_entropy)
    assert columns["sam_sharpness_error"] == pytest.approx(expected, abs=1e-12) and expected != 0
    assert columns["sam_sharpness"] == pytest.approx(float(loss(adversarial) - loss(point.detach())), rel=1e-10)


def test_m_sharpness_maximizes_per_chunk_and_averages_by_chunk_size(registry):
    model, batches, inputs, targets = tiny_problem()
    whole = registry.create("metric", "sam_sharpness", rho=0.5, steps=2)
    # batches of 25 and 15 in chunks of 10: 10 + 10 + 5 and 10 + 5, never straddling the two batches
    bounds = [(0, 10), (10, 20), (20, 25), (25, 35), (35, 40)]
    per_chunk = [whole(model, [(inputs[i:j], targets[i:j])], F.cross_entropy)["sam_sharpness"] for i, j in bounds]
    expected = sum((j - i) / 40 * value for (i, j), value in zip(bounds, per_chunk, strict=True))
    metric = registry.create("metric", "sam_sharpness", rho=0.5, steps=2, m=10)
    assert metric(model, batches, F.cross_entropy)["sam_sharpness"] == pytest.approx(expected, rel=1e-10)
    assert expected != pytest.approx(whole(model, batches, F.cross_entropy)["sam_sharpness"], rel=0.01)
    one_batch = [(inputs, targets)]
    larger_than_the_batch = registry.create("metric", "sam_sharpness", rho=0.5, steps=2, m=1000)
    assert larger_than_the_batch(model, one_batch, F.cross_entropy) == whole(model, one_batch, F.cross_entropy)


# -- gradient statistics ----------------------------------------------------------------------------------


def least_squares_gradient(weight: np.ndarray, bias: float, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Gradient of mean((x w + c - y)^2) over (w, c): 2/n [x^T r, sum r] with r the residuals."""
    residual = x @ weight + bias - y
    return np.concatenate([2 * x.T @ residual / len(y), [2 * residual.sum() / len(y)]])


def test_grad_stats_match_closed_form_least_squares_gradients(registry):
    torch.manual_seed(3)
    model = nn.Linear(4, 1).double()
    x = torch.randn(32, 4, dtype=torch.float64)
    y = torch.randn(32, 1, dtype=torch.float64)
    batches = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 32, 8)]
    weight, bias = model.weight.detach().numpy()[0], float(model.bias.detach())
    gradients = np.stack([least_squares_gradient(weight, bias, xb.numpy(), yb.numpy()[:, 0]) for xb, yb in batches])
    full = gradients.mean(axis=0)
    columns = registry.create("metric", "grad_stats")(model, batches, F.mse_loss)
    assert columns["grad_stats_mean_sq_norm"] == pytest.approx(float((gradients**2).sum(axis=1).mean()), rel=1e-12)
    assert columns["grad_stats_full_sq_norm"] == pytest.approx(float(full @ full), rel=1e-12)
    assert columns["grad_stats_variance"] == pytest.approx(
        float(((gradients - full) ** 2).sum(axis=1).mean()), rel=1e-10
    )
    identity = columns["grad_stats_mean_sq_norm"] - columns["grad_stats_full_sq_norm"]
    assert columns["grad_stats_variance"] == pytest.approx(identity, rel=1e-10)
    assert columns["grad_stats_batches"] == 4


def test_grad_stats_full_gradient_weights_unequal_batches_by_size(registry):
    torch.manual_seed(4)
    model = nn.Linear(4, 1).double()
    x = torch.randn(30, 4, dtype=torch.float64)
    y = torch.randn(30, 1, dtype=torch.float64)
    weight, bias = model.weight.detach().numpy()[0], float(model.bias.detach())
    full = least_squares_gradient(weight, bias, x.numpy(), y.numpy()[:, 0])  # of the whole subset's mean loss
    columns = registry.create("metric", "grad_stats")(model, [(x[:20], y[:20]), (x[20:], y[20:])], F.mse_loss)
    assert columns["grad_stats_full_sq_norm"] == pytest.approx(float(full @ full), rel=1e-12)
    identity = columns["grad_stats_mean_sq_norm"] - columns["grad_stats_full_sq_norm"]
    assert columns["grad_stats_variance"] == pytest.approx(identity, rel=1e-10)


# -- side effects and the harness's metric runner ---------------------------------------------------------


def bn_problem(registry):
    """The small CNN with BatchNorm, running statistics moved away from their initial values, 2 batches."""
    torch.manual_seed(5)
    model = registry.create("model", "small-cnn", num_classes=10, input_shape=(1, 8, 8), channels=4)
    inputs = torch.randn(32, 1, 8, 8)
    targets = torch.randint(0, 10, (32,))
    with torch.no_grad():
        model.train()(inputs * 2 + 1)
    return model, [(inputs[:16], targets[:16]), (inputs[16:], targets[16:])]


@pytest.mark.parametrize("name", METRICS)
def test_a_metric_leaves_weights_buffers_grads_and_mode_untouched(registry, name):
    model, batches = bn_problem(registry)
    model.train()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    columns = registry.create("metric", name, **SMALL_BUDGETS[name])(model, batches, F.cross_entropy)
    after = model.state_dict()
    assert all(torch.equal(before[key], after[key]) for key in before)
    assert all(param.grad is None for param in model.parameters())
    assert all(module.training for module in model.modules())
    assert columns and all(key.startswith(name) for key in columns)
    assert all(value is None or isinstance(value, (int, float)) for value in columns.values())
    assert all(math.isfinite(value) for value in columns.values() if value is not None)


def test_run_metrics_with_all_five_restores_weights_and_running_statistics_bit_for_bit(registry):
    model, batches = bn_problem(registry)
    model.train()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    metrics = [(name, registry.create("metric", name, **SMALL_BUDGETS[name])) for name in METRICS]
    columns = run_metrics(model, metrics, batches, F.cross_entropy)
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())
    assert model.training and all(param.grad is None for param in model.parameters())
    for key in ("hessian_max_eig", "hessian_trace", "sam_sharpness", "surrogate_gap", "grad_stats_variance"):
        assert math.isfinite(columns[key])
    assert columns["hessian_max_eig_hvps"] == 2 * columns["hessian_max_eig_iterations"]
    assert columns["grad_stats_variance"] >= 0 and columns["sam_sharpness_error"] is not None
