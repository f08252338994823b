"""The contract of perturbation schedulers (``register_schedulers``): ``harness.PerturbationScheduler``.

Every rule builds the scheduler with its registered defaults and drives ``decide`` with the step contexts
of a short run (``harness.testing.fixtures.step_contexts``: a cosine learning rate between ``lr_min`` and
``lr_max``, and squared gradient norms that vary from step to step). ``expected_fraction`` also holds what
the scheduler says in advance (``warmup_steps``, ``expected_perturbed_fraction``: ``harness bench`` times
and judges a method's cost by it) to its decisions.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from harness.contract.optim import StepContext
from harness.plugins import Registry
from harness.run.trace import FIXED_COLUMNS
from harness.testing.base import ContractViolation, is_real_number, rule
from harness.testing.fixtures import create, round_trip, seed_everything, step_contexts

TOTAL_STEPS = 20


def _decide(scheduler: Any, ctx: StepContext) -> tuple[bool, float]:
    """``scheduler.decide(ctx)``, checked: a ``(bool, finite float >= 0)`` pair."""
    try:
        decision = scheduler.decide(ctx)
    except Exception as error:
        raise ContractViolation(
            f"decide() at step {ctx.step} of {ctx.total_steps} raised {type(error).__name__}: {error}"
        ) from error
    return _checked(decision, ctx)


def _checked(decision: Any, ctx: StepContext) -> tuple[bool, float]:
    if not isinstance(decision, tuple) or len(decision) != 2:
        raise ContractViolation(f"decide() at step {ctx.step} returned {decision!r}; expected a (perturb, rho) tuple")
    perturb, rho = decision
    if not isinstance(perturb, bool):
        raise ContractViolation(
            f"decide() at step {ctx.step} returned perturb={perturb!r} ({type(perturb).__name__}); expected a bool"
        )
    if not is_real_number(rho) or not math.isfinite(rho) or rho < 0:
        raise ContractViolation(f"decide() at step {ctx.step} returned rho={rho!r}; expected a finite number >= 0")
    return perturb, float(rho)


def _decisions(scheduler: Any, contexts: list[StepContext]) -> list[tuple[bool, float]]:
    return [_decide(scheduler, ctx) for ctx in contexts]


@rule("scheduler", "decide", "decide(ctx) returns (perturb: bool, rho: finite float >= 0) at every step")
def decide(registry: Registry, name: str) -> None:
    _decisions(create(registry, "scheduler", name), step_contexts(TOTAL_STEPS))


@rule("scheduler", "deterministic", "two instances decide the same for the same contexts")
def deterministic(registry: Registry, name: str) -> None:
    runs = []
    for _ in range(2):
        seed_everything(0)
        runs.append(_decisions(create(registry, "scheduler", name), step_contexts(TOTAL_STEPS)))
    if runs[0] != runs[1]:
        step = next(i for i, (a, b) in enumerate(zip(*runs, strict=True)) if a != b)
        raise ContractViolation(
            f"two instances built under seed 0 decided {runs[0][step]} and {runs[1][step]} at step {step}; draw "
            "random numbers from a generator seeded by the scheduler's parameters"
        )


@rule("scheduler", "state_dict", "a state_dict round trip into a fresh instance continues the same decisions")
def state_dict_round_trip(registry: Registry, name: str) -> None:
    half = TOTAL_STEPS // 2
    seed_everything(0)
    original = create(registry, "scheduler", name)
    _decisions(original, step_contexts(TOTAL_STEPS, range(half)))
    state = original.state_dict()
    if not isinstance(state, dict):
        raise ContractViolation(f"state_dict() returned {type(state).__name__}; expected a dict")
    state = round_trip(state, "state_dict()")
    seed_everything(1)
    resumed = create(registry, "scheduler", name)
    try:
        resumed.load_state_dict(state)
    except Exception as error:
        raise ContractViolation(f"load_state_dict(state_dict()) raised {type(error).__name__}: {error}") from error
    rest = step_contexts(TOTAL_STEPS, range(half, TOTAL_STEPS))
    straight, continued = _decisions(original, rest), _decisions(resumed, rest)
    if straight != continued:
        step = next(i for i, (a, b) in enumerate(zip(straight, continued, strict=True)) if a != b) + half
        raise ContractViolation(
            f"after a state_dict round trip at step {half}, the resumed instance decided "
            f"{continued[step - half]} at step {step} where the original decided {straight[step - half]}; "
            "state_dict() must hold everything decide() depends on"
        )


@rule("scheduler", "total_steps", "runs of any length work; an unknown length (0) works or fails with a clear error")
def total_steps(registry: Registry, name: str) -> None:
    for total in (3, 50):
        _decisions(create(registry, "scheduler", name), step_contexts(total))
    unknown = dataclasses.replace(step_contexts(TOTAL_STEPS)[0], total_steps=0)
    try:
        decision = create(registry, "scheduler", name).decide(unknown)
    except ValueError as error:
        if "total_steps" not in str(error):
            raise ContractViolation(
                f"with total_steps=0 (unknown) decide() raised ValueError({error}) without naming total_steps"
            ) from error
    except Exception as error:
        raise ContractViolation(
            f"with total_steps=0 (unknown) decide() raised {type(error).__name__}: {error}; a schedule that needs "
            "the run's length raises a ValueError that names total_steps"
        ) from error
    else:
        _checked(decision, unknown)


def _stated(scheduler: Any, method: str, total: int) -> Any:
    """``scheduler.<method>(total)``: what the scheduler says before it runs; a violation when it cannot say."""
    call = getattr(scheduler, method, None)
    if not callable(call):
        raise ContractViolation(
            f"it has no {method}(total_steps); subclass harness.PerturbationScheduler, whose default says "
            "nothing is known in advance, or define it"
        )
    try:
        return call(total)
    except Exception as error:
        raise ContractViolation(f"{method}({total}) raised {type(error).__name__}: {error}") from error


@rule(
    "scheduler",
    "expected_fraction",
    "warmup_steps(T) is an int in [0, T]; expected_perturbed_fraction(T) is None or the share of the steps from "
    "warmup_steps(T) on that decide() perturbs, to within one step",
)
def expected_fraction(registry: Registry, name: str) -> None:
    for total in (TOTAL_STEPS, 50):
        scheduler = create(registry, "scheduler", name)  # asked before it decides, as harness bench asks it
        warmup = _stated(scheduler, "warmup_steps", total)
        if isinstance(warmup, bool) or not isinstance(warmup, int) or not 0 <= warmup <= total:
            raise ContractViolation(f"warmup_steps({total}) returned {warmup!r}; expected an int in [0, {total}]")
        expected = _stated(scheduler, "expected_perturbed_fraction", total)
        if expected is not None and not (is_real_number(expected) and 0 <= expected <= 1):
            raise ContractViolation(
                f"expected_perturbed_fraction({total}) returned {expected!r}; expected None or a number in [0, 1]"
            )
        steady = [perturb for perturb, _ in _decisions(scheduler, step_contexts(total))[warmup:]]
        if expected is None or not steady:
            continue
        measured = sum(steady) / len(steady)
        if abs(measured - expected) > 1 / len(steady) + 1e-9:
            raise ContractViolation(
                f"expected_perturbed_fraction({total}) returned {expected:g}, but decide() perturbed {sum(steady)} "
                f"of the {len(steady)} steps from warmup_steps({total}) = {warmup} on ({measured:.3f}); return "
                "the share the decisions have, or None when only a measurement can tell"
            )


@rule(
    "scheduler",
    "diagnostics",
    "diagnostics() after every decide() is a dict of names (identifiers, not a step trace's own columns) to "
    "real numbers",
)
def diagnostics(registry: Registry, name: str) -> None:
    scheduler = create(registry, "scheduler", name)
    for ctx in step_contexts(TOTAL_STEPS):
        _decide(scheduler, ctx)
        values = _stated_now(scheduler, ctx)
        for key, value in values.items():
            if not (isinstance(key, str) and key.isidentifier()) or key in FIXED_COLUMNS:
                raise ContractViolation(
                    f"diagnostics() at step {ctx.step} returned the name {key!r}; expected an identifier other than "
                    f"the step trace's own columns ({', '.join(FIXED_COLUMNS)})"
                )
            if not is_real_number(value):
                raise ContractViolation(
                    f"diagnostics() at step {ctx.step} returned {key}={value!r} ({type(value).__name__}); expected a "
                    "real number on the host (a float, not a tensor: reading a tensor would synchronize the device)"
                )


def _stated_now(scheduler: Any, ctx: StepContext) -> dict[Any, Any]:
    call = getattr(scheduler, "diagnostics", None)
    if call is None:
        return {}
    try:
        values = call()
    except Exception as error:
        raise ContractViolation(f"diagnostics() at step {ctx.step} raised {type(error).__name__}: {error}") from error
    if not isinstance(values, dict):
        raise ContractViolation(f"diagnostics() at step {ctx.step} returned {type(values).__name__}; expected a dict")
    return values


RULES = (decide, deterministic, state_dict_round_trip, total_steps, expected_fraction, diagnostics)
