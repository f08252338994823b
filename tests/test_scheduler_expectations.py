"""What a perturbation scheduler states before it runs (``warmup_steps``, ``expected_perturbed_fraction``):
the built-in schedulers' answers, and the contract rule that holds any scheduler's answer to its decisions."""

from __future__ import annotations

import math

import pytest

from harness import PerturbationScheduler
from harness.plugins import Registry
from harness.testing import ContractViolation, run_rule

#: Schedulers that misstate themselves, one fault each.
MISSTATED = """
    from harness import PerturbationScheduler, SchedulerSpec, hookimpl


    class EveryOther(PerturbationScheduler):
        def decide(self, ctx):
            return (ctx.step % 2 == 0, 0.05 if ctx.step % 2 == 0 else 0.0)


    class ClaimsSam(EveryOther):
        def expected_perturbed_fraction(self, total_steps):
            return 1.0


    class FractionalWarmup(EveryOther):
        def warmup_steps(self, total_steps):
            return total_steps / 10


    class Undeclared:  # not a PerturbationScheduler: says nothing in advance
        def decide(self, ctx):
            return True, 0.05

        def state_dict(self):
            return {}

        def load_state_dict(self, state):
            pass


    @hookimpl
    def register_schedulers():
        return [
            SchedulerSpec("claims-sam", ClaimsSam),
            SchedulerSpec("fractional-warmup", FractionalWarmup),
            SchedulerSpec("undeclared", Undeclared),
        ]
"""


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.from_plugins()


def test_the_protocols_defaults_say_nothing_is_known_in_advance():
    class Anything(PerturbationScheduler):
        def decide(self, ctx):
            return True, 0.05

    assert Anything().warmup_steps(100) == 0 and Anything().expected_perturbed_fraction(100) is None


@pytest.mark.parametrize(
    ("name", "params", "warmup", "fraction"),
    [
        ("constant", {}, 0, 1.0),
        ("never", {}, 0, 0.0),
        ("lr_linked", {}, 0, 1.0),
        ("periodic", {"k": 3, "offset": 2}, 0, 1 / 3),
        ("delayed", {"fraction": 0.5, "inner": "periodic", "inner_params": {"k": 4}}, 50, 0.25),
        ("delayed", {"fraction": 0.1, "inner": "delayed", "inner_params": {"fraction": 0.3}}, 30, 1.0),
        ("delayed", {"fraction": 0.1, "inner": "adaptive"}, 10, None),
        ("adaptive", {}, 0, None),
        ("adaptive", {"lambda1": -math.inf, "lambda2": -math.inf}, 0, 1.0),
        ("adaptive", {"lambda1": math.inf, "lambda2": math.inf}, 0, 0.0),
        ("bernoulli", {"p": 0.5}, 0, None),
        ("bernoulli", {"p": 1.0}, 0, 1.0),
        ("bernoulli", {"p": 0.0}, 0, 0.0),
    ],
)
def test_built_in_schedulers_state_their_warmup_and_share(registry, name, params, warmup, fraction):
    scheduler = registry.create("scheduler", name, **params)
    assert scheduler.warmup_steps(100) == warmup
    assert scheduler.expected_perturbed_fraction(100) == (pytest.approx(fraction) if fraction is not None else None)


@pytest.mark.parametrize(
    ("name", "phrase"),
    [
        ("claims-sam", "returned 1, but decide() perturbed 10 of the 20 steps from warmup_steps(20) = 0 on"),
        ("fractional-warmup", "warmup_steps(20) returned 2.0; expected an int in [0, 20]"),
        ("undeclared", "it has no warmup_steps(total_steps); subclass harness.PerturbationScheduler"),
    ],
)
def test_the_contract_holds_what_a_scheduler_states_to_its_decisions(add_entry_points, name, phrase):
    add_entry_points({"misstated": MISSTATED})
    registry = Registry.from_plugins()
    with pytest.raises(ContractViolation, match="expected_fraction") as caught:
        run_rule(registry, "scheduler", name, "expected_fraction")
    assert phrase in str(caught.value)
    for rule in ("decide", "deterministic", "state_dict", "total_steps"):  # the fault is this rule's alone
        run_rule(registry, "scheduler", name, rule)
