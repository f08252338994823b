"""A suite's ``conditions:`` (``harness.suite.conditions``): settings for the runs whose grid values match,
validated at load, with the precedence defaults < method < conditions < ``--set``."""

from __future__ import annotations

import pytest

from harness.cli import EXIT_USAGE, main
from harness.errors import SuiteError
from harness.plugins import Registry
from harness.suite import load_suite

from .conftest import write_suite

BASE = """
name: cond
defaults: {epochs: 2, batch_size: 64, base_optimizer: {name: momentum, lr: 0.1, momentum: 0.9}}
methods:
  - erm
  - sam
  - {name: sam-adamw, preset: sam, base_optimizer: {name: adamw, lr: 0.001}}
models: [mlp]
datasets: [digits]
noise_rates: [0.0, 0.8]
"""
CONDITIONS = """
conditions:
  - when: {method: sam, noise_rate: 0.8}
    set: {scheduler.rho: 0.01, epochs: 5}
    why: "a paper, Table 8"
"""


def _runs(tmp_path, text, overrides=(), *, smoke=False):
    path = write_suite(tmp_path / f"s{abs(hash(text)) % 10**8}.yaml", text)
    return {
        (run.method, run.noise_rate): run
        for run in load_suite(path, Registry.from_plugins(), overrides, smoke=smoke).runs
    }


def test_a_condition_sets_its_keys_on_the_matching_runs_only_and_changes_only_their_ids(tmp_path):
    plain, changed = _runs(tmp_path, BASE), _runs(tmp_path, BASE + CONDITIONS)
    hit = changed[("sam", 0.8)]
    assert (hit.scheduler_params["rho"], hit.epochs) == (0.01, 5)
    assert hit.conditions == "scheduler.rho=0.01 (a paper, Table 8); epochs=5 (a paper, Table 8)"
    assert hit.run_id != plain[("sam", 0.8)].run_id
    for key in set(plain) - {("sam", 0.8)}:
        assert changed[key].run_id == plain[key].run_id and changed[key].conditions == ""


def test_set_on_the_command_line_wins_over_a_condition(tmp_path):
    runs = _runs(tmp_path, BASE + CONDITIONS, ["epochs=3"])
    assert runs[("sam", 0.8)].epochs == 3 and runs[("sam", 0.8)].scheduler_params["rho"] == 0.01
    assert runs[("erm", 0.0)].epochs == 3


def test_conditions_apply_in_list_order_and_a_block_entry_keeps_the_methods_block(tmp_path):
    text = (
        BASE
        + """
conditions:
  - when: {noise_rate: 0.8}
    set: {base_optimizer.lr: 0.5}
    why: first
  - when: {noise_rate: 0.8, method: sam}
    set: {base_optimizer.lr: 0.25}
    why: second
"""
    )
    runs = _runs(tmp_path, text)
    assert runs[("sam", 0.8)].base_optimizer["lr"] == 0.25
    assert runs[("erm", 0.8)].base_optimizer == {"name": "momentum", "lr": 0.5, "momentum": 0.9}
    assert runs[("sam-adamw", 0.8)].base_optimizer["name"] == "adamw"  # the method's own block, lr changed
    assert runs[("sam-adamw", 0.8)].base_optimizer["lr"] == 0.5
    assert runs[("erm", 0.0)].base_optimizer["lr"] == 0.1


def test_smoke_keeps_one_epoch_whatever_a_condition_says(tmp_path):
    runs = _runs(tmp_path, BASE + CONDITIONS, smoke=True)
    assert runs[("sam", 0.8)].epochs == 1 and runs[("sam", 0.8)].scheduler_params["rho"] == 0.01


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("{when: {optimizer: sam}, set: {epochs: 3}, why: x}", r"conditions\[0\]\.when\.optimizer: unknown key"),
        (
            "{when: {noise_rate: 0.5}, set: {epochs: 3}, why: x}",
            r"conditions\[0\]\.when\.noise_rate: 0\.5 is invalid; "
            r"expected one of this suite's values: \[0\.0, 0\.8\]",
        ),
        (
            "{when: {method: sam}, set: {epoch: 3}, why: x}",
            r"conditions\[0\]\.set\.epoch: unknown key \(did you mean .epochs.\?\)",
        ),
        ("{when: {method: sam}, set: {epochs: 0}, why: x}", r"conditions\[0\]\.set\.epochs: 0 is invalid"),
        (
            "{when: {method: sam}, set: {lr_schedule.warmup_steps: 1.5}, why: x}",
            r"conditions\[0\]\.set\.lr_schedule\.warmup_steps: 1\.5 is invalid",
        ),
        (
            "{when: {method: sam}, set: {scheduler.rhoo: 0.1}, why: x}",
            r"conditions\[0\]\.set\.scheduler\.rhoo: scheduler 'constant' \(method sam\) has no parameter 'rhoo'",
        ),
        ("{when: {method: sam}, set: {scheduler.rho: fast}, why: x}", r"conditions\[0\]\.set\.scheduler\.rho: 'fast'"),
        (  # a component parameter's range and choices are checked as in a method's own block
            "{when: {method: sam}, set: {scheduler.rho: -0.1}, why: x}",
            r"conditions\[0\]\.set\.scheduler\.rho: -0\.1 is invalid; expected a number >= 0\.0",
        ),
        (
            "{when: {method: sam}, set: {optimizer.norm: l3}, why: x}",
            r"conditions\[0\]\.set\.optimizer\.norm: 'l3' is invalid; expected one of 'l2', 'linf'",
        ),
        ("{when: {method: sam}, set: {epochs: 3}}", r"conditions\[0\]\.why: missing is invalid; expected a citation"),
        ("{when: {}, set: {epochs: 3}, why: x}", r"conditions\[0\]\.when: \{\} is invalid"),
    ],
)
def test_a_bad_condition_is_an_exit_2_error_naming_the_file_key_and_value(tmp_path, capsys, entry, expected):
    path = write_suite(tmp_path / "bad.yaml", BASE + f"conditions:\n  - {entry}\n")
    assert main(["validate", str(path)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "bad.yaml" in err
    with pytest.raises(SuiteError, match=expected):
        load_suite(path, Registry.from_plugins())


def test_validate_shows_what_the_conditions_set_and_why(tmp_path, capsys):
    path = write_suite(tmp_path / "shown.yaml", BASE + CONDITIONS)
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    run_id = _runs(tmp_path, BASE + CONDITIONS)[("sam", 0.8)].run_id
    assert f"{run_id}: scheduler.rho=0.01 (a paper, Table 8); epochs=5 (a paper, Table 8)" in out
