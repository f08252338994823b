"""The perturbation schedulers of ``harness_schedules``: decisions, radii, state round trips, registration.

Expected values are computed here, independently of the code under test: explicit step lists, the
AE-SAM recurrences written out by hand, and the closed-form %SAM of a normal model (seed notes B.4).
"""

from __future__ import annotations

import inspect
import math
import random

import pytest
import torch
from harness_schedules.adaptive import Adaptive
from harness_schedules.basic import Constant, Periodic
from harness_schedules.delayed import Delayed
from harness_schedules.lr_linked import LrLinked
from harness_schedules.stochastic import Bernoulli
from scipy import integrate
from scipy.stats import norm

from harness import PerturbationScheduler
from harness.contract.optim import StepContext
from harness.plugins import Registry

SCHEDULERS = Registry.from_plugins().names("scheduler")


def ctx(step: int, total_steps: int = 100, s: float = 1.0, lr: float = 0.1, lr_max: float = 0.1, lr_min: float = 0.0):
    return StepContext(
        step=step, total_steps=total_steps, lr=lr, grad_sq_norm=torch.tensor(s), lr_max=lr_max, lr_min=lr_min
    )


def run(scheduler: PerturbationScheduler, steps, total_steps: int = 100, norms=None) -> list[bool]:
    """The perturb flags of ``scheduler`` over ``steps`` (squared gradient norms from ``norms`` if given)."""
    norms = norms if norms is not None else [1.0] * len(steps)
    return [scheduler.decide(ctx(t, total_steps, s))[0] for t, s in zip(steps, norms, strict=True)]


def perturbed_steps(scheduler: PerturbationScheduler, steps, total_steps: int = 100) -> list[int]:
    return [t for t, flag in zip(steps, run(scheduler, steps, total_steps), strict=True) if flag]


# periodic (SAM-k, LookSAM)


def test_periodic_perturbs_every_kth_step_starting_at_step_0():
    scheduler = Periodic(rho=0.1, k=5)
    assert perturbed_steps(scheduler, range(20)) == [0, 5, 10, 15]
    assert scheduler.decide(ctx(10)) == (True, 0.1)
    assert scheduler.decide(ctx(11)) == (False, 0.0)


def test_periodic_offset_shifts_the_perturbed_steps():
    assert perturbed_steps(Periodic(k=5, offset=2), range(20)) == [2, 7, 12, 17]
    assert perturbed_steps(Periodic(k=5, offset=4), range(20)) == [4, 9, 14, 19]  # 1-based "t % k = 0"


def test_periodic_with_k_1_is_constant():
    assert run(Periodic(k=1), range(20)) == run(Constant(), range(20)) == [True] * 20


def test_periodic_refuses_k_below_1():
    with pytest.raises(ValueError, match="k must be >= 1"):
        Periodic(k=0)


# bernoulli (SS-SAM)


@pytest.mark.parametrize("p", [0.5, 0.3])
def test_bernoulli_perturbs_a_fraction_p_of_the_steps(p):
    flags = run(Bernoulli(p=p, seed=1), range(10_000))
    assert abs(sum(flags) / len(flags) - p) < 0.02


def test_bernoulli_same_seed_same_decisions_other_seed_other_decisions():
    first = run(Bernoulli(seed=7), range(200))
    assert run(Bernoulli(seed=7), range(200)) == first
    assert run(Bernoulli(seed=8), range(200)) != first


def test_bernoulli_p_1_always_and_p_0_never():
    assert run(Bernoulli(p=1.0), range(1000)) == [True] * 1000
    assert run(Bernoulli(p=0.0), range(1000)) == [False] * 1000


def test_bernoulli_state_round_trip_continues_the_same_stream():
    scheduler = Bernoulli(seed=3)
    run(scheduler, range(37))
    state = scheduler.state_dict()
    expected = run(scheduler, range(37, 137))
    resumed = Bernoulli(seed=3)
    resumed.load_state_dict(state)
    assert run(resumed, range(37, 137)) == expected
    assert run(Bernoulli(seed=3), range(37, 137)) != expected  # a fresh stream would not continue it


def test_bernoulli_state_survives_lists_in_place_of_tuples():
    scheduler = Bernoulli(seed=3)
    run(scheduler, range(5))
    version, internal, gauss = scheduler.state_dict()["random_state"]
    expected = run(scheduler, range(5, 50))
    resumed = Bernoulli(seed=3)
    resumed.load_state_dict({"random_state": [version, list(internal), gauss]})  # as after JSON
    assert run(resumed, range(5, 50)) == expected


def test_bernoulli_leaves_the_global_random_generators_alone():
    torch_state, python_state = torch.get_rng_state(), random.getstate()
    run(Bernoulli(seed=5), range(1000))
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert random.getstate() == python_state


# adaptive (AE-SAM)


def predicted_percent_sam(lambda1: float, lambda2: float) -> float:
    """100 / (l2 - l1) * integral_{l1}^{l2} (1 - Phi(c)) dc: seed_looksam_aesam.md B.4, item 2."""
    area, _ = integrate.quad(norm.sf, lambda1, lambda2)
    return 100.0 * area / (lambda2 - lambda1)


def percent_sam(scheduler: Adaptive, norms: list[float]) -> float:
    flags = run(scheduler, range(len(norms)), total_steps=len(norms), norms=norms)
    return 100.0 * sum(flags) / len(flags)


@pytest.fixture(scope="module")
def stationary_norms() -> list[float]:
    generator = torch.Generator().manual_seed(0)
    return (100.0 + 10.0 * torch.randn(20_000, generator=generator, dtype=torch.float64)).tolist()


@pytest.mark.parametrize(("lambdas", "paper_percent"), [((-1.0, 1.0), 50.0), ((0.0, 2.0), 19.5)])
def test_adaptive_percent_sam_on_a_stationary_normal_stream(stationary_norms, lambdas, paper_percent):
    prediction = predicted_percent_sam(*lambdas)
    assert prediction == pytest.approx(paper_percent, abs=0.1)
    measured = percent_sam(Adaptive(lambda1=lambdas[0], lambda2=lambdas[1]), stationary_norms)
    assert abs(measured - prediction) < 3.0


@pytest.mark.parametrize(("lambda_value", "expected"), [(-math.inf, 100.0), (math.inf, 0.0)])
def test_adaptive_infinite_lambdas_give_always_or_never(stationary_norms, lambda_value, expected):
    norms = stationary_norms[:2000]
    assert percent_sam(Adaptive(lambda1=lambda_value, lambda2=lambda_value), norms) == expected


def test_adaptive_infinite_lambda1_with_no_weight_at_step_0_has_no_effect():
    scheduler = Adaptive(lambda1=-math.inf, lambda2=1.0)
    scheduler.decide(ctx(0, total_steps=10, s=4.0))
    assert scheduler.c_t == 1.0
    scheduler.decide(ctx(1, total_steps=10, s=4.0))
    assert scheduler.c_t == -math.inf


def test_adaptive_with_sigma_0_and_infinite_lambdas_still_decides():
    scheduler = Adaptive(lambda1=math.inf, lambda2=math.inf, var_init=0.0, delta=0.0)
    assert run(scheduler, range(5), total_steps=5, norms=[3.0] * 5) == [False] * 5
    scheduler = Adaptive(lambda1=-math.inf, lambda2=-math.inf, var_init=0.0, delta=0.0)
    assert run(scheduler, range(5), total_steps=5, norms=[3.0] * 5) == [True] * 5


def test_adaptive_refuses_opposite_infinite_lambdas():
    with pytest.raises(ValueError, match="opposite"):
        Adaptive(lambda1=-math.inf, lambda2=math.inf)


def test_adaptive_first_step_perturbs_for_the_paper_lambdas(stationary_norms):
    # B.4 item 1: at t=0 the condition holds iff c_0 <= 0.9 / 0.2847, for any s_0 with s_0^2 >> var_init = e^-10.
    for s in (stationary_norms[0], 0.1, 1e4):
        assert Adaptive(lambda1=-1.0, lambda2=1.0).decide(ctx(0, total_steps=100, s=s)) == (True, 0.05)
    assert Adaptive(lambda1=0.0, lambda2=2.0).decide(ctx(0, total_steps=100, s=50.0))[0]
    assert not Adaptive(lambda1=0.0, lambda2=3.5).decide(ctx(0, total_steps=100, s=50.0))[0]


def test_adaptive_moving_averages_match_eq_4_and_5_by_hand():
    scheduler = Adaptive(lambda1=-1.0, lambda2=1.0, delta=0.9)
    # step 0, s = 4, T = 10: c = 1
    mu = 0.1 * 4.0
    var = 0.9 * math.exp(-10) + 0.1 * (4.0 - mu) ** 2
    assert scheduler.decide(ctx(0, total_steps=10, s=4.0)) == (True, 0.05)  # 4 >= 0.4 + 1.138
    assert (scheduler.mu, scheduler.var, scheduler.c_t) == pytest.approx((mu, var, 1.0), rel=1e-12)
    # step 1, s = 9: c = 0.1 * -1 + 0.9 * 1 = 0.8
    mu = 0.9 * mu + 0.1 * 9.0
    var = 0.9 * var + 0.1 * (9.0 - mu) ** 2
    assert scheduler.decide(ctx(1, total_steps=10, s=9.0)) == (True, 0.05)  # 9 >= 1.26 + 0.8 * 2.675
    assert (scheduler.mu, scheduler.var, scheduler.c_t) == pytest.approx((mu, var, 0.8), rel=1e-12)
    # step 2, s = 1: c = 0.6
    mu = 0.9 * mu + 0.1 * 1.0
    var = 0.9 * var + 0.1 * (1.0 - mu) ** 2
    assert scheduler.decide(ctx(2, total_steps=10, s=1.0)) == (False, 0.0)  # 1 < 1.234 + 0.6 * 2.539
    assert (scheduler.mu, scheduler.var, scheduler.c_t) == pytest.approx((mu, var, 0.6), rel=1e-12)
    assert scheduler.threshold == pytest.approx(mu + 0.6 * math.sqrt(var), rel=1e-12)
    assert scheduler.state_dict() == pytest.approx({"mu": mu, "var": var}, rel=1e-12)


def test_adaptive_state_round_trip_continues_the_same_decisions(stationary_norms):
    norms = stationary_norms[:400]
    scheduler = Adaptive(lambda1=0.0, lambda2=2.0)
    run(scheduler, range(150), total_steps=400, norms=norms[:150])
    state = scheduler.state_dict()
    expected = run(scheduler, range(150, 400), total_steps=400, norms=norms[150:])
    resumed = Adaptive(lambda1=0.0, lambda2=2.0)
    resumed.load_state_dict(state)
    assert run(resumed, range(150, 400), total_steps=400, norms=norms[150:]) == expected
    assert (resumed.mu, resumed.var) == (scheduler.mu, scheduler.var)


def test_adaptive_needs_total_steps():
    with pytest.raises(ValueError, match="total_steps"):
        Adaptive().decide(ctx(0, total_steps=0))


# lr_linked (GSAM)


def test_lr_linked_rho_is_linear_in_the_learning_rate():
    scheduler = LrLinked(rho_max=0.6, rho_min=0.1)
    assert scheduler.decide(ctx(0, lr=3e-3, lr_max=3e-3, lr_min=3e-5)) == (True, pytest.approx(0.6))
    assert scheduler.decide(ctx(0, lr=3e-5, lr_max=3e-3, lr_min=3e-5)) == (True, pytest.approx(0.1))
    midpoint = (3e-3 + 3e-5) / 2
    assert scheduler.decide(ctx(0, lr=midpoint, lr_max=3e-3, lr_min=3e-5))[1] == pytest.approx(0.35)
    assert scheduler.decide(ctx(0, lr=0.75e-3, lr_max=1e-3, lr_min=0.0))[1] == pytest.approx(0.475)


def test_lr_linked_flat_schedule_uses_rho_max():
    assert LrLinked(rho_max=0.04, rho_min=0.02).decide(ctx(0, lr=0.1, lr_max=0.1, lr_min=0.1)) == (True, 0.04)


def test_lr_linked_below_lr_min_extrapolates_unless_clamped():
    warmup = ctx(0, lr=0.0, lr_max=0.1, lr_min=0.01)  # lr below the schedule's floor, as during warmup
    expected = 0.02 + 0.02 * (0.0 - 0.01) / (0.1 - 0.01)
    assert LrLinked(rho_max=0.04, rho_min=0.02).decide(warmup)[1] == pytest.approx(expected)
    assert expected < 0.02
    assert LrLinked(rho_max=0.04, rho_min=0.02, clamp=True).decide(warmup)[1] == 0.02
    above = ctx(0, lr=0.2, lr_max=0.1, lr_min=0.01)
    assert LrLinked(rho_max=0.04, rho_min=0.02, clamp=True).decide(above)[1] == 0.04


def test_lr_linked_refuses_rho_min_above_rho_max():
    with pytest.raises(ValueError, match="rho_min"):
        LrLinked(rho_max=0.01, rho_min=0.02)


# delayed (nuSAM)


def test_delayed_waits_for_the_fraction_then_follows_constant():
    scheduler = Delayed(fraction=0.1, inner="constant", inner_params={"rho": 0.2})
    decisions = [scheduler.decide(ctx(t, total_steps=100)) for t in range(100)]
    assert decisions == [(False, 0.0)] * 10 + [(True, 0.2)] * 90


def test_delayed_passes_the_global_step_to_the_inner_scheduler():
    scheduler = Delayed(fraction=0.1, inner="periodic", inner_params={"k": 2})
    assert perturbed_steps(scheduler, range(20), total_steps=100) == [10, 12, 14, 16, 18]


def test_delayed_start_is_not_pushed_back_by_float_rounding():
    assert 0.07 * 100 > 7  # 7.000000000000001: a plain comparison would delay step 7 too
    assert perturbed_steps(Delayed(fraction=0.07), range(10), total_steps=100) == [7, 8, 9]
    assert perturbed_steps(Delayed(fraction=0.0), range(3), total_steps=0) == [0, 1, 2]


def test_delayed_state_round_trip_includes_the_inner_state():
    def make() -> Delayed:
        return Delayed(fraction=0.1, inner="bernoulli", inner_params={"seed": 4})

    scheduler = make()
    run(scheduler, range(40))
    state = scheduler.state_dict()
    expected = run(scheduler, range(40, 100))
    resumed = make()
    resumed.load_state_dict(state)
    assert run(resumed, range(40, 100)) == expected
    assert run(make(), range(40, 100)) != expected


def test_delayed_unknown_inner_names_it():
    with pytest.raises(ValueError, match="inner='perodic'.*did you mean 'periodic'"):
        Delayed(inner="perodic")


def test_delayed_wrong_inner_params_name_them():
    with pytest.raises(TypeError, match="inner_params .*'periodic'.*rho, k, offset"):
        Delayed(inner="periodic", inner_params={"p": 0.5})


def test_delayed_needs_total_steps():
    with pytest.raises(ValueError, match="total_steps"):
        Delayed(fraction=0.1).decide(ctx(0, total_steps=0))


# every registered scheduler


@pytest.mark.parametrize("name", SCHEDULERS)
def test_registered_scheduler_builds_from_its_defaults_and_decides(registry, name):
    scheduler = registry.create("scheduler", name)
    assert isinstance(scheduler, PerturbationScheduler)
    perturb, rho = scheduler.decide(ctx(50, total_steps=100, s=2.0))
    assert isinstance(perturb, bool) and isinstance(rho, float) and rho >= 0
    scheduler.load_state_dict(scheduler.state_dict())


@pytest.mark.parametrize("name", SCHEDULERS)
def test_registered_scheduler_defaults_are_exactly_the_factory_parameters(registry, name):
    spec = registry.get("scheduler", name)
    parameters = inspect.signature(spec.load()).parameters
    assert set(spec.defaults) == set(parameters)
    for key, value in spec.defaults.items():
        assert parameters[key].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        assert parameters[key].default == value, f"{name}.{key}: spec default {value!r} != factory default"
    assert spec.description
    if name != "never":
        assert spec.paper


def test_the_expected_schedulers_are_registered():
    assert {"constant", "never", "periodic", "bernoulli", "adaptive", "lr_linked", "delayed"} <= set(SCHEDULERS)
