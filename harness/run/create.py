"""Any registered variant in a plain PyTorch loop: ``harness.create_optimizer`` (timm's ``create_optimizer_v2`` style).

The harness builds a run's optimizer from a suite; a user with their own training loop wants the same
object in a few lines::

    optimizer = harness.create_optimizer("looksam", model, base={"name": "momentum", "lr": 0.1}, total_steps=1000)
    for inputs, targets in loader:
        optimizer.step(harness.BatchClosure(model, F.cross_entropy, inputs, targets))

``method`` is a preset (``sam``, ``looksam``, ``ae-sam``, ...: the paper's optimizer, scheduler and settings,
as in a suite's ``methods:``) or an optimizer's registry name (then driven by the ``constant`` scheduler
unless ``scheduler`` names another). Keyword settings go to whichever of the two components declares them
(``rho`` to the scheduler, ``alpha`` to GSAM); one that neither declares is an error naming both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from harness.errors import UsageError, did_you_mean
from harness.plugins import Registry
from harness.run.build import build_base_optimizer

#: The base optimizer when neither the call nor the preset names one: the suites' default.
DEFAULT_BASE = {"name": "momentum", "lr": 0.05, "momentum": 0.9, "weight_decay": 5.0e-4}


def create_optimizer(
    method: str,
    model: nn.Module | Iterable[Any],
    *,
    base: torch.optim.Optimizer | Mapping[str, Any] | None = None,
    scheduler: str | None = None,
    total_steps: int = 0,
    registry: Registry | None = None,
    **settings: Any,
) -> torch.optim.Optimizer:
    """The sharpness-aware optimizer ``method`` on ``model``'s parameters, ready for ``step(closure)``.

    model: a module, or its ``named_parameters()`` (names matter to variants that choose layers by name:
        LayerSAM, SAM-ON), or plain parameters (named by position).
    base: the base optimizer: one built on the same parameters, or timm settings (``{"name": "adamw", "lr":
        1e-3}``) for ``timm.optim.create_optimizer_v2``. None: the preset's base optimizer, else ``DEFAULT_BASE``.
    scheduler: a perturbation scheduler's name, replacing the preset's (its settings then do not carry over).
    total_steps: the steps the training will take (schedules that depend on it: nuSAM's delay, GSAM's rho_t;
        0 when unknown).
    settings: the components' parameters, overriding the preset's.
    """
    registry = registry or Registry.from_plugins()
    named = _named(model)
    optimizer_name, scheduler_name, optimizer_params, scheduler_params, preset_base = _resolve(
        registry, method, scheduler
    )
    optimizer_spec = registry.get("optimizer", optimizer_name)
    scheduler_spec = registry.get("scheduler", scheduler_name)
    for key, value in settings.items():
        if key in scheduler_spec.defaults:
            scheduler_params[key] = value
        elif key in optimizer_spec.defaults:
            optimizer_params[key] = value
        else:
            accepted = sorted({*scheduler_spec.defaults, *optimizer_spec.defaults})
            raise UsageError(
                f"create_optimizer({method!r}): {key}={value!r} is a setting of neither optimizer {optimizer_name!r} "
                f"nor scheduler {scheduler_name!r}{did_you_mean(key, accepted)}; they accept {accepted}"
            )
    parameters = model if isinstance(model, nn.Module) else [p for _, p in named]  # a module: timm's decay groups
    base_optimizer = _base(base if base is not None else preset_base or DEFAULT_BASE, parameters)
    trained = {id(p) for group in base_optimizer.param_groups for p in group["params"]}
    optimizer = registry.create(
        "optimizer",
        optimizer_name,
        [(name, p) for name, p in named if id(p) in trained],
        base_optimizer=base_optimizer,
        scheduler=registry.create("scheduler", scheduler_name, **scheduler_params),
        **optimizer_params,
    )
    optimizer.total_steps = int(total_steps)
    return optimizer


def _named(model: nn.Module | Iterable[Any]) -> list[tuple[str, torch.Tensor]]:
    if isinstance(model, nn.Module):
        return [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    items = list(model)
    if all(isinstance(item, tuple) and len(item) == 2 for item in items):
        return [(str(name), p) for name, p in items]
    if all(isinstance(item, torch.Tensor) for item in items):
        return [(str(index), p) for index, p in enumerate(items)]
    raise UsageError("create_optimizer: model must be a module, its named_parameters() or a list of parameters")


def _resolve(
    registry: Registry, method: str, scheduler: str | None
) -> tuple[str, str, dict[str, Any], dict[str, Any], Mapping[str, Any] | None]:
    """(optimizer, scheduler, their parameters, the base optimizer's settings) of a preset or an optimizer name."""
    if method in registry.names("preset"):
        preset = registry.get("preset", method)
        keeps_scheduler = scheduler in (None, preset.scheduler)
        return (
            preset.optimizer,
            preset.scheduler if keeps_scheduler else scheduler,
            dict(preset.optimizer_params),
            dict(preset.scheduler_params) if keeps_scheduler else {},
            preset.base_optimizer,
        )
    if method in registry.names("optimizer"):
        return method, scheduler or "constant", {}, {}, None
    known = sorted({*registry.names("preset"), *registry.names("optimizer")})
    raise UsageError(
        f"create_optimizer: {method!r} is neither a preset nor an optimizer{did_you_mean(method, known)}; "
        f"known: {known}"
    )


def _base(
    base: torch.optim.Optimizer | Mapping[str, Any], params: nn.Module | list[torch.Tensor]
) -> torch.optim.Optimizer:
    """``base`` itself, or the optimizer timm builds from its settings (on a module: no weight decay on biases and
    normalization weights, as the harness's runs)."""
    if isinstance(base, torch.optim.Optimizer):
        return base
    settings = dict(base)
    if "name" not in settings:
        raise UsageError(f"create_optimizer: base={settings!r} names no optimizer; expected e.g. {DEFAULT_BASE}")
    return build_base_optimizer(params, settings)
