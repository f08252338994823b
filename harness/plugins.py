"""Plugin manager factory, entry-point loading, and the registry of named components.

``get_plugin_manager()`` builds a fresh pluggy manager every call (no module global, so every test
gets its own). Loading order (shared/DESIGN.md section 3):

1. the block-list ``HARNESS_DISABLE_PLUGINS`` (comma-separated entry-point or distribution names);
2. the ``sam_harness`` entry points, one by one: a plugin that fails to import is skipped with a
   ``PluginLoadWarning`` naming it and the error (one line on stderr), or raises ``PluginError`` when
   ``HARNESS_STRICT_PLUGINS=1`` (pluggy's own ``load_setuptools_entrypoints`` would abort on the
   first broken plugin); entry points are keyed by distribution and name: one name offered by two
   distributions raises ``DuplicateNameError`` naming both (a stranger's ``sam = ...`` would otherwise
   replace the built-in ``sam`` module, and every component it registers, without a word);
3. ``check_pending()``, so a misspelled hook name fails at start-up instead of being ignored.

``Registry`` collects the ``register_*`` hooks' specs, tags each with its provider distribution and
version, refuses a name registered twice (naming both providers), lists names with wildcards and
answers unknown names with a "did you mean".
"""

from __future__ import annotations

import fnmatch
import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pluggy

from harness.contract import hookspecs
from harness.contract.specs import SPEC_TYPES
from harness.errors import SHORT_REPR_CHARS, DuplicateNameError, PluginError, UnknownNameError, did_you_mean, short_repr

ENTRY_POINT_GROUP = hookspecs.PROJECT_NAME
DISABLE_ENV = "HARNESS_DISABLE_PLUGINS"
STRICT_ENV = "HARNESS_STRICT_PLUGINS"

KINDS: tuple[str, ...] = tuple(SPEC_TYPES)
#: Skipped-plugin warnings already shown by this process. A driver builds several registries (the suite's,
#: the executor's preload list) and Python's own once-per-location filter is reset whenever a library
#: changes the warning filters (torch and timm do on import), so without this each warning printed twice.
_WARNED: set[str] = set()
_REGISTER_HOOK = {kind: f"register_{kind}s" for kind in KINDS}


class PluginLoadWarning(UserWarning):
    """A plugin was skipped because it failed to import.

    Shown as one line, ``warning: <message>`` (``_format_warning``): the message names the plugin, its
    distribution and the error, and Python's ``file:line: Category:`` prefix and source line would point
    at the harness's loader instead. Filters and ``pytest.warns`` see it as any other warning.
    """


def _format_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None
) -> str:
    """``warnings.formatwarning`` for every warning: one line for a ``PluginLoadWarning``, Python's format else."""
    if issubclass(category, PluginLoadWarning):
        return f"warning: {message}\n"
    return _python_format_warning(message, category, filename, lineno, line)


_python_format_warning = warnings.formatwarning
warnings.formatwarning = _format_warning


@dataclass(frozen=True)
class Provider:
    """Where a registered plugin object came from."""

    name: str
    distribution: str
    version: str


def _env_list(name: str) -> set[str]:
    return {item.strip() for item in os.environ.get(name, "").split(",") if item.strip()}


def _strict() -> bool:
    return os.environ.get(STRICT_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def _entry_points() -> list[metadata.EntryPoint]:
    return sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def loaded_entry_points() -> list[tuple[str, str]]:
    """``(name, "module:attr")`` of every ``sam_harness`` entry point this process sees.

    Executors send this list to their worker processes (``extra_entry_points``), so a worker trains
    with the plugins the driver validated the suite against, including entry points added at run
    time that a fresh interpreter would not find itself.
    """
    return [(entry_point.name, entry_point.value) for entry_point in _entry_points()]


def get_plugin_manager(
    *,
    load_entry_points: bool = True,
    plugins: Iterable[Any] = (),
    extra_entry_points: Iterable[tuple[str, str]] = (),
) -> pluggy.PluginManager:
    """Build a new plugin manager with every installed plugin loaded and checked.

    load_entry_points: load the ``sam_harness`` entry points (tests turn this off to start empty).
    plugins: extra plugin objects (modules or instances) to register, after the entry points.
    extra_entry_points: ``(name, "module:attr")`` entry points to load as well as the installed ones
        (the driver's ``loaded_entry_points()``, in a worker process); ones already installed are
        loaded once. Ignored with ``load_entry_points=False``, which loads no entry point at all.

    Raises ``PluginError`` for a plugin that fails to import in strict mode, and for a hook
    implementation with no matching hook specification (a misspelled hook name).
    """
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    manager.harness_providers = {}  # plugin name -> Provider
    if load_entry_points:
        _load_entry_points(manager, extra_entry_points)
    for plugin in plugins:
        name = manager.register(plugin)
        manager.harness_providers[name] = Provider(name, getattr(plugin, "__name__", name), "")
    try:
        manager.check_pending()
    except pluggy.PluginValidationError as error:
        raise PluginError(
            f"plugin {error.plugin!r} implements a hook that sam_harness does not define: {error}. "
            f"Known hooks: {', '.join(sorted(_hook_names()))}"
        ) from error
    return manager


def _hook_names() -> list[str]:
    return [name for name in dir(hookspecs) if hasattr(getattr(hookspecs, name), "sam_harness_spec")]


def _with_extra(extra: Iterable[tuple[str, str]]) -> list[metadata.EntryPoint]:
    installed = _entry_points()
    seen = {(entry_point.name, entry_point.value) for entry_point in installed}
    added = [
        metadata.EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)
        for name, value in extra
        if (name, value) not in seen
    ]
    return sorted([*installed, *added], key=lambda entry_point: entry_point.name)


def _load_entry_points(manager: pluggy.PluginManager, extra: Iterable[tuple[str, str]]) -> None:
    blocked = _env_list(DISABLE_ENV)
    claimed: dict[str, tuple[str, str, str]] = {}  # entry-point name -> (distribution, version, value)
    for entry_point in _with_extra(extra):
        distribution = entry_point.dist.name if entry_point.dist else "unknown"
        version = entry_point.dist.version if entry_point.dist else ""
        if entry_point.name in blocked or distribution in blocked:
            continue
        first = claimed.setdefault(entry_point.name, (distribution, version, entry_point.value))
        if first[0] != distribution:
            raise DuplicateNameError(
                _entry_point_clash(entry_point.name, first, (distribution, version, entry_point.value))
            )
        if manager.get_plugin(entry_point.name) is not None:
            continue  # the same distribution's entry point seen twice (duplicate installs on sys.path)
        try:
            plugin = entry_point.load()
        except Exception as error:  # a broken plugin must not take the harness down
            message = (
                f"sam_harness plugin {entry_point.name!r} ({entry_point.value}, from {distribution} {version}) "
                f"failed to import and was skipped: {type(error).__name__}: {error}"
            )
            if _strict():
                raise PluginError(message + f" ({STRICT_ENV}=1 makes this fatal)") from error
            if message not in _WARNED:  # once per process, however many registries it builds
                _WARNED.add(message)
                warnings.warn(message, PluginLoadWarning, stacklevel=3)
            continue
        manager.register(plugin, name=entry_point.name)
        manager.harness_providers[entry_point.name] = Provider(entry_point.name, distribution, version)


def _entry_point_clash(name: str, first: tuple[str, str, str], second: tuple[str, str, str]) -> str:
    """Two distributions offer a ``sam_harness`` entry point of one name: loading either would hide the other.

    Entry points are keyed by distribution and name, so a stranger's ``sam = ...`` can never silently
    replace the built-in plugin module (and with it every component that module registers).
    """
    shown = [f"{distribution} {version}".strip() + f" ({value})" for distribution, version, value in (first, second)]
    return (
        f"sam_harness entry point {name!r} is provided by two distributions: {shown[0]} and {shown[1]}. "
        f"Refused rather than letting one replace the other; uninstall one, or block one with "
        f"{DISABLE_ENV}=<distribution name>"
    )


class Registry:
    """Every named component the loaded plugins registered, by kind.

    Kinds: optimizer, scheduler, model, dataset, metric, executor, preset. Build it with
    ``Registry.from_plugins()`` (loads entry points; ``extra_entry_points=`` adds more) or
    ``Registry(manager)``.
    """

    def __init__(self, manager: pluggy.PluginManager) -> None:
        self.manager = manager
        self._specs: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}
        self._origins: dict[str, dict[str, Provider]] = {kind: {} for kind in KINDS}
        for kind in KINDS:
            self._collect(kind)

    @classmethod
    def from_plugins(cls, **kwargs: Any) -> Registry:
        """A registry over a fresh plugin manager (``get_plugin_manager(**kwargs)``)."""
        return cls(get_plugin_manager(**kwargs))

    def _collect(self, kind: str) -> None:
        hook_name = _REGISTER_HOOK[kind]
        spec_type = SPEC_TYPES[kind]
        providers: dict[str, Provider] = getattr(self.manager, "harness_providers", {})
        for impl in reversed(getattr(self.manager.hook, hook_name).get_hookimpls()):
            provider = providers.get(impl.plugin_name, Provider(impl.plugin_name, impl.plugin_name, ""))
            for spec in impl.function() or ():
                if not isinstance(spec, spec_type):
                    raise PluginError(
                        f"plugin {impl.plugin_name!r} ({provider.distribution}) returned "
                        f"{type(spec).__name__} from {hook_name}; expected {spec_type.__name__} records"
                    )
                existing = self._origins[kind].get(spec.name)
                if existing is not None:
                    raise DuplicateNameError(
                        f"{kind} {spec.name!r} is registered twice: by {_describe(existing)} and by "
                        f"{_describe(provider)}. Uninstall one, or block one with "
                        f"{DISABLE_ENV}=<entry point or distribution name>"
                    )
                self._specs[kind][spec.name] = spec.with_provider(provider.distribution, provider.version)
                self._origins[kind][spec.name] = provider

    def names(self, kind: str, pattern: str = "*") -> list[str]:
        """Sorted names of one kind, filtered by a shell-style wildcard (timm's ``list_models``)."""
        return sorted(fnmatch.filter(self._kind(kind), pattern))

    def get(self, kind: str, name: str) -> Any:
        """The spec of ``name``; ``UnknownNameError`` with a "did you mean" when there is none."""
        specs = self._kind(kind)
        family = specs.get(name.split(":", 1)[0] + ":") if isinstance(name, str) and ":" in name else None
        if name not in specs and family is not None and getattr(family, "suffix_param", "") and name != family.name:
            return family.member(name)
        if name not in specs:
            known = ", ".join(sorted(specs)) or "none"
            shown = short_repr(name)  # a suite may hold a name of any length
            hint = did_you_mean(name, specs) if len(shown) < SHORT_REPR_CHARS else ""
            raise UnknownNameError(f"unknown {kind} {shown}{hint}; known {kind}s: {known}")
        return specs[name]

    def __iter__(self) -> Iterator[Any]:
        for kind in KINDS:
            yield from (self._specs[kind][name] for name in sorted(self._specs[kind]))

    def create(self, kind: str, name: str, *args: Any, **overrides: Any) -> Any:
        """Build ``name`` with its defaults updated by ``overrides`` (timm's ``create_model``)."""
        spec = self.get(kind, name)
        return spec.load()(*args, **{**spec.defaults, **overrides})

    def _kind(self, kind: str) -> dict[str, Any]:
        if kind not in self._specs:
            raise UnknownNameError(f"unknown component kind {kind!r}{did_you_mean(kind, KINDS)}; kinds: {KINDS}")
        return self._specs[kind]


def _describe(provider: Provider) -> str:
    distribution = f"{provider.distribution} {provider.version}".strip()
    return f"plugin {provider.name!r} (distribution {distribution})"
