"""The contract rules of every component kind, and the functions that run them.

``RULES`` maps each kind to its rules (``harness.testing.<kind>_rules``). ``run_rule`` runs one rule on one
registered component and raises ``ContractViolation`` whose message names the component, the distribution
that provides it, the rule and what went wrong; ``check_component`` (and ``check_optimizer``,
``check_scheduler``, ...) runs every rule of a component and reports all its violations at once.
``contract_cases`` lists the ``(kind, name, rule)`` triples of the installed plugins, optionally of some
distributions only: the pytest plugin (``harness.testing.plugin``) makes one test of each.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

from harness.plugins import Registry
from harness.testing import (
    dataset_rules,
    executor_rules,
    metric_rules,
    model_rules,
    optimizer_rules,
    preset_rules,
    scheduler_rules,
)
from harness.testing.base import ContractSkip, ContractViolation, Rule

RULES: dict[str, tuple[Rule, ...]] = {
    "optimizer": optimizer_rules.RULES,
    "scheduler": scheduler_rules.RULES,
    "model": model_rules.RULES,
    "dataset": dataset_rules.RULES,
    "metric": metric_rules.RULES,
    "executor": executor_rules.RULES,
    "preset": preset_rules.RULES,
}


def normalize_distribution(name: str) -> str:
    """A distribution name in its normalized form (PEP 503): ``Sam_Harness`` -> ``sam-harness``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def components(registry: Registry, distributions: Iterable[str] = ()) -> list[tuple[str, str]]:
    """``(kind, name)`` of every registered component, of the given distributions only when some are given."""
    wanted = {normalize_distribution(name) for name in distributions}
    return [
        (kind, name)
        for kind in RULES
        for name in registry.names(kind)
        if not wanted or normalize_distribution(registry.get(kind, name).provider) in wanted
    ]


def contract_cases(registry: Registry, distributions: Iterable[str] = ()) -> list[tuple[str, str, str]]:
    """``(kind, name, rule)`` for every rule of every component ``components`` lists."""
    return [(kind, name, rule.name) for kind, name in components(registry, distributions) for rule in RULES[kind]]


def _rule(kind: str, rule_name: str) -> Rule:
    for rule in RULES[kind]:
        if rule.name == rule_name:
            return rule
    known = ", ".join(rule.name for rule in RULES[kind])
    raise ValueError(f"the {kind} contract has no rule {rule_name!r}; its rules: {known}")


def describe(registry: Registry, kind: str, name: str) -> str:
    """``optimizer 'sam' (sam-harness 0.1.0)``: a component and the distribution that provides it."""
    spec = registry.get(kind, name)
    origin = f"{spec.provider} {spec.version}".strip() or "unknown distribution"
    return f"{kind} {name!r} ({origin})"


def run_rule(registry: Registry, kind: str, name: str, rule_name: str) -> None:
    """Check one rule on one component; raises ``ContractViolation`` or ``ContractSkip``."""
    rule = _rule(kind, rule_name)
    where = f"{describe(registry, kind, name)} breaks rule {kind}.{rule.name} ({rule.summary})"
    try:
        rule.check(registry, name)
    except ContractViolation as violation:
        raise ContractViolation(f"{where}: {violation}") from violation.__cause__
    except ContractSkip as skip:
        raise ContractSkip(f"{describe(registry, kind, name)}, rule {kind}.{rule.name}: {skip}") from None
    except Exception as error:  # the component failed in a way no rule anticipated
        raise ContractViolation(f"{where}: {type(error).__name__}: {error}") from error


def check_component(registry: Registry, kind: str, name: str, rules: Sequence[str] | None = None) -> dict[str, str]:
    """Run the rules (all by default) of one component; return ``{rule: "passed" | "skipped: why"}``.

    Raises ``ContractViolation`` listing every broken rule, one per line.
    """
    outcomes: dict[str, str] = {}
    violations: list[str] = []
    for rule_name in rules if rules is not None else [rule.name for rule in RULES[kind]]:
        try:
            run_rule(registry, kind, name, rule_name)
        except ContractSkip as skip:
            outcomes[rule_name] = f"skipped: {skip}"
        except ContractViolation as violation:
            outcomes[rule_name] = "failed"
            violations.append(str(violation))
        else:
            outcomes[rule_name] = "passed"
    if violations:
        raise ContractViolation("\n".join(violations))
    return outcomes


def _kind_checker(kind: str) -> Callable[..., dict[str, str]]:
    def check(registry: Registry, name: str, rules: Sequence[str] | None = None) -> dict[str, str]:
        return check_component(registry, kind, name, rules)

    check.__name__ = check.__qualname__ = f"check_{kind}"
    check.__doc__ = f"``check_component(registry, {kind!r}, name, rules)``."
    return check


check_optimizer = _kind_checker("optimizer")
check_scheduler = _kind_checker("scheduler")
check_model = _kind_checker("model")
check_dataset = _kind_checker("dataset")
check_metric = _kind_checker("metric")
check_executor = _kind_checker("executor")
check_preset = _kind_checker("preset")
