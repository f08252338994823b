"""``harness validate`` answers without importing torch or timm (harness/suite/lazy_check.py), and still refuses
what it refused: a wrong factory path names the plugin, a module that fails on import stops ``harness run``
before anything trains, an unknown timm optimizer name gets a suggestion.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.cli import EXIT_OK, EXIT_USAGE, main
from harness.suite.lazy_check import check_path, declared_timm_optimizers

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "timm", "sklearn")
#: The modules a command imported, printed by a fresh interpreter (so nothing this test process imported counts).
IMPORTED = f"""
import json, sys
from harness.cli import main
code = main(sys.argv[1:])
print(json.dumps({{"code": code, "heavy": [name for name in {HEAVY!r} if name in sys.modules]}}))
"""


def _heavy_imports(*argv: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", IMPORTED, *argv], cwd=REPO, capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "argv",
    [("plugins",), *(("validate", str(path)) for path in sorted((REPO / "suites").glob("*.yaml")))],
    ids=lambda argv: " ".join(Path(a).name for a in argv),
)
def test_the_quick_commands_import_neither_torch_nor_timm(argv):
    assert _heavy_imports(*argv) == {"code": EXIT_OK, "heavy": []}


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A package ``lazypkg`` whose ``__init__`` fails if run, with a module ``mod`` written by the test."""
    root = tmp_path / "lazypkg"
    root.mkdir()
    (root / "__init__.py").write_text("raise RuntimeError('the package was imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(source: str) -> None:
        (root / "mod.py").write_text(textwrap.dedent(source))

    yield write
    for name in [name for name in sys.modules if name.startswith("lazypkg")]:
        del sys.modules[name]


@pytest.mark.parametrize(
    ("source", "path"),
    [
        ("def make(): ...\n", "lazypkg.mod:make"),
        ("class Make:\n    def build(self): ...\n", "lazypkg.mod:Make.build"),
        ("make: object = object()\n", "lazypkg.mod:make"),
        ("import torch\nmake = torch.nn.Linear\n", "lazypkg.mod:make"),
    ],
)
def test_a_path_the_source_defines_is_checked_without_running_the_module_or_its_package(package, source, path):
    package(source)
    check_path(path)  # the package's __init__ raises if anything imported it
    assert "lazypkg" not in sys.modules


@pytest.mark.parametrize(
    ("source", "path", "error", "text"),
    [
        ("def make(): ...\n", "lazypkg.mod:Make", RuntimeError, "the package was imported"),
        ("def make(): ...\n", "lazypkg.nothing:make", RuntimeError, "the package was imported"),
    ],
)
def test_a_path_the_source_does_not_define_is_imported_and_fails_as_the_import_does(package, source, path, error, text):
    package(source)
    with pytest.raises(error, match=text):
        check_path(path)


def test_a_name_made_at_import_time_is_found_by_importing(tmp_path, monkeypatch):
    (tmp_path / "reexports.py").write_text("from os.path import join as make\nglobals()['built'] = len\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    check_path("reexports:make")
    check_path("reexports:built")
    with pytest.raises(AttributeError, match="has no attribute 'missing'"):
        check_path("reexports:missing")
    with pytest.raises(ModuleNotFoundError, match="no_such_module"):
        check_path("no_such_module:make")
    del sys.modules["reexports"]


BROKEN_PLUGIN = """
from harness import OptimizerSpec, hookimpl

@hookimpl
def register_optimizers():
    return [OptimizerSpec("broken-sam", "broken_optim:BrokenSAM", defaults={"rho": 0.05})]
"""


def test_a_factory_module_that_fails_on_import_stops_the_run_before_training(tmp_path, add_entry_points, capsys):
    """``validate`` reads the module's source (it defines the class); ``run`` imports it and refuses the suite."""
    (tmp_path / "broken_optim.py").write_text("import not_installed_dependency\n\nclass BrokenSAM: ...\n")
    add_entry_points({"unimportable-factory": BROKEN_PLUGIN})  # a name no other test's plugin module has
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "name: broken\nmethods: [erm, {name: b, optimizer: {name: broken-sam}}]\nmodels: [small-cnn]\n"
        "datasets: [digits]\ndefaults: {epochs: 1}\n"
    )
    assert main(["validate", str(suite)]) == EXIT_OK
    results = tmp_path / "results"
    assert main(["run", str(suite), "--results-dir", str(results)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "optimizer 'broken-sam' (registered by" in err
    assert "'broken_optim:BrokenSAM' cannot be loaded: ModuleNotFoundError" in err and "not_installed_dependency" in err
    assert not results.exists() or not any(results.rglob("*.parquet"))


def test_the_timm_names_read_from_source_are_timm_optimizers():
    from timm.optim import list_optimizers

    declared = declared_timm_optimizers()
    assert {"momentum", "sgd", "adamw", "lamb"} <= declared <= set(list_optimizers())


@pytest.mark.parametrize(
    ("name", "code", "fragment"),
    [
        ("nesterov", EXIT_OK, ""),  # an alias: not declared in timm's source, found by importing timm
        ("momentun", EXIT_USAGE, "did you mean 'momentum'"),
    ],
)
def test_a_base_optimizer_timm_does_not_declare_in_source_is_checked_against_timm(
    tmp_path, capsys, name, code, fragment
):
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        f"name: t\ndefaults: {{base_optimizer: {{name: {name}, lr: 0.1}}}}\nmethods: [erm]\nmodels: [small-cnn]\n"
        "datasets: [digits]\n"
    )
    assert main(["validate", str(suite)]) == code
    assert fragment in capsys.readouterr().err
