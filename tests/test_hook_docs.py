"""Every hook is documented and tested (the datasette pattern): adding a hook without both fails."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from harness.contract import hookspecs

ROOT = Path(__file__).resolve().parents[1]
HOOKS = sorted(name for name, obj in vars(hookspecs).items() if hasattr(obj, "sam_harness_spec"))


def test_the_contract_has_the_hooks_the_design_names():
    assert set(HOOKS) >= {
        "register_optimizers",
        "register_schedulers",
        "register_models",
        "register_datasets",
        "register_metrics",
        "register_executors",
        "register_presets",
        "run_started",
        "step_finished",
        "run_finished",
    }


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_docstring_with_an_example_and_type_hints(hook):
    function = getattr(hookspecs, hook)
    doc = inspect.getdoc(function) or ""
    assert len(doc.splitlines()) >= 3 and "Example::" in doc, f"{hook} needs a docstring with an example"
    assert "return" in function.__annotations__, f"{hook} needs a return type"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_in_the_readme_hook_reference(hook):
    readme = (ROOT / "README.md").read_text()
    reference = readme.split("## Hook reference", 1)[1].split("\n## ", 1)[0]
    assert re.search(rf"`{hook}\(", reference), f"README's Hook reference does not document {hook}"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_exercised_by_a_test(hook):
    sources = [p.read_text() for p in (ROOT / "tests").rglob("test_*.py") if p.name != Path(__file__).name]
    assert any(re.search(rf"\b{hook}\b", source) for source in sources), f"no test implements or calls {hook}"
