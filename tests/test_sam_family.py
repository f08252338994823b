"""The SAM family: reduction identities, closed forms, gradient evaluations, resume, and parity with
an independent implementation (kozistr's pytorch-optimizer)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from harness_sam.gsam import GSAM
from harness_sam.looksam import LookSAM
from harness_sam.sam import SAM
from harness_schedules.basic import Constant
from torch import nn

from harness.plugins import Registry
from harness.run.build import build_base_optimizer
from harness.run.closure import BatchClosure, batchnorm_modules

MOMENTUM = {"name": "momentum", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}
STEPS = 20


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.from_plugins()


def model_factory(kind: str = "cnn") -> nn.Module:
    torch.manual_seed(0)
    if kind == "cnn":
        from harness_vision.small_models import small_cnn

        return small_cnn(num_classes=10, input_shape=(1, 8, 8), channels=8)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))


def batch(step: int, n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1000 + step)
    return torch.randn(n, 1, 8, 8, generator=generator), torch.randint(0, 10, (n,), generator=generator)


def build(
    registry,
    model,
    optimizer: str,
    optimizer_params: dict,
    scheduler: str,
    scheduler_params: dict,
    base: dict | None = None,
    total_steps: int = STEPS,
):
    base_optimizer = build_base_optimizer(model, dict(base or MOMENTUM))
    trained = {id(p) for group in base_optimizer.param_groups for p in group["params"]}
    params = [(name, p) for name, p in model.named_parameters() if id(p) in trained]
    sched = registry.create("scheduler", scheduler, **scheduler_params)
    opt = registry.create(
        "optimizer", optimizer, params, base_optimizer=base_optimizer, scheduler=sched, **optimizer_params
    )
    opt.total_steps = total_steps
    return opt


def train(model, optimizer, steps: int = STEPS, start: int = 0) -> list[float]:
    evaluations = []
    for step in range(start, start + steps):
        inputs, targets = batch(step)
        closure = BatchClosure(model, nn.functional.cross_entropy, inputs, targets, batchnorm_modules(model))
        optimizer.step(closure)
        evaluations.append(closure.evaluations)
    return evaluations


def trajectory(registry, optimizer, optimizer_params, scheduler, scheduler_params, kind="cnn", base=None):
    model = model_factory(kind)
    opt = build(registry, model, optimizer, optimizer_params, scheduler, scheduler_params, base)
    evaluations = train(model, opt)
    return model.state_dict(), evaluations, opt


def assert_same_weights(expected: dict, actual: dict, atol: float = 0.0) -> None:
    for name in expected:
        if atol == 0.0:
            assert torch.equal(expected[name], actual[name]), name
        else:
            torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=atol, msg=name)


SAM_VARIANTS = [
    ("sam", {}),
    ("sam", {"norm": "linf"}),
    ("sam", {"adaptive": True}),
    ("sam", {"norm": "linf", "layerwise": True}),
    ("sam", {"layerwise": True}),
    ("sam", {"direction": "random"}),
    ("sam", {"m": 8}),
    ("looksam", {}),
    ("looksam", {"norm": "linf", "layerwise": True}),
]


@pytest.mark.parametrize(("optimizer", "params"), SAM_VARIANTS, ids=lambda v: str(v))
def test_rho_zero_equals_the_base_optimizer_bit_for_bit(registry, optimizer, params):
    if params.get("m"):  # sub-batch gradients summed (no BatchNorm: it would see 8 examples): equal to rounding
        expected, _, _ = trajectory(registry, "erm", {}, "never", {}, kind="mlp")
        actual, _, _ = trajectory(registry, optimizer, params, "constant", {"rho": 0.0}, kind="mlp")
        assert_same_weights(expected, actual, atol=1e-6)
        return
    expected, _, _ = trajectory(registry, "erm", {}, "never", {})
    actual, _, _ = trajectory(registry, optimizer, params, "constant", {"rho": 0.0})
    assert_same_weights(expected, actual)


def test_gsam_with_rho_zero_equals_the_base_optimizer(registry):
    expected, _, _ = trajectory(registry, "erm", {}, "never", {})
    actual, _, _ = trajectory(registry, "gsam", {"alpha": 0.4}, "constant", {"rho": 0.0})
    # g_p = g, so g_perp = g - (<g,g>/||g||^2) g vanishes up to rounding (eps 1e-12 in the division)
    assert_same_weights(expected, actual, atol=1e-6)


def test_looksam_with_k1_equals_sam(registry):
    expected, _, _ = trajectory(registry, "sam", {}, "constant", {"rho": 0.1})
    actual, _, _ = trajectory(registry, "looksam", {"alpha": 0.7}, "periodic", {"rho": 0.1, "k": 1})
    assert_same_weights(expected, actual)


def test_looksam_with_alpha_zero_equals_sam_k(registry):
    # No reuse between SAM steps: the clean gradient alone, as SAM-k (suites/digits_ablations.yaml sweeps alpha)
    expected, _, _ = trajectory(registry, "sam", {}, "periodic", {"rho": 0.1, "k": 3})
    actual, _, _ = trajectory(registry, "looksam", {"alpha": 0.0}, "periodic", {"rho": 0.1, "k": 3})
    assert_same_weights(expected, actual)


def test_gsam_with_alpha_zero_and_constant_rho_equals_sam(registry):
    expected, _, _ = trajectory(registry, "sam", {}, "constant", {"rho": 0.1})
    actual, _, _ = trajectory(registry, "gsam", {"alpha": 0.0}, "constant", {"rho": 0.1})
    assert_same_weights(expected, actual)


@pytest.mark.parametrize(("lambdas", "reference"), [((-math.inf, -math.inf), "sam"), ((math.inf, math.inf), "erm")])
def test_adaptive_policy_at_infinite_lambdas_is_sam_or_erm(registry, lambdas, reference):
    expected, _, _ = trajectory(
        registry,
        reference,
        {},
        "constant" if reference == "sam" else "never",
        {"rho": 0.1} if reference == "sam" else {},
    )
    scheduler = {"rho": 0.1, "lambda1": lambdas[0], "lambda2": lambdas[1]}
    actual, evaluations, _ = trajectory(registry, "sam", {}, "adaptive", scheduler)
    assert_same_weights(expected, actual)
    assert set(evaluations) == ({2.0} if reference == "sam" else {1.0})


@pytest.mark.parametrize(("p", "reference"), [(1.0, "sam"), (0.0, "erm")])
def test_bernoulli_one_and_zero_are_sam_and_erm(registry, p, reference):
    expected, _, _ = trajectory(
        registry,
        reference,
        {},
        "constant" if reference == "sam" else "never",
        {"rho": 0.1} if reference == "sam" else {},
    )
    actual, _, _ = trajectory(registry, "sam", {}, "bernoulli", {"rho": 0.1, "p": p})
    assert_same_weights(expected, actual)


def test_m_equal_to_the_batch_size_is_sam(registry):
    expected, _, _ = trajectory(registry, "sam", {}, "constant", {"rho": 0.1})
    actual, evaluations, _ = trajectory(registry, "sam", {"m": 32}, "constant", {"rho": 0.1})
    assert_same_weights(expected, actual)
    assert evaluations == [2.0] * STEPS


def test_m_sharpness_averages_per_sub_batch_sam_gradients():
    """Independent computation: per half-batch e_j = rho g_j/||g_j||, gradient at w + e_j, averaged."""
    model = model_factory("mlp")
    reference = copy.deepcopy(model)
    rho, lr = 0.2, 0.1
    inputs, targets = batch(0, n=16)
    weights = list(reference.parameters())
    averaged = [torch.zeros_like(w) for w in weights]
    for half in (slice(0, 8), slice(8, 16)):
        loss = nn.functional.cross_entropy(reference(inputs[half]), targets[half])
        grads = torch.autograd.grad(loss, weights)
        norm = torch.sqrt(sum((g * g).sum() for g in grads))
        with torch.no_grad():
            for w, g in zip(weights, grads, strict=True):
                w.add_(rho * g / (norm + 1e-12))
        loss = nn.functional.cross_entropy(reference(inputs[half]), targets[half])
        perturbed = torch.autograd.grad(loss, weights)
        with torch.no_grad():
            for w, g in zip(weights, grads, strict=True):
                w.sub_(rho * g / (norm + 1e-12))
            for total, g in zip(averaged, perturbed, strict=True):
                total.add_(g / 2)
    expected = [w.detach() - lr * g for w, g in zip(weights, averaged, strict=True)]

    optimizer = SAM(
        list(model.parameters()),
        base_optimizer=torch.optim.SGD(model.parameters(), lr=lr),
        scheduler=Constant(rho),
        m=8,
    )
    closure = BatchClosure(model, nn.functional.cross_entropy, inputs, targets)
    optimizer.step(closure)
    assert closure.calls == 4 and closure.evaluations == 2.0
    for want, got in zip(expected, model.parameters(), strict=True):
        torch.testing.assert_close(got.detach(), want, rtol=0, atol=1e-6)


def quadratic_problem():
    generator = torch.Generator().manual_seed(0)
    root = torch.randn(5, 5, generator=generator, dtype=torch.float64)
    matrix = root @ root.T + torch.eye(5, dtype=torch.float64)
    start = torch.randn(5, generator=generator, dtype=torch.float64)
    weight = nn.Parameter(start.clone())
    return matrix, start, weight


def quadratic_closure(matrix, weight):
    module = nn.Module()
    module.w = weight
    module.forward = lambda _x: 0.5 * weight @ matrix @ weight
    dummy = torch.zeros(1)
    return BatchClosure(module, lambda loss, _t: loss, dummy, dummy)


def test_linf_perturbation_is_rho_sign_g():
    weight = nn.Parameter(torch.tensor([0.5, -2.0, 3.0]))
    optimizer = SAM([weight], base_optimizer=torch.optim.SGD([weight], lr=0.1), scheduler=Constant(), norm="linf")
    grads = [torch.tensor([0.3, -0.001, 0.0])]
    (perturbation,) = optimizer.perturbation([weight], grads, 0.25, torch.tensor(0.3))
    torch.testing.assert_close(perturbation, torch.tensor([0.25, -0.25, 0.0]))


def test_asam_and_layerwise_perturbations_match_their_formulas():
    weights = [nn.Parameter(torch.tensor([0.5, -2.0, 0.0])), nn.Parameter(torch.tensor([[1.0, 3.0]]))]
    grads = [torch.tensor([0.3, 0.4, -1.0]), torch.tensor([[2.0, -0.5]])]
    rho, eta = 0.2, 0.01
    base = torch.optim.SGD(weights, lr=0.1)
    asam = SAM(weights, base_optimizer=base, scheduler=Constant(), adaptive=True, eta=eta)
    scale = [w.detach().abs() + eta for w in weights]
    scaled_norm = torch.sqrt(sum(((s * g) ** 2).sum() for s, g in zip(scale, grads, strict=True)))
    for got, s, g in zip(asam.perturbation(weights, grads, rho, None), scale, grads, strict=True):
        torch.testing.assert_close(got, rho * s * s * g / scaled_norm)
    layer = SAM(weights, base_optimizer=base, scheduler=Constant(), norm="linf", layerwise=True)
    for got, w, g in zip(layer.perturbation(weights, grads, rho, None), weights, grads, strict=True):
        torch.testing.assert_close(got, rho * w.detach().norm() / g.norm() * torch.sign(g))


def test_asam_with_adaptive_params_weights_leaves_biases_unscaled_as_the_reference_code():
    layer = nn.Linear(2, 3)
    named = list(layer.named_parameters())  # weight, bias
    grads = [torch.tensor([[0.3, -1.0], [0.5, 0.2], [-0.1, 0.4]]), torch.tensor([0.3, 0.4, -1.0])]
    rho, eta, base = 0.2, 0.01, torch.optim.SGD(layer.parameters(), lr=0.1)
    params = [p for _, p in named]
    for mode, scale in (
        ("all", [p.detach().abs() + eta for p in params]),
        ("weights", [params[0].detach().abs() + eta, torch.ones(3)]),
    ):
        asam = SAM(named, base_optimizer=base, scheduler=Constant(), adaptive=True, eta=eta, adaptive_params=mode)
        norm = torch.sqrt(sum(((t * g) ** 2).sum() for t, g in zip(scale, grads, strict=True)))
        for got, t, g in zip(asam.perturbation(params, grads, rho, None), scale, grads, strict=True):
            torch.testing.assert_close(got, rho * t * t * g / norm)


@pytest.mark.parametrize("inverse", [False, True])
def test_layerwise_zero_weight_ratio_sets_the_perturbation_of_an_all_zero_tensor(inverse):
    """LayerSAM's ratio is 0 (printed) or infinite (inverse) for an all-zero tensor, e.g. a zero-initialized
    bias; the paper is silent, so ``zero_weight_ratio`` says (default 1: LAMB's guard, seed A.3)."""
    weights = [nn.Parameter(torch.tensor([[1.0, -2.0]])), nn.Parameter(torch.zeros(3))]
    grads = [torch.tensor([[0.5, 0.5]]), torch.tensor([0.3, -0.4, 0.0])]
    rho, base = 0.2, torch.optim.SGD(weights, lr=0.1)
    trust = "inverse" if inverse else "printed"
    for ratio in (1.0, 0.0, 0.5):
        layer = SAM(
            weights, base_optimizer=base, scheduler=Constant(), norm="linf", layerwise=True,
            trust_ratio=trust, zero_weight_ratio=ratio,
        )  # fmt: skip
        dense, zero = layer.perturbation(weights, grads, rho, None)
        torch.testing.assert_close(zero, rho * ratio * torch.sign(grads[1]))
        w, g = weights[0].detach().norm(), grads[0].norm()
        torch.testing.assert_close(dense, rho * (g / w if inverse else w / g) * torch.sign(grads[0]))
    with pytest.raises(ValueError, match="zero_weight_ratio must be >= 0"):
        SAM(weights, base_optimizer=base, scheduler=Constant(), layerwise=True, zero_weight_ratio=-1.0)


def test_random_direction_has_norm_rho_and_is_seeded():
    weights = [nn.Parameter(torch.zeros(50)), nn.Parameter(torch.zeros(4, 5))]
    grads = [torch.ones(50), torch.ones(4, 5)]

    def draw(seed):
        optimizer = SAM(
            weights,
            base_optimizer=torch.optim.SGD(weights, lr=0.1),
            scheduler=Constant(),
            direction="random",
            seed=seed,
        )
        return optimizer.perturbation(weights, grads, 0.3, torch.tensor(1.0))

    first, again, other = draw(1), draw(1), draw(2)
    norm = torch.sqrt(sum((e * e).sum() for e in first))
    torch.testing.assert_close(norm, torch.tensor(0.3))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0])
    cosine = sum((e * g).sum() for e, g in zip(first, grads, strict=True)) / (norm * math.sqrt(70))
    assert abs(float(cosine)) < 0.5  # not the gradient direction


def test_one_gsam_step_on_a_quadratic_equals_the_formula():
    matrix, start, weight = quadratic_problem()
    rho, alpha, lr = 0.3, 0.5, 0.1
    g = matrix @ start
    g_p = matrix @ (start + rho * g / g.norm())
    g_perp = g - (g @ g_p) / (g_p @ g_p) * g_p
    expected = start - lr * (g_p - alpha * g_perp)

    optimizer = GSAM([weight], base_optimizer=torch.optim.SGD([weight], lr=lr), scheduler=Constant(rho), alpha=alpha)
    optimizer.step(quadratic_closure(matrix, weight))
    torch.testing.assert_close(weight.detach(), expected, rtol=0, atol=1e-12)
    extras = optimizer.last_step.extras
    f = lambda w: 0.5 * w @ matrix @ w  # noqa: E731
    torch.testing.assert_close(extras["surrogate_gap"], f(start + rho * g / g.norm()) - f(start))
    torch.testing.assert_close(extras["cos_g_gp"], (g @ g_p) / (g.norm() * g_p.norm()))


def test_looksam_keeps_g_v_orthogonal_to_g_and_reuses_it():
    matrix, start, weight = quadratic_problem()
    rho, alpha, lr = 0.3, 0.7, 0.05
    from harness_schedules.basic import Periodic

    optimizer = LookSAM(
        [weight], base_optimizer=torch.optim.SGD([weight], lr=lr), scheduler=Periodic(rho=rho, k=2), alpha=alpha
    )
    g = matrix @ start
    g_s = matrix @ (start + rho * g / g.norm())
    g_v = g_s - (g @ g_s) / (g @ g) * g
    optimizer.step(quadratic_closure(matrix, weight))  # step 0: SAM step
    (stored,) = optimizer._orthogonal.buffers
    torch.testing.assert_close(stored, g_v, rtol=0, atol=1e-12)
    assert abs(float(stored @ g)) < 1e-10 * float(g.norm() * stored.norm())
    after_sam = start - lr * g_s
    torch.testing.assert_close(weight.detach(), after_sam, rtol=0, atol=1e-12)

    closure = quadratic_closure(matrix, weight)
    optimizer.step(closure)  # step 1: reuse, one gradient evaluation
    g1 = matrix @ after_sam
    expected = after_sam - lr * (g1 + alpha * g1.norm() / g_v.norm() * g_v)
    assert closure.calls == 1
    torch.testing.assert_close(weight.detach(), expected, rtol=0, atol=1e-12)


def test_looksam_k5_averages_1_2_gradient_evaluations_per_step(registry):
    _, evaluations, _ = trajectory(registry, "looksam", {}, "periodic", {"rho": 0.05, "k": 5})
    assert sum(evaluations) / len(evaluations) == pytest.approx(1.2)


def test_ae_sam_evaluations_are_one_plus_its_sam_fraction(registry):
    model = model_factory()
    optimizer = build(registry, model, "sam", {}, "adaptive", {"rho": 0.05, "lambda1": -1.0, "lambda2": 1.0})
    perturbed, evaluations = 0, 0.0
    for step in range(STEPS):
        inputs, targets = batch(step)
        closure = BatchClosure(model, nn.functional.cross_entropy, inputs, targets, batchnorm_modules(model))
        optimizer.step(closure)
        perturbed += optimizer.last_step.perturbed
        evaluations += closure.evaluations
    assert 0 < perturbed < STEPS
    assert evaluations / STEPS == pytest.approx(1 + perturbed / STEPS)


def preset_names() -> list[str]:
    return Registry.from_plugins().names("preset")


@pytest.mark.parametrize("preset", preset_names())
def test_every_preset_resumes_on_the_same_trajectory(registry, preset):
    spec = registry.get("preset", preset)
    base = {**MOMENTUM, **(spec.base_optimizer or {})}
    if spec.base_optimizer and spec.base_optimizer.get("name") != "momentum":
        base = dict(spec.base_optimizer)
    arguments = (spec.optimizer, dict(spec.optimizer_params), spec.scheduler, dict(spec.scheduler_params))

    def run(split: int | None):
        model = model_factory()
        optimizer = build(registry, model, *arguments, base=base)
        train(model, optimizer, steps=split or STEPS)
        if split is not None:
            saved_model, saved_optimizer = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
            model = model_factory()
            model.load_state_dict(saved_model)
            optimizer = build(registry, model, *arguments, base=base)
            optimizer.load_state_dict(saved_optimizer)
            train(model, optimizer, steps=STEPS - split, start=split)
        return model.state_dict()

    straight, resumed = run(None), run(7)
    assert_same_weights(straight, resumed, atol=1e-6 if spec.optimizer == "nusam" else 0.0)


def kozistr_trajectory(kind: str, rho: float, adaptive: bool, alpha: float = 0.0):
    pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
    model = model_factory("mlp")
    if kind == "sam":
        optimizer = pytorch_optimizer.SAM(
            model.parameters(), base_optimizer=torch.optim.SGD, rho=rho, adaptive=adaptive, lr=0.05, momentum=0.9
        )
    else:
        base = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        scheduler = torch.optim.lr_scheduler.LambdaLR(base, lambda _s: 1.0)
        rho_schedule = pytorch_optimizer.ProportionScheduler(scheduler, max_lr=0.05, max_value=rho, min_value=rho)
        optimizer = pytorch_optimizer.GSAM(
            model.parameters(),
            base_optimizer=base,
            model=model,
            rho_scheduler=rho_schedule,
            alpha=alpha,
            adaptive=adaptive,
        )
    for step in range(STEPS):
        inputs, targets = batch(step)
        if kind == "gsam":  # its step() runs its own closure (set_closure) for both passes
            optimizer.set_closure(nn.functional.cross_entropy, inputs, targets)
            optimizer.step()
            continue

        def closure(inputs=inputs, targets=targets):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(inputs), targets)
            loss.backward()
            return loss

        closure()  # its step() expects the clean gradient already computed
        optimizer.step(closure)
    return model.state_dict()


@pytest.mark.parametrize(
    ("kind", "params", "adaptive"),
    [("sam", {}, False), ("sam", {"adaptive": True, "eta": 0.0}, True), ("gsam", {"alpha": 0.3}, False)],
    ids=["sam", "asam", "gsam"],
)
def test_parity_with_pytorch_optimizer(registry, kind, params, adaptive):
    expected = kozistr_trajectory(kind, rho=0.1, adaptive=adaptive, alpha=params.get("alpha", 0.0))
    model = model_factory("mlp")
    optimizer = SAM if kind == "sam" else GSAM
    sam = optimizer(
        list(model.parameters()),
        base_optimizer=torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
        scheduler=Constant(0.1),
        **params,
    )
    train(model, sam)
    assert_same_weights(expected, model.state_dict(), atol=1e-5)
