"""The contract of presets (``register_presets``): a named method that resolves, builds and steps.

A preset names an optimizer and a scheduler with parameters; suites expand it without further checks, so
the kit checks that the names exist, that every parameter is one the component declares in its defaults,
and that the method builds with them and takes two steps on ``ContractNet``.
"""

from __future__ import annotations

from harness.plugins import Registry
from harness.testing.base import ContractViolation, rule
from harness.testing.fixtures import build_optimizer, check_step_info, contract_net, create, take_step


@rule("preset", "builds", "its optimizer and scheduler exist, take its parameters, and step")
def builds(registry: Registry, name: str) -> None:
    preset = registry.get("preset", name)
    for kind, component, params in (
        ("optimizer", preset.optimizer, preset.optimizer_params),
        ("scheduler", preset.scheduler, preset.scheduler_params),
    ):
        if component not in registry.names(kind):
            raise ContractViolation(f"its {kind} {component!r} is not registered")
        unknown = sorted(set(params) - set(registry.get(kind, component).defaults))
        if unknown:
            raise ContractViolation(f"its {kind}_params {unknown} are not parameters of the {kind} {component!r}")
    if preset.base_optimizer is not None and "name" not in preset.base_optimizer:
        raise ContractViolation(f"its base_optimizer {dict(preset.base_optimizer)} has no 'name'")
    model = contract_net(0)
    scheduler = create(registry, "scheduler", preset.scheduler, **preset.scheduler_params)
    optimizer, _ = build_optimizer(registry, preset.optimizer, model, scheduler, **preset.optimizer_params)
    for step in range(2):
        check_step_info(take_step(model, optimizer, step).info, step)


RULES = (builds,)
