"""The contract of metrics (``register_metrics``): ``factory(**params)`` returns ``metric(model, batches, loss_fn)``.

Every rule calls the metric, built with its registered defaults, as ``harness.run.metrics.run_metrics`` does: on
``ContractNet`` (a BatchNorm layer, a frozen parameter) in eval mode, with two batches and the mean
cross-entropy. The harness restores the model after a metric anyway; the kit checks that the metric does not
rely on that, so it can be used on its own.
"""

from __future__ import annotations

import weakref

import torch.nn.functional as F

from harness.plugins import Registry
from harness.testing.base import ContractViolation, first_difference, is_finite_number, is_real_number, rule
from harness.testing.fixtures import batch, contract_net, create, snapshot

#: Column suffixes that record what a metric spent (its budget, shared/DESIGN.md section 7).
BUDGET_UNITS = ("batches", "samples", "iterations", "steps", "hvps", "evaluations", "examples")
BATCHES = 2


_calls: weakref.WeakKeyDictionary[Registry, dict[str, tuple]] = weakref.WeakKeyDictionary()


def _call(registry: Registry, name: str) -> tuple:
    """The model, the returned columns, and the model's state, modes and flags before the call (cached)."""
    cached = _calls.setdefault(registry, {})
    if name not in cached:
        cached[name] = _call_once(registry, name)
    return cached[name]


def _call_once(registry: Registry, name: str) -> tuple:
    model = contract_net(0, branch=False).eval()
    batches = [batch(100 + i) for i in range(BATCHES)]
    metric = create(registry, "metric", name)
    before = snapshot(model)
    modes = {key: module.training for key, module in model.named_modules()}
    flags = {key: p.requires_grad for key, p in model.named_parameters()}
    try:
        values = metric(model, batches, F.cross_entropy)
    except Exception as error:
        raise ContractViolation(f"metric(model, batches, loss_fn) raised {type(error).__name__}: {error}") from error
    if not isinstance(values, dict):
        raise ContractViolation(f"the metric returned {type(values).__name__}; expected a dict of columns")
    return model, values, before, modes, flags


@rule("metric", "finite_values", "it returns columns named after it, each a finite number (or None)")
def finite_values(registry: Registry, name: str) -> None:
    _, values, *_ = _call(registry, name)
    stray = [key for key in values if not str(key).startswith(name)]
    if stray:
        raise ContractViolation(f"columns {stray} do not start with the metric's name {name!r}")
    bad = {key: value for key, value in values.items() if value is not None and not is_finite_number(value)}
    if bad:
        raise ContractViolation(f"columns {bad} are not finite Python numbers (int or float)")
    if all(value is None for value in values.values()):
        raise ContractViolation("every column is None")


@rule("metric", "budget", "a column records what it spent: <name>_batches, _iterations, _samples, ... (an integer)")
def budget(registry: Registry, name: str) -> None:
    _, values, *_ = _call(registry, name)
    recorded = {
        key: value
        for key, value in values.items()
        if any(key == f"{name}_{unit}" for unit in BUDGET_UNITS) and is_real_number(value) and value == int(value)
    }
    if not recorded:
        units = ", ".join(f"{name}_{unit}" for unit in BUDGET_UNITS)
        raise ContractViolation(f"no column records the budget; add one of {units} (an integer)")
    if f"{name}_batches" in recorded and recorded[f"{name}_batches"] != BATCHES:
        raise ContractViolation(f"{name}_batches is {recorded[f'{name}_batches']}, but it was given {BATCHES} batches")


@rule("metric", "model_unchanged", "the model's weights, buffers, train/eval modes and requires_grad are unchanged")
def model_unchanged(registry: Registry, name: str) -> None:
    model, _, before, modes, flags = _call(registry, name)
    found = first_difference(before, snapshot(model))
    if found is not None:
        raise ContractViolation(f"the metric changed {found[0]!r} (by {found[1]:.3g}); restore what it perturbs")
    changed = [key or "(the model)" for key, module in model.named_modules() if module.training != modes[key]]
    if changed:
        raise ContractViolation(f"the metric was called in eval mode and left {changed} in train mode")
    flipped = [key for key, p in model.named_parameters() if p.requires_grad != flags[key]]
    if flipped:
        raise ContractViolation(f"the metric changed requires_grad of {flipped}")


RULES = (finite_values, budget, model_unchanged)
