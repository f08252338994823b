"""Frozen records that the ``register_*`` hooks hand to the harness.

A spec describes one named component (an optimizer, a scheduler, a model, ...) without building
it: ``factory`` is either a callable or a lazy ``"package.module:attribute"`` string, so listing
plugins (``harness plugins``) imports no torch and no model code. This follows timm's registry
records and conda's typed plugin records (see shared/STYLE.md).

``provider`` and ``version`` are left empty by plugins; the registry fills them in with the
distribution that registered the spec, and they are written into every result row.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.:-]*$")
_FACTORY_PATTERN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def _freeze(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


def load_object(path: str) -> Any:
    """Import ``"package.module:attribute"`` (the attribute may be dotted) and return the object."""
    module_name, _, attribute = path.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class Spec:
    """Common fields of every spec record.

    name: the registry name users write in suites (lower case, digits, ``- _ . :``).
    factory: the callable that builds the component, or its lazy ``"pkg.mod:attr"`` path.
    defaults: the keyword arguments the factory accepts, with their default values. Suites may only
        set keys listed here (strict schema), and values are type-checked against these defaults.
    description: one line for ``harness plugins``.
    paper: the reference the component implements (file and section in shared/papers), if any.
    choices: for parameters that take one of a few values, the allowed values (suites are checked
        against them before anything trains).
    suffix_param: makes the spec a family: a name ending in ``:`` (``timm:``) then stands for every
        ``timm:<suffix>``, and the suffix is passed as the parameter named here (``model``).
    later_params: parameters added after the component's first release. A run's resolved configuration,
        and so its id, lists them only when a suite sets them to something else than their default, so
        results written before they existed keep their ids and resume (the factory still gets the default).
    provider, version: filled in by the registry (distribution name and version).
    """

    kind: ClassVar[str] = "component"

    name: str
    factory: Callable[..., Any] | str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    paper: str = ""
    choices: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    suffix_param: str = ""
    later_params: tuple[str, ...] = ()
    provider: str = ""
    version: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_PATTERN.match(self.name):
            raise ValueError(
                f"{self.kind} name {self.name!r} is invalid: expected lower-case letters, digits and '-_.:'"
            )
        if isinstance(self.factory, str):
            if not _FACTORY_PATTERN.match(self.factory):
                raise ValueError(
                    f"{self.kind} {self.name!r}: factory {self.factory!r} is not a 'package.module:attribute' path"
                )
        elif not callable(self.factory):
            raise TypeError(f"{self.kind} {self.name!r}: factory must be callable or a 'pkg.mod:attr' string")
        if self.suffix_param and not (self.name.endswith(":") and self.suffix_param in self.defaults):
            raise ValueError(
                f"{self.kind} {self.name!r}: a family spec (suffix_param={self.suffix_param!r}) needs a name ending "
                f"in ':' and {self.suffix_param!r} in its defaults"
            )
        object.__setattr__(self, "defaults", _freeze(self.defaults))
        object.__setattr__(self, "choices", _freeze({k: tuple(v) for k, v in dict(self.choices).items()}))
        for key, allowed in self.choices.items():
            if key not in self.defaults or self.defaults[key] not in allowed:
                raise ValueError(f"{self.kind} {self.name!r}: choices for {key!r} must include its default")
        object.__setattr__(self, "later_params", tuple(self.later_params))
        unknown = [key for key in self.later_params if key not in self.defaults]
        if unknown:
            raise ValueError(f"{self.kind} {self.name!r}: later_params {unknown} must be keys of its defaults")

    def member(self, name: str) -> Spec:
        """The spec of one member of a family (``timm:resnet50`` of ``timm:``)."""
        suffix = name[len(self.name) :]
        return dataclasses.replace(
            self, name=name, suffix_param="", defaults={**self.defaults, self.suffix_param: suffix}
        )

    def load(self) -> Callable[..., Any]:
        """Return the factory, importing it first if it is a lazy path."""
        if isinstance(self.factory, str):
            return load_object(self.factory)
        return self.factory

    def with_provider(self, provider: str, version: str) -> Spec:
        """A copy carrying the distribution that registered it."""
        return dataclasses.replace(self, provider=provider, version=version)


@dataclass(frozen=True)
class OptimizerSpec(Spec):
    """A sharpness-aware optimizer: ``factory(params, *, base_optimizer, scheduler, **hparams)``."""

    kind: ClassVar[str] = "optimizer"


@dataclass(frozen=True)
class SchedulerSpec(Spec):
    """A perturbation scheduler: ``factory(**params) -> PerturbationScheduler``."""

    kind: ClassVar[str] = "scheduler"


def _load_optional(path: Callable[..., Any] | str | None) -> Callable[..., Any] | None:
    if path is None or callable(path):
        return path
    return load_object(path)


@dataclass(frozen=True)
class ModelSpec(Spec):
    """A model: ``factory(*, num_classes, input_shape, **params) -> torch.nn.Module``.

    check: optional callable (or lazy path) ``check(*, num_classes, input_shape, **params)`` that
        raises ``ValueError`` with a clear message when the model cannot take that input (wrong
        channels, image size or class count); ``harness validate`` calls it before anything trains.
    """

    kind: ClassVar[str] = "model"
    check: Callable[..., Any] | str | None = None

    def load_check(self) -> Callable[..., Any] | None:
        return _load_optional(self.check)


@dataclass(frozen=True)
class DatasetSpec(Spec):
    """A dataset: ``factory(*, device, **params) -> harness.contract.data.ClassificationData``.

    describe: optional callable (or lazy path) ``describe(**params) -> (input_shape, num_classes)``
        that answers without loading the data, so suites can check model/dataset combinations.
    """

    kind: ClassVar[str] = "dataset"
    describe: Callable[..., Any] | str | None = None

    def load_describe(self) -> Callable[..., Any] | None:
        return _load_optional(self.describe)


@dataclass(frozen=True)
class MetricSpec(Spec):
    """A metric computed on a trained model: ``factory(**params)`` returns a callable metric."""

    kind: ClassVar[str] = "metric"


@dataclass(frozen=True)
class ExecutorSpec(Spec):
    """An executor that runs a list of runs: ``factory(**params)`` returns an executor."""

    kind: ClassVar[str] = "executor"


@dataclass(frozen=True)
class PresetSpec:
    """A named method from a paper: an optimizer and a scheduler with the paper's settings.

    optimizer / scheduler: registry names; optimizer_params / scheduler_params: the paper's values
    (they override the specs' defaults, and a suite may override them in turn).
    base_optimizer: the base optimizer the paper used (``None`` keeps the suite's choice).
    models: the model names of the paper's domain (nuSAM: transformers and MLP-Mixers, whose weights are
        matrices); a suite that runs the preset on another model must state why, as an ``extension``
        (``harness.suite.domains``). Empty: no domain declared, every model is the paper's setting.
    """

    kind: ClassVar[str] = "preset"

    name: str
    optimizer: str
    scheduler: str = "constant"
    optimizer_params: Mapping[str, Any] = field(default_factory=dict)
    scheduler_params: Mapping[str, Any] = field(default_factory=dict)
    base_optimizer: Mapping[str, Any] | None = None
    description: str = ""
    paper: str = ""
    models: tuple[str, ...] = ()
    provider: str = ""
    version: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_PATTERN.match(self.name):
            raise ValueError(f"preset name {self.name!r} is invalid: expected lower-case letters, digits and '-_.:'")
        if isinstance(self.models, str) or not all(isinstance(model, str) for model in self.models):
            raise ValueError(f"preset {self.name!r}: models {self.models!r} is invalid: expected model names")
        object.__setattr__(self, "models", tuple(self.models))
        object.__setattr__(self, "optimizer_params", _freeze(self.optimizer_params))
        object.__setattr__(self, "scheduler_params", _freeze(self.scheduler_params))
        if self.base_optimizer is not None:
            object.__setattr__(self, "base_optimizer", _freeze(self.base_optimizer))

    def with_provider(self, provider: str, version: str) -> PresetSpec:
        """A copy carrying the distribution that registered it."""
        return dataclasses.replace(self, provider=provider, version=version)


SPEC_TYPES: dict[str, type] = {
    "optimizer": OptimizerSpec,
    "scheduler": SchedulerSpec,
    "model": ModelSpec,
    "dataset": DatasetSpec,
    "metric": MetricSpec,
    "executor": ExecutorSpec,
    "preset": PresetSpec,
}
