"""``RunSpec`` is declared once (harness/contract/run_spec.py): every run setting's default, later-setting rule
and allowed values come from its field, the parser takes them from there, and run ids do not move.
"""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import pytest

import harness
from harness.contract import run_spec
from harness.contract.run_spec import CHOICES, LATER_SETTINGS, RUN_DEFAULTS, RunSpec
from harness.errors import SuiteError
from harness.run import precision
from harness.suite import load_suite

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "suites" / "quickstart.yaml"
#: A valid non-default value of the settings whose default does not give one (blocks, None, a free string).
OTHER_VALUE = {
    "device": "cpu",
    "base_optimizer": {"name": "adamw", "lr": 0.001},
    "lr_schedule": {"name": "constant"},
    "target_acc": 0.5,
    "grad_clip_norm": 1.0,
    "swa_start": 0.5,
    "swa_lr": 0.01,
}
#: settings that are valid only beside another one: the other's value, set on both sides of the comparison
NEEDS = {"swa_lr": ["swa_start=0.5"]}


def _other_value(key: str):
    """A valid value of the setting ``key`` other than its default, found from its declaration."""
    default = RUN_DEFAULTS[key]
    if key in CHOICES:
        return next(value for value in CHOICES[key][0] if value != default)
    if isinstance(default, bool):
        return not default
    if isinstance(default, int) and key not in OTHER_VALUE:
        return default + 1  # nproc 2 splits the quickstart's batch of 64 evenly
    if isinstance(default, float) and key not in OTHER_VALUE:
        return default / 2 if default else 0.1
    assert key in OTHER_VALUE, f"{key}: add a valid value other than its default to OTHER_VALUE"
    return OTHER_VALUE[key]


def _yaml(value) -> str:
    return json.dumps(value)  # JSON is YAML


def test_the_settings_and_their_defaults_are_the_fields_of_run_spec():
    settings = [item for item in dataclasses.fields(RunSpec) if item.metadata.get("setting")]
    assert list(RUN_DEFAULTS) == [item.name for item in settings]
    minimal = RunSpec(
        suite="s", method="m", optimizer="o", optimizer_params={}, scheduler="c", scheduler_params={},
        model="x", model_params={}, dataset="d", dataset_params={}, noise_rate=0.0, seed=0,
    )  # fmt: skip
    assert {key: getattr(minimal, key) for key in RUN_DEFAULTS} == RUN_DEFAULTS
    assert LATER_SETTINGS == {"precision": "fp32", "channels_last": False, "compile": False} | {
        "grad_clip_norm": None,
        "bn_stats_pass": "first",
        "label_smoothing": 0.0,
        "l2_in_loss": 0.0,
        "trace_every": 0,
        "checkpoint_every": 0,
        "micro_batch_size": 0,
        "swa_start": None,
        "swa_lr": None,
    }
    assert not set(LATER_SETTINGS) & set(minimal.config())  # at their defaults, later settings stay out


@pytest.mark.parametrize("key", list(RUN_DEFAULTS))
def test_every_setting_reaches_the_run_and_its_id_when_set(key):
    """A setting set under ``defaults:`` is the run's, and is in its config: the parser copies every
    declared setting (no per-setting keyword list to forget one in)."""
    value, needs = _other_value(key), NEEDS.get(key, [])
    plain = load_suite(QUICKSTART, harness.Registry.from_plugins(), ["seeds=[0]", *needs]).runs[0]
    changed = load_suite(
        QUICKSTART, harness.Registry.from_plugins(), ["seeds=[0]", *needs, f"{key}={_yaml(value)}"]
    ).runs[0]
    assert getattr(changed, key) == value and changed.config()[key] == value
    assert changed.run_id != plain.run_id


@pytest.mark.parametrize("key", list(LATER_SETTINGS))
def test_a_later_setting_at_its_default_keeps_the_earlier_run_id(key):
    registry = harness.Registry.from_plugins()
    plain = load_suite(QUICKSTART, registry, ["seeds=[0]"]).runs[0]
    explicit = load_suite(QUICKSTART, registry, ["seeds=[0]", f"{key}={_yaml(LATER_SETTINGS[key])}"]).runs[0]
    assert explicit.run_id == plain.run_id and key not in explicit.config()


@pytest.mark.parametrize("key", list(CHOICES))
def test_a_choice_setting_refuses_a_value_outside_its_declared_choices(key):
    allowed, expected = CHOICES[key]
    with pytest.raises(SuiteError) as error:
        load_suite(QUICKSTART, harness.Registry.from_plugins(), [f"{key}=bogus"])
    message = str(error.value)
    assert f"defaults.{key}: 'bogus' is invalid; expected {expected}" in message
    assert all(value in message for value in allowed)


def test_the_allowed_values_have_one_home():
    assert precision.MODES is run_spec.PRECISIONS
    assert CHOICES["precision"][0] is run_spec.PRECISIONS
    assert CHOICES["perturbation_scope"][0] is run_spec.PERTURBATION_SCOPES


def test_run_spec_is_public_and_depends_on_no_other_harness_module():
    assert harness.RunSpec is RunSpec and "RunSpec" in harness.__all__
    imported = _imports(REPO / "harness" / "contract" / "run_spec.py")
    assert not [name for name in imported if name.startswith("harness") or name == "torch"], imported
    contract = _imports(REPO / "harness" / "contract" / "hookspecs.py")  # TYPE_CHECKING imports included
    assert "harness.contract.run_spec" in contract, contract
    assert not {"harness.suite", "harness.plugins"} & set(contract), contract


def _imports(path: Path) -> list[str]:
    """Every module a source file imports, at any depth (``if TYPE_CHECKING:`` blocks included)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    return names


def test_the_quickstart_keeps_the_run_ids_of_earlier_releases():
    """Ids of commit 5a27f77, before ``RunSpec`` moved to ``harness.contract.run_spec``: results written then
    resume. A deliberate change of a resolved default (of erm, sam, or the suite) changes them: say so
    in the changelog and update this list."""
    registry = harness.Registry.from_plugins()
    assert [run.run_id for run in load_suite(QUICKSTART, registry).runs] == [
        "erm-s0-1731dc579393",
        "erm-s1-1169a0da13fb",
        "erm-s2-58f06150f22d",
        "sam-s0-b34b7bb1fc16",
        "sam-s1-92207a16f5ce",
        "sam-s2-823a807d7532",
    ]
    assert [run.run_id for run in load_suite(QUICKSTART, registry, smoke=True).runs] == [
        "erm-s0-b40aa5173ef9",
        "sam-s0-c77d2e6a0bc7",
    ]
