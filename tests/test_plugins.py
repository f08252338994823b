"""Plugin loading, the registry, and name clashes (harness/plugins.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest

from harness import OptimizerSpec, hookimpl
from harness.cli import main
from harness.contract.specs import ModelSpec, PresetSpec
from harness.errors import DuplicateNameError, PluginError, UnknownNameError
from harness.plugins import PluginLoadWarning, Registry, get_plugin_manager

GOOD_PLUGIN = """
from harness import OptimizerSpec, hookimpl

@hookimpl
def register_optimizers():
    return [OptimizerSpec("third-party-sam", "harness_sam.sam:SAM", defaults={"eps": 1e-12})]
"""


def test_builtin_plugins_register_through_entry_points(registry):
    assert {"erm", "sam"} <= set(registry.names("optimizer"))
    assert "constant" in registry.names("scheduler")
    assert {"mlp", "small-cnn"} <= set(registry.names("model"))
    assert "digits" in registry.names("dataset")
    assert {"erm", "sam"} <= set(registry.names("preset"))
    sam = registry.get("optimizer", "sam")
    assert sam.provider == "sam-harness" and sam.version


def test_third_party_plugin_is_loaded_from_its_entry_point(add_entry_points):
    add_entry_points({"thirdparty": GOOD_PLUGIN})
    registry = Registry.from_plugins()
    assert "third-party-sam" in registry.names("optimizer")


def test_a_worker_loads_the_drivers_entry_points_once(monkeypatch, tmp_path):
    # What executors do: the driver's loaded_entry_points() are loaded in the worker as well as its own.
    import textwrap

    from harness.plugins import loaded_entry_points

    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "driver_only_plugin.py").write_text(textwrap.dedent(GOOD_PLUGIN))
    driver = [*loaded_entry_points(), ("driver-only", "driver_only_plugin")]
    assert "third-party-sam" not in Registry.from_plugins().names("optimizer")
    registry = Registry.from_plugins(extra_entry_points=driver)  # installed ones again: loaded once, no duplicate
    assert "third-party-sam" in registry.names("optimizer") and "sam" in registry.names("optimizer")
    assert registry.get("optimizer", "third-party-sam").provider == "unknown"


def test_broken_plugin_warns_naming_it_and_is_skipped(add_entry_points, monkeypatch):
    monkeypatch.delenv("HARNESS_STRICT_PLUGINS", raising=False)
    add_entry_points({"broken": "raise RuntimeError('boom at import')", "thirdparty": GOOD_PLUGIN})
    with pytest.warns(PluginLoadWarning, match=r"'broken'.*RuntimeError: boom at import"):
        registry = Registry.from_plugins()
    assert "third-party-sam" in registry.names("optimizer")  # the others still load
    assert "sam" in registry.names("optimizer")


def test_other_warnings_keep_pythons_format():
    text = warnings.formatwarning("plain", UserWarning, "somewhere.py", 7, line="")
    assert text == "somewhere.py:7: UserWarning: plain\n"


def test_strict_mode_makes_a_broken_plugin_fatal(add_entry_points, monkeypatch):
    monkeypatch.setenv("HARNESS_STRICT_PLUGINS", "1")
    add_entry_points({"broken": "import module_that_does_not_exist_anywhere"})
    with pytest.raises(PluginError, match=r"'broken'.*module_that_does_not_exist_anywhere"):
        get_plugin_manager()


def test_block_list_disables_entry_points_by_name(monkeypatch):
    monkeypatch.setenv("HARNESS_DISABLE_PLUGINS", "vision, thirdparty")
    registry = Registry.from_plugins()
    assert registry.names("dataset") == []
    assert "sam" in registry.names("optimizer")


def test_block_list_also_skips_a_broken_plugin(add_entry_points, monkeypatch, recwarn):
    add_entry_points({"broken": "raise RuntimeError('boom')"})
    monkeypatch.setenv("HARNESS_DISABLE_PLUGINS", "broken")
    Registry.from_plugins()
    assert not [w for w in recwarn if issubclass(w.category, PluginLoadWarning)]


def test_duplicate_name_is_an_error_naming_both_providers(add_entry_points):
    add_entry_points(
        {
            "clash": """
        from harness import OptimizerSpec, hookimpl

        @hookimpl
        def register_optimizers():
            return [OptimizerSpec("sam", "harness_sam.sam:SAM")]
    """
        }
    )
    with pytest.raises(DuplicateNameError) as error:
        Registry.from_plugins()
    message = str(error.value)
    assert "optimizer 'sam'" in message and "sam-harness 0.1.0" in message and "clash" in message


def test_misspelled_hook_name_fails_check_pending():
    class Misspelled:
        @hookimpl
        def register_optimizer(self):  # missing the final "s"
            return []

    with pytest.raises(PluginError, match="register_optimizer"):
        get_plugin_manager(load_entry_points=False, plugins=[Misspelled()])


def test_unknown_name_suggests_the_closest(registry):
    with pytest.raises(UnknownNameError, match="did you mean 'sam'"):
        registry.get("optimizer", "sma")
    with pytest.raises(UnknownNameError, match="did you mean 'small-cnn'"):
        registry.get("model", "smal-cnn")


def test_wrong_record_type_is_rejected_naming_the_plugin():
    class WrongType:
        @hookimpl
        def register_models(self):
            return [OptimizerSpec("not-a-model", "harness_sam.sam:SAM")]

    manager = get_plugin_manager(load_entry_points=False, plugins=[WrongType()])
    with pytest.raises(PluginError, match="expected ModelSpec"):
        Registry(manager)


def test_wildcards_and_create_with_overrides(registry):
    assert registry.names("model", "small*") == ["small-cnn"]
    model = registry.create("model", "mlp", num_classes=3, input_shape=(1, 4, 4), hidden=7)
    assert model[1].out_features == 7 and model[-1].out_features == 3


def test_specs_are_frozen_and_validated():
    spec = ModelSpec("m", "pkg.mod:attr", defaults={"a": 1})
    with pytest.raises(TypeError):
        spec.defaults["a"] = 2  # read-only mapping
    with pytest.raises(ValueError, match="name"):
        ModelSpec("Bad Name", "pkg.mod:attr")
    with pytest.raises(ValueError, match="package.module:attribute"):
        ModelSpec("m", "not a path")
    with pytest.raises(ValueError, match="preset name"):
        PresetSpec("Bad Name", optimizer="sam")


def test_listing_plugins_imports_no_torch_from_plugin_modules():
    code = (
        "import sys; from harness.plugins import Registry; r = Registry.from_plugins(); "
        "list(r); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_plugins_command_lists_kind_name_provider_version(capsys):
    assert main(["plugins", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    sam = next(r for r in rows if r["kind"] == "optimizer" and r["name"] == "sam")
    assert sam["provider"] == "sam-harness" and sam["version"] == "0.1.0" and sam["description"]
    assert {r["kind"] for r in rows} >= {"optimizer", "scheduler", "model", "dataset", "preset"}


EVERY_KIND_PLUGIN = """
from harness import DatasetSpec, ExecutorSpec, MetricSpec, SchedulerSpec, hookimpl

@hookimpl
def register_schedulers():
    return [SchedulerSpec("every-other", "harness_schedules.basic:Constant", defaults={"rho": 0.1})]

@hookimpl
def register_datasets():
    return [DatasetSpec("tiny-digits", "harness_vision.digits:load_digits", defaults={"test_fraction": 0.5})]

@hookimpl
def register_metrics():
    return [MetricSpec("weight-norm", "math:sqrt", description="a metric")]

@hookimpl
def register_executors():
    return [ExecutorSpec("my-cluster", "math:sqrt", defaults={"queue": "gpu"})]
"""


def test_every_registration_hook_reaches_the_registry_and_the_listing(add_entry_points, capsys):
    add_entry_points({"everykind": EVERY_KIND_PLUGIN})
    registry = Registry.from_plugins()
    for kind, name in [
        ("scheduler", "every-other"),
        ("dataset", "tiny-digits"),
        ("metric", "weight-norm"),
        ("executor", "my-cluster"),
    ]:
        spec = registry.get(kind, name)
        assert spec.kind == kind and spec.provider == "unknown"  # no distribution behind a bare module
    assert registry.create("scheduler", "every-other").rho == 0.1
    data = registry.create("dataset", "tiny-digits", device="cpu")
    assert data.train_x.shape[0] + data.test_x.shape[0] == 1797 and abs(data.train_x.shape[0] - 898.5) == 0.5
    assert main(["plugins", "--json"]) == 0
    listed = {(r["kind"], r["name"]) for r in json.loads(capsys.readouterr().out)}
    assert {("metric", "weight-norm"), ("executor", "my-cluster")} <= listed


def _install_distribution(folder, distribution: str, entry_points: dict[str, str], modules: dict[str, str]) -> None:
    """A real distribution in ``folder``: a ``.dist-info`` with METADATA and entry_points.txt, as pip leaves it."""
    import textwrap

    info = folder / f"{distribution.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 1.0\n")
    lines = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[sam_harness]\n{lines}")
    for module, source in modules.items():
        (folder / f"{module}.py").write_text(textwrap.dedent(source))


STRANGER = """
from harness import OptimizerSpec, hookimpl

@hookimpl
def register_optimizers():
    return [OptimizerSpec("stranger-sam", "harness_sam.sam:SAM")]
"""


def test_a_strangers_entry_point_named_like_a_builtin_is_refused_naming_both(monkeypatch, tmp_path, capsys):
    # Before: entry points were keyed by name alone, so the stranger's ``sam`` replaced the built-in module
    # (gsam, looksam, ... vanished; the "sam" preset was gone) without a word.
    _install_distribution(tmp_path, "stranger-sam", {"sam": "stranger_plugin"}, {"stranger_plugin": STRANGER})
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(DuplicateNameError) as error:
        Registry.from_plugins()
    message = str(error.value)
    assert "entry point 'sam'" in message and "sam-harness 0.1.0" in message and "stranger-sam 1.0" in message
    assert "HARNESS_DISABLE_PLUGINS" in message
    assert main(["plugins"]) == 2 and "stranger-sam 1.0" in capsys.readouterr().err
    monkeypatch.setenv("HARNESS_DISABLE_PLUGINS", "stranger-sam")  # the remedy the message names
    registry = Registry.from_plugins()
    assert {"sam", "gsam", "looksam"} <= set(registry.names("optimizer"))
    assert registry.get("optimizer", "sam").provider == "sam-harness"


def test_one_distribution_seen_twice_on_the_path_loads_once(monkeypatch, tmp_path):
    for copy in ("a", "b"):  # duplicate installs of one distribution (two site folders on sys.path)
        (tmp_path / copy).mkdir()
        _install_distribution(tmp_path / copy, "twice", {"twice": "twice_plugin"}, {"twice_plugin": STRANGER})
        monkeypatch.syspath_prepend(str(tmp_path / copy))
    assert "stranger-sam" in Registry.from_plugins().names("optimizer")


def test_a_skipped_plugin_is_one_line_on_stderr(tmp_path):
    # Not Python's "plugins.py:123: PluginLoadWarning: ..." followed by the loader's source line.
    _install_distribution(
        tmp_path, "brokenpkg", {"broken": "broken_plugin"}, {"broken_plugin": "raise RuntimeError('boom')"}
    )
    env = {key: value for key, value in os.environ.items() if key != "HARNESS_STRICT_PLUGINS"}
    command = [sys.executable, "-m", "harness.cli", "plugins", "--json"]
    done = subprocess.run(
        command, capture_output=True, text=True, env={**env, "PYTHONPATH": str(tmp_path)}, timeout=120
    )
    assert done.returncode == 0 and json.loads(done.stdout)
    assert done.stderr == (
        "warning: sam_harness plugin 'broken' (broken_plugin, from brokenpkg 1.0) failed to import and was "
        "skipped: RuntimeError: boom\n"
    )


def test_a_skipped_plugin_is_reported_once_per_process(monkeypatch, tmp_path):
    # A driver builds several registries (the suite's, the executor's preload list); the warning printed
    # once for each, because importing torch/timm resets Python's once-per-location warning registry.
    _install_distribution(
        tmp_path, "broken-thing", {"broken": "broken_thing"}, {"broken_thing": "raise RuntimeError('boom')"}
    )
    script = (
        "import warnings\n"
        "from harness.plugins import Registry\n"
        "Registry.from_plugins()\n"
        "warnings.simplefilter('default')\n"  # what a library import may do between two registries
        "Registry.from_plugins()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("'broken' (broken_thing, from broken-thing 1.0) failed to import") == 1, done.stderr
