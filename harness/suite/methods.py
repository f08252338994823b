"""A suite's methods (presets, preset overrides, inline methods) and components, checked against the registry.

``method`` resolves a ``methods:`` entry to its optimizer, scheduler and base optimizer with their
parameters, and its ``extension`` text (why it runs outside its paper's setting, ``harness.suite.domains``);
``component`` resolves a model, dataset, metric or executor entry to ``(name, params)``. Parameters are
checked against the component's spec defaults (keys, types, ranges, declared choices) and merged over
them; a later parameter left at its default stays out, so older run ids keep.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.errors import SHORT_REPR_CHARS, SuiteError, UnknownNameError, did_you_mean, short_repr
from harness.plugins import Registry
from harness.suite.checks import MISSING, Checker
from harness.suite.settings import base_optimizer

METHOD_KEYS = ("name", "preset", "optimizer", "scheduler", "base_optimizer", "extension")


def method(
    checker: Checker, registry: Registry, key: str, raw: Any, base_optimizer_block: Mapping[str, Any]
) -> dict[str, Any]:
    if isinstance(raw, str):
        raw = {"preset": raw}
    value = checker.mapping(key, raw)
    checker.keys(key, value, METHOD_KEYS)
    optimizer_block = checker.mapping(f"{key}.optimizer", value.get("optimizer", {}))
    scheduler_block = checker.mapping(f"{key}.scheduler", value.get("scheduler", {}))
    preset_name = value.get("preset")
    preset = None
    base = dict(base_optimizer_block)
    if preset_name is not None:
        preset = _lookup(checker, registry, "preset", f"{key}.preset", preset_name)
        optimizer_name = optimizer_block.pop("name", preset.optimizer)
        scheduler_name = scheduler_block.pop("name", preset.scheduler)
        if preset.base_optimizer:
            base = {**base, **preset.base_optimizer}
        method_name = value.get("name", preset_name)
    else:
        if "name" not in value:
            raise checker.fail(f"{key}.name", MISSING, "a method name (or 'preset: <name>')")
        if "name" not in optimizer_block:
            raise checker.fail(f"{key}.optimizer.name", MISSING, "an optimizer name (or 'preset: <name>')")
        optimizer_name = optimizer_block.pop("name")
        scheduler_name = scheduler_block.pop("name", "constant")
        method_name = value["name"]
    checker.path_name(
        f"{key}.name", method_name, "a method name (a preset's unless set; it starts the run id, a file name)"
    )
    base = base_optimizer(checker, f"{key}.base_optimizer", value.get("base_optimizer", {}), base)
    optimizer_spec = _lookup(checker, registry, "optimizer", f"{key}.optimizer.name", optimizer_name)
    scheduler_spec = _lookup(checker, registry, "scheduler", f"{key}.scheduler.name", scheduler_name)
    optimizer_params, scheduler_params = optimizer_block, scheduler_block
    if preset is not None:
        optimizer_params = {
            **_inherited(preset.optimizer_params, preset.optimizer, optimizer_name, optimizer_spec),
            **optimizer_block,
        }
        scheduler_params = {
            **_inherited(preset.scheduler_params, preset.scheduler, scheduler_name, scheduler_spec),
            **scheduler_block,
        }
    return {
        "name": method_name,
        "preset": preset_name or "",
        "optimizer": optimizer_name,
        "optimizer_params": checked_params(
            checker, f"{key}.optimizer", optimizer_spec, optimizer_params, scheduler_spec
        ),
        "scheduler": scheduler_name,
        "scheduler_params": checked_params(
            checker, f"{key}.scheduler", scheduler_spec, scheduler_params, optimizer_spec
        ),
        "base_optimizer": base,
        "extension": extension(checker, f"{key}.extension", value.get("extension", "")),
    }


def extension(checker: Checker, key: str, raw: Any) -> str:
    """An ``extension`` text: why a method runs outside its paper's setting ('' for the paper's own setting)."""
    if not isinstance(raw, str):
        raise checker.fail(key, raw, "a text saying why the method runs outside its paper's setting")
    return raw.strip()


def _inherited(params: Mapping[str, Any], preset_component: str, name: str, spec: Any) -> dict[str, Any]:
    """The preset's parameters for its component that carry over to the method's component ``name``.

    All of them when the method keeps the preset's component; when it names another one, those the other
    accepts (``{preset: sam, scheduler: {name: periodic, k: 5}}`` keeps SAM's rho, a switch to ``never``
    drops it instead of failing on it).
    """
    if name == preset_component:
        return dict(params)
    return {param: value for param, value in params.items() if param in spec.defaults}


def component(checker: Checker, registry: Registry, kind: str, key: str, raw: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(raw, str):
        raw = {"name": raw}
    value = checker.mapping(key, raw)
    name = value.pop("name", MISSING)
    if name is MISSING:
        raise checker.fail(f"{key}.name", name, f"a {kind} name")
    spec = _lookup(checker, registry, kind, f"{key}.name", name)
    if kind == "dataset" and "noise_rate" in value:  # the grid sets it; a value here would be ignored
        raise checker.fail(
            f"{key}.noise_rate",
            value["noise_rate"],
            f"no noise rate here: list label-noise rates in the top-level 'noise_rates: "
            f"[{short_repr(value['noise_rate'])}]', which expands into the grid",
        )
    return name, checked_params(checker, key, spec, value, None)


def _lookup(checker: Checker, registry: Registry, kind: str, key: str, name: Any) -> Any:
    checker.name(key, name)
    try:
        return registry.get(kind, name)
    except UnknownNameError as error:
        raise SuiteError(f"{checker.source}: {key}: {error}") from None


def checked_params(checker: Checker, key: str, spec: Any, params: Mapping[str, Any], sibling: Any) -> dict[str, Any]:
    """Check ``params`` against ``spec.defaults`` (keys, types, ranges) and merge them in."""
    allowed = list(spec.defaults)
    for name, value in params.items():
        if name not in spec.defaults:
            name = str(name) if len(str(name)) <= SHORT_REPR_CHARS else short_repr(name)  # a 1 MiB key
            hint = ""
            if sibling is not None and name in sibling.defaults:
                hint = f"; {name!r} is a parameter of the {sibling.kind} {sibling.name!r}, set it there"
            expected = ", ".join(allowed) or f"no parameters (the {spec.kind} {spec.name!r} takes none)"
            raise SuiteError(
                f"{checker.source}: {key}.{name}: unknown parameter of {spec.kind} {spec.name!r}"
                f"{did_you_mean(str(name), allowed)}; expected one of: {expected}{hint}"
            )
        check_param_type(checker, f"{key}.{name}", value, spec.defaults[name])
        allowed_values = getattr(spec, "choices", {}).get(name)
        if allowed_values is not None and value not in allowed_values:
            raise checker.fail(f"{key}.{name}", value, f"one of {', '.join(map(repr, allowed_values))}")
        if name == "rho" or name.startswith("rho_"):
            checker.number(f"{key}.{name}", value, 0.0)
        if name == "noise_rate":
            checker.number(f"{key}.{name}", value, 0.0, below=1.0)
    merged = {**spec.defaults, **params}
    return {k: v for k, v in merged.items() if k not in spec.later_params or v != spec.defaults[k]}


#: The components whose ``seed`` is null or an integer >= 0 whatever its default: left null, it is derived
#: from the run seed (``harness.component_seed``). A model's, dataset's or metric's ``seed`` has its default's type.
SEEDED_COMPONENTS = ("optimizer", "scheduler")


def check_param_type(checker: Checker, key: str, value: Any, default: Any) -> None:
    """A component parameter's ``value`` has its ``default``'s type (an optimizer's or scheduler's ``seed``:
    null or an integer >= 0). ``key`` ends in ``<component>.<parameter>`` (``methods[2].scheduler.seed``)."""
    component, _, name = key.rpartition(".")
    if name == "seed" and component.rpartition(".")[2] in SEEDED_COMPONENTS:
        if value is not None:
            checker.integer(key, value, 0)
        return
    if default is None:
        return
    if isinstance(default, bool):
        ok, expected = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, expected = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        expected = "a number"
    elif isinstance(default, str):
        ok, expected = isinstance(value, str), "a string"
    elif isinstance(default, (list, tuple)):
        ok, expected = isinstance(value, (list, tuple)), "a list"
    else:
        ok, expected = True, ""
    if not ok:
        raise checker.fail(key, value, f"{expected} (the default is {default!r})")
