"""The contract test kit (``harness.testing``): it reports each broken fixture plugin under the rule it breaks,
every built-in plugin and the example plugin pass it, and its pytest plugin collects and reports through
``pytest --sam-harness-contract [--sam-harness-dist NAME]``.

The broken plugins live in tests/contract_fixtures/broken_plugin.py, one fault per component; they are
installed through the real entry-point path (the ``add_entry_points`` fixture), and for the pytest-plugin
run as a real distribution on a temporary ``sys.path`` folder, visible to a pytest subprocess.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import types
from importlib import metadata
from pathlib import Path

import pytest
import torch.nn.functional as F

from harness import plugins as plugin_module
from harness.errors import EngineUnavailable
from harness.plugins import KINDS, Registry
from harness.run.closure import BatchClosure
from harness.testing import (
    RULES,
    ContractSkip,
    ContractViolation,
    check_optimizer,
    check_scheduler,
    contract_cases,
    run_rule,
)
from harness.testing.fixtures import batch, contract_net

ROOT = Path(__file__).resolve().parents[1]
BROKEN_SOURCE = (Path(__file__).parent / "contract_fixtures" / "broken_plugin.py").read_text()
BROKEN_DIST = "contract-broken-fixtures"
EXAMPLE = ROOT / "plugins" / "example-random-sam"
ALL_SCHEDULER_RULES = {rule.name for rule in RULES["scheduler"]}

# (kind, name, the rules it must fail -- exactly these --, a phrase of the first one's message)
BROKEN = [
    ("optimizer", "broken-no-restore", {"exact_restore", "fp16_overflow"}, "the weights the base optimizer stepped"),
    ("optimizer", "broken-gradient-restore", {"exact_restore", "fp16_overflow"}, "'branch.weight' differs"),
    ("optimizer", "broken-third-pass", {"gradient_evaluations", "fp16_overflow"}, "the closure counted 3"),
    ("optimizer", "broken-one-pass", {"gradient_evaluations"}, "StepInfo says perturbed, which is 2"),
    ("optimizer", "broken-forgetful", {"state_dict"}, "resumed from state_dict()"),
    ("optimizer", "broken-hidden-buffer", {"memory_counted"}, "the walk of harness.contract.held cannot reach"),
    ("optimizer", "broken-stale-groups", {"state_dict"}, "is no longer base_optimizer.param_groups"),
    ("scheduler", "broken-negative-rho", ALL_SCHEDULER_RULES, "rho=-0.05"),
    ("scheduler", "broken-integer-perturb", ALL_SCHEDULER_RULES, "perturb=1 (int); expected a bool"),
    ("scheduler", "broken-amnesiac", {"state_dict"}, "state_dict() must hold everything decide() depends on"),
    ("scheduler", "broken-tensor-diagnostics", {"diagnostics"}, "expected a real number on the host"),
    ("metric", "broken_weights", {"model_unchanged"}, "the metric changed 'frozen' (by 0.01)"),
    ("metric", "broken_mode", {"model_unchanged"}, "left ['(the model)', 'trunk', 'norm', 'branch', 'head']"),
    ("model", "broken-wide", {"output_shape"}, "gave output of shape (2, 11); expected (2, 10)"),
]


@pytest.fixture
def broken_registry(add_entry_points) -> Registry:
    add_entry_points({"contract-broken": BROKEN_SOURCE})
    return Registry.from_plugins()


def failures(registry: Registry, kind: str, name: str) -> dict[str, str]:
    """Every rule of ``kind`` that ``name`` breaks, with the kit's message."""
    found = {}
    for rule in RULES[kind]:
        try:
            run_rule(registry, kind, name, rule.name)
        except ContractViolation as violation:
            found[rule.name] = str(violation)
        except ContractSkip:
            pass
    return found


@pytest.mark.parametrize(("kind", "name", "rules", "phrase"), BROKEN, ids=[case[1] for case in BROKEN])
def test_the_kit_reports_each_broken_plugin_under_the_rule_it_breaks(broken_registry, kind, name, rules, phrase):
    found = failures(broken_registry, kind, name)
    assert set(found) == rules, found
    first = next(rule.name for rule in RULES[kind] if rule.name in rules)
    for rule in rules:
        # add_entry_points installs no distribution metadata: the provider is "unknown"
        assert found[rule].startswith(f"{kind} {name!r} (unknown) breaks rule {kind}.{rule} ("), found[rule]
    assert phrase in found[first], found[first]


def test_check_optimizer_reports_every_broken_rule_at_once_and_the_outcomes_of_a_good_one(broken_registry):
    with pytest.raises(ContractViolation) as caught:
        check_optimizer(broken_registry, "broken-no-restore")
    lines = str(caught.value).splitlines()  # one line per broken rule
    assert len(lines) == 2 and "optimizer.exact_restore" in lines[0] and "optimizer.fp16_overflow" in lines[1]
    assert check_scheduler(broken_registry, "constant") == {rule.name: "passed" for rule in RULES["scheduler"]}


def test_an_error_the_rules_do_not_anticipate_is_a_violation_that_keeps_its_cause(add_entry_points):
    add_entry_points(
        {
            "contract-raising": """
                from harness import OptimizerSpec, hookimpl

                def refuse(params, *, base_optimizer, scheduler):
                    raise RuntimeError("this optimizer cannot be built")

                @hookimpl
                def register_optimizers():
                    return [OptimizerSpec("broken-unbuildable", refuse)]
            """
        }
    )
    with pytest.raises(ContractViolation, match="RuntimeError: this optimizer cannot be built") as caught:
        run_rule(Registry.from_plugins(), "optimizer", "broken-unbuildable", "step_info")
    assert isinstance(caught.value.__cause__, RuntimeError)


def test_an_executor_whose_engine_cannot_be_reached_is_skipped_saying_why(add_entry_points, tmp_path, monkeypatch):
    add_entry_points(
        {
            "contract-unreachable": """
                from harness import ExecutorSpec, hookimpl
                from harness.errors import EngineUnavailable

                class Unreachable:
                    def run(self, runs, *, results_dir, events):
                        raise EngineUnavailable("executor far-away: no scheduler answers at head:6817")

                @hookimpl
                def register_executors():
                    return [ExecutorSpec("far-away", Unreachable)]
            """
        }
    )
    registry = Registry.from_plugins()
    with pytest.raises(ContractSkip, match="its engine cannot be reached: executor far-away: no scheduler answers"):
        run_rule(registry, "executor", "far-away", "same_rows")
    # submitit with the Slurm client on PATH but no controller answering: cluster 'slurm' is unreachable
    for command, code in (("sbatch", 0), ("sinfo", 1)):
        (tmp_path / command).write_text(f"#!/bin/sh\nexit {code}\n")
        (tmp_path / command).chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    submitit = pytest.importorskip("harness_executors.slurm")
    run = types.SimpleNamespace(suite="unreachable")
    with pytest.raises(EngineUnavailable, match="cluster='slurm', but no Slurm controller answers sinfo"):
        submitit.SubmititExecutor(cluster="slurm")._executor([run], str(tmp_path))
    assert submitit.SubmititExecutor()._executor([run], str(tmp_path)).cluster == "local"


def test_every_component_kind_has_rules_and_every_rule_says_what_it_requires():
    assert set(RULES) == set(KINDS)
    for kind, rules in RULES.items():
        assert rules and len({rule.name for rule in rules}) == len(rules), kind
        assert all(rule.kind == kind and rule.summary for rule in rules), kind


def test_the_kits_network_exercises_a_parameter_without_a_second_pass_gradient():
    model = contract_net(0)
    model.calls = 0
    closure = BatchClosure(model, F.cross_entropy, *batch(0))
    closure()
    assert model.branch.weight.grad is not None
    closure()
    assert model.branch.weight.grad is None and model.trunk.weight.grad is not None
    assert not model.frozen.requires_grad


# --- every built-in plugin passes the kit ----------------------------------------------------------------------

BUILTIN = contract_cases(Registry.from_plugins(), ["sam-harness"])


@pytest.mark.parametrize(("kind", "name", "rule"), BUILTIN, ids=[f"{k}-{n}-{r}" for k, n, r in BUILTIN])
def test_every_builtin_component_passes_the_kit(registry, kind, name, rule):
    try:
        run_rule(registry, kind, name, rule)
    except ContractSkip as skip:
        pytest.skip(str(skip))


def test_the_builtin_cases_cover_every_kind():
    assert {kind for kind, _, _ in BUILTIN} == set(KINDS)


# --- the example plugin ------------------------------------------------------------------------------------------


@pytest.fixture
def example_registry(monkeypatch) -> Registry:
    """The example distribution's entry point, loaded from its source folder (it is not installed here)."""
    section = (EXAMPLE / "pyproject.toml").read_text().split("[project.entry-points.sam_harness]", 1)[1]
    entry_points = re.findall(r'^(\w+) = "([\w.:]+)"$', section.split("\n[", 1)[0], re.M)
    assert entry_points == [("example_random_sam", "harness_example_random_sam.plugin")]
    installed = plugin_module._entry_points()
    extra = [metadata.EntryPoint(name, value, plugin_module.ENTRY_POINT_GROUP) for name, value in entry_points]
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.setattr(plugin_module, "_entry_points", lambda: [*installed, *extra])
    return Registry.from_plugins()


@pytest.mark.parametrize("kind", ["optimizer", "preset"])
def test_the_example_plugin_passes_the_kit(example_registry, kind):
    for rule in RULES[kind]:
        run_rule(example_registry, kind, "example-random-sam", rule.name)


def test_the_example_is_its_own_distribution_that_the_main_install_leaves_out():
    main = (ROOT / "pyproject.toml").read_text()
    example = (EXAMPLE / "pyproject.toml").read_text()
    assert 'name = "harness-example-random-sam"' in example and 'dependencies = ["sam-harness"]' in example
    packages = re.search(r"^packages = \[(.*)\]$", main, re.M).group(1)
    assert '"harness.testing"' in packages and "example" not in packages
    assert '[project.entry-points.pytest11]\nsam_harness = "harness.testing.plugin"' in main


def test_the_readme_shows_the_whole_example_plugin():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Write your own SAM variant", 1)[1].split("\n## ", 1)[0]
    for path in ("harness_example_random_sam/optim.py", "harness_example_random_sam/plugin.py"):
        source = (EXAMPLE / path).read_text()
        assert source in section, f"README's 'Write your own SAM variant' does not show {path} as it is"
    command = "pytest --pyargs harness.testing --sam-harness-contract --sam-harness-dist harness-example-random-sam"
    assert command in section  # the kit alone, as tox -e example-plugin runs it


# --- the pytest plugin -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broken_distribution(tmp_path_factory) -> dict[str, str]:
    """The broken plugins installed as the distribution contract-broken-fixtures; returns the environment."""
    site = tmp_path_factory.mktemp("site")
    (site / "contract_broken_fixtures.py").write_text(BROKEN_SOURCE)
    dist_info = site / "contract_broken_fixtures-0.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {BROKEN_DIST}\nVersion: 0.0\n")
    (dist_info / "entry_points.txt").write_text("[sam_harness]\ncontract-broken = contract_broken_fixtures\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}


def pytest_run(cwd: Path, env: dict[str, str] | None, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)


def test_the_pytest_plugin_runs_the_kit_on_one_distribution_and_fails_each_fault(broken_distribution, tmp_path):
    result = pytest_run(tmp_path, broken_distribution, "--sam-harness-contract", "--sam-harness-dist", BROKEN_DIST)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    failed = set(re.findall(r"^FAILED (\S+)", out, re.M))
    expected = {f"sam-harness-contract::{kind}::{rule}[{name}]" for kind, name, rules, _ in BROKEN for rule in rules}
    assert failed == expected, out
    assert "breaks rule optimizer.exact_restore" in out and "'branch.weight' differs" in out
    collected = set(re.findall(r"\[([^\]]+)\]", " ".join(re.findall(r"^FAILED \S+", out, re.M))))
    assert collected <= {name for _, name, _, _ in BROKEN}  # no built-in component was collected
    passed = int(re.search(r"(\d+) passed", out).group(1))
    total = sum(len(RULES[kind]) for kind, *_ in BROKEN)
    assert passed + len(failed) == total, out


def test_without_the_option_nothing_is_collected_and_an_unknown_distribution_is_a_usage_error(tmp_path):
    plain = pytest_run(tmp_path, None, "--collect-only", "-q")
    assert plain.returncode == 5 and "sam-harness-contract" not in plain.stdout
    unknown = pytest_run(tmp_path, None, "--sam-harness-dist", "no-such-distribution", "--collect-only")
    assert unknown.returncode == 4
    assert "no sam_harness plugin component comes from that distribution" in unknown.stderr
    assert "sam-harness" in unknown.stderr.split("distributions that provide components:", 1)[1]
