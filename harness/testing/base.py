"""What every contract rule shares: the rule record, its two outcomes besides passing, tensor comparisons.

A rule is a plain function ``rule(registry, name) -> None`` that builds the component from the registry
(``registry.create``, exactly as the runner does) and raises ``ContractViolation`` with a message saying
what it did and what the contract expects, or ``ContractSkip`` when the rule cannot be checked here (an
optional dependency or external files are missing). ``harness.testing.checks`` prefixes every message
with the component, its distribution and the rule's name.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from harness.plugins import Registry


class ContractViolation(AssertionError):
    """A component broke a rule of its contract (the message names the component, the rule and the fault)."""


class ContractSkip(Exception):
    """A rule cannot be checked in this environment; the message says why."""


@dataclass(frozen=True)
class Rule:
    """One rule of a kind's contract.

    kind: the component kind (``optimizer``, ``scheduler``, ...). name: a short identifier, used in test
    ids (``exact_restore``). summary: one line saying what the rule requires. check: the function.
    """

    kind: str
    name: str
    summary: str
    check: Callable[[Registry, str], None]


def rule(kind: str, name: str, summary: str) -> Callable[[Callable[[Registry, str], None]], Rule]:
    """Decorator turning ``check(registry, name)`` into a ``Rule`` of ``kind``."""

    def wrap(check: Callable[[Registry, str], None]) -> Rule:
        return Rule(kind, name, summary, check)

    return wrap


def is_real_number(value: Any) -> bool:
    """An ``int`` or ``float`` (NumPy scalars included), not a ``bool``."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    return is_real_number(value) and math.isfinite(value)


def max_difference(expected: torch.Tensor, actual: torch.Tensor) -> float:
    """The largest absolute elementwise difference (``inf`` when shapes or dtypes differ)."""
    if expected.shape != actual.shape or expected.dtype != actual.dtype:
        return math.inf
    if expected.numel() == 0:
        return 0.0
    if not expected.dtype.is_floating_point:
        return 0.0 if bool((expected == actual).all()) else math.inf
    return float((expected.double() - actual.double()).abs().max())


def first_difference(
    expected: Mapping[str, torch.Tensor], actual: Mapping[str, torch.Tensor], tolerance: float = 0.0
) -> tuple[str, float] | None:
    """The first tensor (by name) that differs by more than ``tolerance``, and by how much; ``None`` if none.

    ``tolerance`` 0 compares bit for bit (``torch.equal``).
    """
    import torch

    for key, value in expected.items():
        other = actual.get(key)
        if other is None:
            return key, math.inf
        if tolerance == 0.0 and not torch.equal(value, other):
            return key, max_difference(value, other)
        if tolerance > 0.0 and max_difference(value, other) > tolerance:
            return key, max_difference(value, other)
    return None
