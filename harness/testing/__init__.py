"""The contract test kit: checks that a plugin's components keep the contracts of ``harness.contract.hookspecs``.

Every registered component is checked against the rules of its kind (``harness.testing.checks.RULES``):

- optimizer: ``step(closure)`` with the runner's ``BatchClosure``; a ``StepInfo`` after every step; the
  gradient evaluations it implies equal the closure's count; rho=0 reduces to the base optimizer; the
  weights are restored exactly before the base optimizer steps (including a parameter that gets no
  gradient in the second pass and a frozen one); a ``state_dict`` round trip continues bit for bit;
  deterministic under a seed; zero gradients give no NaN; BatchNorm statistics are updated once per
  step; per-group learning rates are respected;
- perturbation scheduler: ``decide`` returns a bool and a finite rho >= 0; deterministic; state round
  trip; honours ``total_steps``; the share of perturbed steps it states in advance is the one it decides;
- model: output shape for its input; deterministic initialization under a seed; parameter count;
- dataset: shapes, dtypes, labels in range, deterministic under a seed, label noise matches its rate;
- metric: finite values, budget recorded, weights and train/eval mode unchanged;
- executor: a small suite gives the same rows as the ``local`` executor;
- preset: names and parameters resolve, and the method builds and steps.

Run it with pytest (this package is also a pytest plugin, registered through ``pytest11``)::

    pytest --sam-harness-contract                                  # every installed plugin
    pytest --sam-harness-contract --sam-harness-dist my-variant    # one distribution's components

or call the checks directly: ``harness.testing.check_optimizer(registry, "my-sam")`` raises
``ContractViolation`` (an ``AssertionError``) naming the component and the rule it breaks.

Importing this package is cheap (no torch); the checks load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "ContractSkip": "harness.testing.base",
    "ContractViolation": "harness.testing.base",
    "Rule": "harness.testing.base",
    "RULES": "harness.testing.checks",
    "check_component": "harness.testing.checks",
    "check_dataset": "harness.testing.checks",
    "check_executor": "harness.testing.checks",
    "check_metric": "harness.testing.checks",
    "check_model": "harness.testing.checks",
    "check_optimizer": "harness.testing.checks",
    "check_preset": "harness.testing.checks",
    "check_scheduler": "harness.testing.checks",
    "contract_cases": "harness.testing.checks",
    "run_rule": "harness.testing.checks",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'harness.testing' has no attribute {name!r}")
