"""The distribution ships every package of the core and the built-in plugins (pyproject.toml lists them by name)."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
ROOT = Path(__file__).resolve().parents[1]


def test_every_package_in_the_tree_is_listed_for_the_wheel():
    # harness.bench and harness.suite became packages and were missing from a wheel (non-editable) install.
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    found = {".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "harness").rglob("__init__.py")}
    for name, folder in setuptools["package-dir"].items():
        if name != "harness":
            found |= {name} | {
                ".".join((name, *init.parent.relative_to(ROOT / folder).parts))
                for init in (ROOT / folder).rglob("*/__init__.py")
            }
    assert found <= listed, f"packages missing from [tool.setuptools] packages: {sorted(found - listed)}"
