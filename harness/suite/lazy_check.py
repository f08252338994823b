"""Checks that ``harness validate`` makes without importing torch: a lazy factory path, a timm optimizer name.

Importing a plugin's factory module, or timm, only to see that a name exists costs seconds (torch, timm,
scikit-learn): most of a ``harness validate``. Both answers are in the source. ``"pkg.mod:attr"`` exists
when the source of ``pkg.mod`` binds ``attr`` at top level (a ``def``, ``class`` or assignment; a dotted
attribute through class bodies), the file found as the import would find it but without running the
module or its parent packages. A timm optimizer name exists when timm's registry module declares an
``OptimInfo(name=...)`` of that name. Where the source cannot tell (a re-export, a name made at run time,
a module without Python source, a timm alias), the module is imported after all, so an answer is never
wrong, only sometimes slow. A module that defines the name but fails when imported (a missing
dependency) passes here; ``harness run`` imports the factories it is about to train with first
(``harness.suite.import_factories``).
"""

from __future__ import annotations

import ast
import functools
import importlib.machinery
import importlib.util
import sys
from pathlib import Path

from harness.contract.specs import load_object

#: The timm module whose ``OptimInfo(name=...)`` records are timm's optimizer registry (timm >= 1.0).
TIMM_REGISTRY_MODULE = "timm.optim._optim_factory"


def check_path(path: str) -> None:
    """Raise what ``harness.contract.specs.load_object(path)`` would (``ImportError``, ``AttributeError``, or the
    module's own error on import), importing the module only when its source cannot tell that it is fine."""
    module_name, _, attribute = path.partition(":")
    if module_name not in sys.modules:
        tree = _parsed(_source(module_name))
        if tree is not None and _binds(tree.body, attribute.split(".")):
            return
    load_object(path)


def _source(module_name: str) -> str | None:
    """The ``.py`` file of a module, found without importing it or its parent packages; None when it is not
    found that way (the import then tells why)."""
    parts = module_name.split(".")
    spec = None
    for depth in range(len(parts)):
        name = ".".join(parts[: depth + 1])
        try:
            if depth == 0 or name in sys.modules:
                spec = importlib.util.find_spec(name)  # a top-level name is found without importing it
            else:  # in the parent's folders, as the import would look, without running the parent
                spec = importlib.machinery.PathFinder.find_spec(name, spec.submodule_search_locations)
        except (ImportError, ValueError):
            return None
        if spec is None or (depth < len(parts) - 1 and not spec.submodule_search_locations):
            return None
    return spec.origin


def _parsed(origin: str | None) -> ast.Module | None:
    """The syntax tree of a module's Python source; None without one (or if it does not parse: the
    import then reports the error)."""
    if not origin or not origin.endswith(".py"):
        return None
    try:
        return ast.parse(Path(origin).read_bytes(), filename=origin)
    except (OSError, SyntaxError, ValueError):
        return None


def _binds(body: list[ast.stmt], parts: list[str]) -> bool:
    """Whether the statements bind ``parts[0]`` (and, inside that class, ``parts[1:]``) at their own level."""
    name, rest = parts[0], parts[1:]
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return not rest or (isinstance(node, ast.ClassDef) and _binds(node.body, rest))
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        if not rest and any(isinstance(target, ast.Name) and target.id == name for target in targets):
            return True
    return False


@functools.cache
def declared_timm_optimizers() -> frozenset[str]:
    """The optimizer names timm's registry module declares in its source (empty when it is not found):
    a subset of ``timm.optim.list_optimizers()``, read without importing timm or torch."""
    tree = _parsed(_source(TIMM_REGISTRY_MODULE))
    if tree is None:  # no timm, or another layout: every name is then checked by importing timm
        return frozenset()
    return frozenset(
        keyword.value.value.lower()
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "OptimInfo"
        for keyword in node.keywords
        if keyword.arg == "name" and isinstance(keyword.value, ast.Constant) and isinstance(keyword.value.value, str)
    )
