"""Argument checks shared by the schedulers: each error names the scheduler, the parameter and the valid range."""

from __future__ import annotations

import math


def check_rho(scheduler: str, name: str, value: float) -> float:
    """``value`` as a float, refusing negative or non-finite radii."""
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{scheduler} scheduler: {name} must be a finite number >= 0, got {value!r}")
    return value


def check_unit_interval(scheduler: str, name: str, value: float) -> float:
    """``value`` as a float in [0, 1] (a probability, a fraction of training)."""
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{scheduler} scheduler: {name} must lie in [0, 1], got {value!r}")
    return value


def check_integer(scheduler: str, name: str, value: int, minimum: int | None = None) -> int:
    """``value`` as an int (bools refused), at least ``minimum`` when one is given."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{scheduler} scheduler: {name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{scheduler} scheduler: {name} must be >= {minimum}, got {value}")
    return value


def require_total_steps(scheduler: str, total_steps: int) -> int:
    """``total_steps`` when it is known; schedules that depend on the run's length need it."""
    if total_steps <= 0:
        raise ValueError(
            f"{scheduler} scheduler: the step context has total_steps={total_steps}, but this schedule depends on "
            "the length of the run; the runner must set optimizer.total_steps before the first step"
        )
    return total_steps
