"""The factory check of the components a suite's runs use: each plugin's lazy factory path must load.

``load_suite`` checks every path from its module's source, without importing it
(``harness.suite.lazy_check``), so ``harness validate`` stays torch-free; ``import_factories`` imports them
just before ``harness run`` trains. Either way a wrong path fails once, naming the plugin, rather than
in every run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from harness.contract.run_spec import RunSpec
from harness.contract.specs import Spec
from harness.errors import SuiteError
from harness.plugins import Registry
from harness.suite.lazy_check import check_path
from harness.suite.record import Suite


def check_factories(path: str, registry: Registry, runs: Iterable[RunSpec], check: Callable[[Spec], Any]) -> None:
    """``check`` the factory of every component the runs use, so that a plugin whose lazy factory path is
    wrong fails here, naming the plugin, rather than in every run."""
    for kind, name in dict.fromkeys(component for run in runs for component in run.components()):
        spec = registry.get(kind, name)
        try:
            check(spec)
        except Exception as error:  # ImportError, AttributeError, or whatever the module raised on import
            raise SuiteError(
                f"{path}: {kind} {name!r} (registered by {spec.provider or 'an unnamed plugin'}): its factory "
                f"{spec.factory!r} cannot be loaded: {type(error).__name__}: {error}"
            ) from error


def check_source(spec: Spec) -> None:
    """A lazy factory path checked from its module's source where it can be (``harness.suite.lazy_check``)."""
    if isinstance(spec.factory, str):
        check_path(spec.factory)


def import_factories(suite: Suite, registry: Registry, runs: Sequence[RunSpec]) -> None:
    """Import the factory of every component ``runs`` use (a ``SuiteError`` naming the plugin if one fails).

    ``load_suite`` checked the factory paths without importing them; ``harness run`` calls this just
    before training, when the imports are needed anyway, so a plugin module that exists but fails on
    import (a missing dependency) stops the suite before it trains rather than crashing every run.
    """
    check_factories(suite.path, registry, runs, lambda spec: spec.load())
