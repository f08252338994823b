"""Who may import whom, read from the source with ``ast`` (function-level imports included).

- The core (``harness/``) never imports a plugin package, and has no import circle.
- A plugin (``plugins/``) imports the core only through its public API (``PUBLIC_MODULES``), and no
  other plugin's package: the built-in plugins use the core as a third-party plugin would.
"""

from __future__ import annotations

import ast
import graphlib
import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "harness"
PLUGINS = ROOT / "plugins"

#: The core's public API for plugins: the top-level package (``harness.__all__``, which includes the
#: dataset contract) and the modules documented for plugin authors: the exceptions and the executor API. From a
#: module with ``__all__`` only its names may be imported; from the others, any name without a leading
#: underscore.
PUBLIC_MODULES = ("harness", "harness.errors", "harness.execution")


def _imports(path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """``(line, module, names)`` of every absolute import in ``path``; names are ``[]`` for ``import m``."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module, [alias.name for alias in node.names]


def _plugin_packages() -> dict[str, Path]:
    """Every top-level package under ``plugins/`` (a plugin's own folder, or its distribution's)."""
    packages = {}
    for init in PLUGINS.rglob("__init__.py"):
        folder = init.parent
        if not (folder.parent / "__init__.py").exists():
            packages[folder.name] = folder
    return packages


def _core_modules() -> dict[str, Path]:
    modules = {}
    for path in CORE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _core_graph() -> dict[str, set[str]]:
    """Each core module -> the core modules it imports (``from harness.x import y`` is ``harness.x.y`` if a module)."""
    modules = _core_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        graph[name] = set()
        for _, module, names in _imports(path):
            for target in [f"{module}.{alias}" for alias in names] or [module]:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def test_the_plugin_packages_are_found():
    assert {"harness_sam", "harness_schedules", "harness_vision", "harness_sharpness", "harness_executors"} <= set(
        _plugin_packages()
    )


def test_the_core_imports_no_plugin():
    plugins = set(_plugin_packages())
    found = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in sorted(CORE.rglob("*.py"))
        for line, module, _ in _imports(path)
        if module.split(".")[0] in plugins
    ]
    assert not found, "the core must not import a plugin:\n" + "\n".join(found)


def test_the_core_has_no_import_circle():
    graph = _core_graph()
    assert "harness.results.store" in graph["harness.run.runner"]  # the graph has the modules' imports
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as circle:
        pytest.fail("import circle in the core: " + " -> ".join(circle.args[1]))


#: The core's layers, lowest first. A module imports only from its own layer or a lower one
#: (function-level imports included: they keep torch lazy, they do not license an upward import).
#: ``harness`` itself is the public face of the contract (its lazy names point into ``contract``).
LAYERS = (
    ("harness.errors", "harness.paths", "harness.machine"),
    ("harness", "harness.contract"),
    ("harness.results",),
    ("harness.plugins",),
    ("harness.suite",),
    ("harness.tune",),
    ("harness.run",),
    ("harness.integrations",),
    ("harness.execution",),
    ("harness.report",),
    ("harness.bench",),
    ("harness.testing",),
    ("harness.cli",),
)


def _layer(module: str) -> int:
    """The rank of ``module``'s layer: the longest ``LAYERS`` prefix it falls under."""
    ranks = [
        (len(prefix), rank)
        for rank, prefixes in enumerate(LAYERS)
        for prefix in prefixes
        if module == prefix or module.startswith(prefix + ".")
    ]
    assert ranks, f"{module} is in no layer of tests/test_layering.py LAYERS: add it"
    return max(ranks)[1]


def test_every_core_module_imports_only_its_own_layer_or_lower():
    graph = _core_graph()
    upward = [
        f"{module} ({LAYERS[_layer(module)][0]}) imports {target} ({LAYERS[_layer(target)][0]})"
        for module, targets in sorted(graph.items())
        for target in sorted(targets)
        if _layer(target) > _layer(module)
    ]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_the_layer_rule_sees_an_upward_import():
    assert _layer("harness.run.runner") < _layer("harness.execution.worker")
    assert _layer("harness.contract.optim") < _layer("harness.plugins") < _layer("harness.cli")
    assert _layer("harness") == _layer("harness.contract.hookspecs")


def test_no_core_module_is_over_about_400_lines():
    long = {
        str(path.relative_to(ROOT)): lines
        for path in sorted(CORE.rglob("*.py"))
        if (lines := len(path.read_text().splitlines())) > 420
    }
    assert not long, f"split these modules (one job each): {long}"


def _public_names(module: str) -> set[str] | None:
    """The names of ``module``'s ``__all__``; None where it has none (any public name goes)."""
    names = getattr(importlib.import_module(module), "__all__", None)
    return None if names is None else set(names)


def _plugin_import_problem(package: str, module: str, names: list[str], plugins: set[str]) -> str:
    """What is wrong with a plugin of ``package`` importing ``names`` from ``module``; "" if nothing."""
    root = module.split(".")[0]
    if root in plugins and root != package:
        return f"imports {module}, another plugin's package"
    if root != "harness":
        return ""
    if module not in PUBLIC_MODULES:
        return f"imports {module}, not in the public API {PUBLIC_MODULES}"
    public = _public_names(module)
    hidden = [
        name
        for name in names
        if f"{module}.{name}" not in PUBLIC_MODULES
        and (name.startswith("_") or (public is not None and name not in public))
    ]
    return f"imports {hidden} from {module}, not among its public names (__all__)" if hidden else ""


def test_plugins_import_the_core_only_through_its_public_api():
    packages = _plugin_packages()
    problems = [
        f"{path.relative_to(ROOT)}:{line} {problem}"
        for package, folder in sorted(packages.items())
        for path in sorted(folder.rglob("*.py"))
        for line, module, names in _imports(path)
        if (problem := _plugin_import_problem(package, module, names, set(packages)))
    ]
    assert not problems, "\n".join(problems)


def test_the_public_api_check_refuses_what_the_executors_imported_before():
    plugins = set(_plugin_packages())
    refused = [
        ("harness_executors", "harness.suite", ["RunSpec"]),
        ("harness_executors", "harness.results.store", ["suite_dir"]),
        ("harness_executors", "harness_sam.sam", ["SAM"]),
        ("harness_executors", "harness.execution", ["_redirected"]),
        ("harness_executors", "harness", ["leases"]),
    ]
    for package, module, names in refused:
        assert _plugin_import_problem(package, module, names, plugins), (module, names)
    assert not _plugin_import_problem("harness_executors", "harness.execution", ["RowWatch", "run_worker"], plugins)
