"""A suite's ``conditions:`` block: settings for the runs whose grid values match (condition-dependent settings).

Papers change a setting with the condition: SAM uses rho = 0.05 at 80% label noise where it uses 0.1
elsewhere (003_dc502e6d0d8ca36d.txt Sec. 3.3, Table 8), AE-SAM trains PyramidNet-110 for 300 epochs and
the other CIFAR models for 200 (001_543051aac35e9f16.txt Sec. 4.1), LookSAM's learning rate and warm-up
grow with the batch size (000_821cd26b06e61c4d.txt Table 11). Each entry::

    conditions:
      - when: {noise_rate: 0.8, method: sam}      # grid values: method, model, dataset, noise_rate, batch_size, seed
        set: {scheduler.rho: 0.05}                # a run setting, block.entry, or component.param
        why: "003 Sec. 3.3 / Table 8: rho = 0.05 at 80% noise"
      - when: {method: nusam, model: resnet18-cifar}
        set: {extension: "nuSAM on a CNN: include_conv, conv kernels as matrices"}
        why: "002 Sec. 5 trains transformers and MLP-Mixers only"

sets its keys on every run whose values match all of ``when``, after the grid expands and before run
ids are computed (so a run that a condition changes gets a new id, and one it does not keeps its id).
Precedence: ``defaults`` < method < conditions (in list order) < ``--set`` (a run setting set on the
command line is never overridden by a condition). Under ``--smoke`` a condition never sets ``epochs``
(the smoke check trains one epoch). Every key and value is checked at load, each error naming the file,
the key (``conditions[0].set.scheduler.rho``), the value and what was expected.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from harness.contract.run_spec import RUN_DEFAULTS, RunSpec
from harness.errors import SuiteError, did_you_mean
from harness.plugins import Registry
from harness.suite.checks import MISSING, Checker
from harness.suite.methods import checked_params, extension
from harness.suite.settings import run_settings

#: The grid values a condition can match, and the run attribute each reads.
WHEN_KEYS = {
    "method": "method",
    "model": "model",
    "dataset": "dataset",
    "noise_rate": "noise_rate",
    "batch_size": "batch_size",
    "seed": "seed",
}
#: ``component.param`` keys: the run attributes holding the component's name and its parameters.
COMPONENTS = {
    "optimizer": ("optimizer", "optimizer_params"),
    "scheduler": ("scheduler", "scheduler_params"),
    "model": ("model", "model_params"),
    "dataset": ("dataset", "dataset_params"),
}
ENTRY_KEYS = ("when", "set", "why")
#: The run label a condition may set besides the run's settings: why its runs are outside the paper's setting.
EXTENSION = "extension"
#: Settings ``--smoke`` fixes, which a condition does not change under it.
SMOKE_FIXED = ("epochs",)


@dataclasses.dataclass(frozen=True)
class Condition:
    """One validated entry: the grid values it matches, the keys it sets (validated values), its citation."""

    when: Mapping[str, Any]
    values: Mapping[str, Any]
    why: str

    def matches(self, run: RunSpec) -> bool:
        return all(getattr(run, WHEN_KEYS[key]) == value for key, value in self.when.items())


def conditions(
    checker: Checker,
    raw: Any,
    registry: Registry,
    defaults: Mapping[str, Any],
    axes: Mapping[str, Sequence[Any]],
) -> list[Condition]:
    """Validate the ``conditions`` block against the suite's grid (``axes``: the values each ``when`` key can take)."""
    if raw in (None, []):
        return []
    parsed = []
    for i, entry in enumerate(checker.listed("conditions", raw)):
        key = f"conditions[{i}]"
        block = checker.mapping(key, entry)
        checker.keys(key, block, ENTRY_KEYS)
        for required in ENTRY_KEYS:
            if required not in block:
                raise checker.fail(f"{key}.{required}", MISSING, _EXPECTED[required])
        when = checker.mapping(f"{key}.when", block["when"])
        checker.keys(f"{key}.when", when, list(WHEN_KEYS))
        if not when:
            raise checker.fail(f"{key}.when", when, _EXPECTED["when"])
        for name, value in when.items():
            allowed = axes[name]
            if value not in allowed:
                raise checker.fail(f"{key}.when.{name}", value, f"one of this suite's values: {list(allowed)}")
        values = checker.mapping(f"{key}.set", block["set"])
        if not values:
            raise checker.fail(f"{key}.set", values, _EXPECTED["set"])
        why = block["why"]
        if not isinstance(why, str) or not why.strip():
            raise checker.fail(f"{key}.why", why, _EXPECTED["why"])
        checked = {
            name: _checked(checker, registry, defaults, f"{key}.set.{name}", name, value)
            for name, value in values.items()
        }
        parsed.append(Condition(when=dict(when), values=checked, why=why.strip()))
    return parsed


_EXPECTED = {
    "when": "a mapping of grid values to match, for example {noise_rate: 0.8} (keys: " + ", ".join(WHEN_KEYS) + ")",
    "set": "a mapping of keys to set, for example {scheduler.rho: 0.05} or {epochs: 300}",
    "why": "a citation saying where the setting comes from, for example '003 Sec. 3.3 / Table 8'",
}


def _checked(checker: Checker, registry: Registry, defaults: Mapping[str, Any], key: str, name: str, value: Any) -> Any:
    """``value`` for the set key ``name``, validated as the suite's own ``defaults`` or component block would be."""
    head, _, entry = name.partition(".")
    if head in COMPONENTS and entry:
        return value  # checked per run in ``apply``, against the component that run uses
    if name == EXTENSION:
        return extension(checker, key, value)
    if head not in RUN_DEFAULTS:
        hint = did_you_mean(head, [*RUN_DEFAULTS, *COMPONENTS, EXTENSION])
        raise SuiteError(
            f"{checker.source}: {key}: unknown key{hint}; expected a run setting ({', '.join(RUN_DEFAULTS)}), "
            f"a block entry (lr_schedule.warmup_steps), a component parameter (optimizer.rho, scheduler.rho, "
            f"model.<param>, dataset.<param>) or {EXTENSION} (why the runs are outside the paper's setting)"
        )
    current = defaults.get(head, RUN_DEFAULTS[head])
    if entry and not isinstance(current, Mapping):
        raise checker.fail(key, value, f"a value for {head} as a whole: {head} is not a block")
    try:
        checked = run_settings(checker, {**defaults, head: {**current, entry: value} if entry else value})[head]
    except SuiteError as error:
        raise SuiteError(
            *(problem.replace("defaults.", key[: len(key) - len(name)], 1) for problem in error.problems)
        ) from None
    return checked[entry] if entry else checked


def apply(
    checker: Checker,
    registry: Registry,
    run: RunSpec,
    found: Sequence[Condition],
    *,
    pinned: Sequence[str] = (),
    smoke: bool = False,
) -> RunSpec:
    """``run`` with the keys of every condition that matches it set, in order (``pinned``: run settings
    given with ``--set``, which win)."""
    changes: dict[str, Any] = {}
    applied = []
    for index, condition in enumerate(found):
        if condition.matches(run):
            names = set_keys(
                checker,
                registry,
                run,
                condition.values,
                f"conditions[{index}].set",
                changes,
                pinned=pinned,
                smoke=smoke,
            )
            applied += [f"{name}={condition.values[name]!r} ({condition.why})" for name in names]
    if not changes:
        return run
    return dataclasses.replace(run, **changes, conditions="; ".join(applied))


def set_keys(
    checker: Checker,
    registry: Registry,
    run: RunSpec,
    values: Mapping[str, Any],
    where: str,
    changes: dict[str, Any],
    *,
    pinned: Sequence[str] = (),
    smoke: bool = False,
) -> list[str]:
    """Add to ``changes`` (RunSpec fields) what setting ``values`` (keys as ``conditions`` take them, values
    checked by ``_checked``) on ``run`` takes; a component parameter is checked against the component ``run``
    uses, an error naming ``<where>.<key>``. Returns the keys set (``pinned`` and, under ``smoke``, the
    ``SMOKE_FIXED`` settings are left as they are). The tuning trials (``harness.suite.tuning``) set theirs
    the same way."""
    names = []
    for name, value in values.items():
        head, _, param = name.partition(".")
        if head in pinned or (smoke and head in SMOKE_FIXED):
            continue
        if head in COMPONENTS and param:
            changes.update(_component_param(checker, registry, run, changes, f"{where}.{name}", name, value))
        elif param:  # an entry of a block setting (lr_schedule.warmup_steps), merged into the run's block
            changes[head] = {**changes.get(head, getattr(run, head)), param: value}
        else:
            changes[head] = value
        names.append(name)
    return names


def _component_param(
    checker: Checker, registry: Registry, run: RunSpec, changes: Mapping[str, Any], key: str, name: str, value: Any
) -> dict[str, Any]:
    """The change that sets ``name`` (``component.param``) on ``run``, checked against its component.

    Errors name ``key``."""
    head, _, param = name.partition(".")
    attribute, params_attribute = COMPONENTS[head]
    component = getattr(run, attribute)
    spec = registry.get(head, component)
    if param not in spec.defaults:
        raise SuiteError(
            f"{checker.source}: {key}: {head} {component!r} (method {run.method}) has no parameter "
            f"{param!r}{did_you_mean(param, list(spec.defaults))}; expected one of: {', '.join(spec.defaults)}"
        )
    checked_params(checker, key.rpartition(".")[0], spec, {param: value}, None)  # type, choices, ranges
    return {params_attribute: {**changes.get(params_attribute, getattr(run, params_attribute)), param: value}}
