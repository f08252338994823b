"""Pruning of tuning trials (``tuning.pruner``, ``harness.run.pruning``): a hopeless trial stops between epochs
through the real runner, ends ``pruned`` with its partial budget recorded, is never chosen, is read back on
resume, and a bad ``pruner:`` block is an exit-2 error before anything trains."""

from __future__ import annotations

import json
import re

import optuna
import pytest
from optuna.trial import TrialState

from harness.cli import main
from harness.plugins import Registry
from harness.results.read import read_history, read_runs
from harness.suite import load_suite
from harness.suite.checks import Checker
from harness.suite.tuning import studies
from harness.tune.driver import open_storage

from .conftest import write_suite

#: lr 1e-7 cannot lift validation accuracy from chance (about 10%) in an epoch; lr 0.1 lifts it far above 30%.
SUITE = """
name: pruned
defaults: {epochs: 3, batch_size: 32, device: cpu}
methods: [erm, sam]
models: [mlp]
datasets: [{name: digits, validation_fraction: 0.2, limit_train: 320, limit_test: 64}]
noise_rates: [0.0]
seeds: [0]
executor: {name: local, workers: 1}
tuning:
  budget: {trials: 2}
  space:
    sam: {base_optimizer.lr: [0.1, 1.0e-7]}
  final_seeds: [0]
  pruner: {name: threshold, lower: 0.3}
"""


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.from_plugins()


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """The suite tuned once through ``harness tune`` (real training, the local executor)."""
    folder = tmp_path_factory.mktemp("pruning")
    path = write_suite(folder / "s.yaml", SUITE)
    results = folder / "results"
    assert main(["tune", str(path), "--results-dir", str(results)]) == 0
    return path, results


def test_a_hopeless_trial_stops_after_its_first_epoch_and_is_never_chosen(tuned):
    _, results = tuned
    rows = read_runs(results / "pruned").set_index("tuned")
    trials = rows[rows["role"] == "trial"]
    bad, good = trials.loc['{"base_optimizer.lr": 1e-07}'], trials.loc['{"base_optimizer.lr": 0.1}']
    assert bad["status"] == "pruned" and bad["epochs_completed"] == 1
    assert re.search(r"pruned after epoch 1 of 3 by .*threshold.* \(val_acc 0\.\d+", bad["error"]), bad["error"]
    assert good["status"] == "ok" and good["epochs_completed"] == 3
    assert bad["grad_evals"] * 3 == good["grad_evals"]  # the pruned trial spent one epoch of three
    assert json.loads(bad["pruner"]) == {"name": "threshold", "lower": 0.3}
    finals = read_runs(results / "pruned").query("role == 'final' and method == 'sam'")
    assert list(finals["tuned"]) == ['{"base_optimizer.lr": 0.1}']
    assert finals["pruner"].fillna("").eq("").all()  # finals are never pruned
    history = read_history(results / "pruned")
    assert len(history[history["run_id"] == bad["run_id"]]) == 1  # the epoch it trained is kept


def test_the_journal_holds_the_pruned_state_and_the_reported_epochs(tuned):
    _, results = tuned
    study = optuna.load_study(study_name="sam | mlp digits noise 0 batch 32", storage=open_storage(results, "pruned"))
    states = {json.loads(t.params["base_optimizer.lr"]): t for t in study.trials}
    assert states[1e-07].state == TrialState.PRUNED and list(states[1e-07].intermediate_values) == [1]
    assert states[0.1].state == TrialState.COMPLETE and list(states[0.1].intermediate_values) == [1, 2, 3]
    assert states[1e-07].intermediate_values[1] < 0.3 <= states[0.1].value


def test_a_rerun_reads_the_pruned_trial_back_instead_of_training_it(tuned, capsys):
    path, results = tuned
    before = read_runs(results / "pruned").set_index("run_id")["finished_at"]
    assert main(["tune", str(path), "--results-dir", str(results)]) == 0
    after = read_runs(results / "pruned").set_index("run_id")["finished_at"]
    assert after.equals(before)
    assert "2 trials (1 pruned)" in capsys.readouterr().out


def test_the_pruner_is_part_of_a_trial_run_id_but_not_of_a_final(tmp_path, registry):
    pruned = load_suite(write_suite(tmp_path / "a.yaml", SUITE), registry)
    plain = load_suite(
        write_suite(tmp_path / "b.yaml", SUITE.replace("  pruner: {name: threshold, lower: 0.3}\n", "")), registry
    )
    assert pruned.tuning.pruner and not plain.tuning.pruner
    checker = Checker(pruned.path, ())
    setting = {"base_optimizer.lr": 0.1}
    (a,) = [s for s in studies(pruned.runs, pruned.tuning) if s.space]
    (b,) = [s for s in studies(plain.runs, plain.tuning) if s.space]
    assert (
        a.trial(pruned.tuning, setting, checker, registry, 0).run_id
        != b.trial(plain.tuning, setting, checker, registry, 0).run_id
    )
    assert (
        a.trial(pruned.tuning, setting, checker, registry, 0).run_id
        == a.trial(pruned.tuning, setting, checker, registry, 5).run_id
    )
    assert [r.run_id for r in a.finals(pruned.tuning, setting, checker, registry)] == [
        r.run_id for r in b.finals(plain.tuning, setting, checker, registry)
    ]


@pytest.mark.parametrize(
    ("pruner", "message"),
    [
        (
            "{name: medain}",
            r"tuning\.pruner\.name: 'medain' is invalid; expected one of median, .*did you mean 'median'",
        ),
        ("{name: median, n_startup: 2}", r"tuning\.pruner\.n_startup: unknown key.*n_startup_trials"),
        (
            "{name: median, n_startup_trials: -1}",
            r"tuning\.pruner: .* is invalid; expected arguments optuna\.pruners\.MedianPruner accepts",
        ),
        ("{name: percentile}", r"tuning\.pruner: .* is invalid; expected arguments .*PercentilePruner accepts"),
        (
            "{name: threshold, lower: [1]}",
            r"tuning\.pruner\.lower: \[1\] is invalid; expected a number, a string or null",
        ),
        ("median", r"tuning\.pruner: 'median' is invalid; expected a mapping"),
    ],
)
def test_a_bad_pruner_block_exits_2_naming_the_file_and_key(tmp_path, capsys, pruner, message):
    path = write_suite(tmp_path / "bad.yaml", SUITE.replace("{name: threshold, lower: 0.3}", pruner))
    assert main(["tune", str(path), "--results-dir", str(tmp_path / "results")]) == 2
    error = capsys.readouterr().err
    assert str(path) in error and re.search(message, error), error
    assert not (tmp_path / "results").exists()


def test_data_parallel_trials_cannot_be_pruned(tmp_path, capsys):
    path = write_suite(tmp_path / "ddp.yaml", SUITE.replace("device: cpu}", "device: cpu, nproc: 2}"))
    assert main(["validate", str(path)]) == 2
    assert "tuning.pruner: pruning needs runs of one process" in capsys.readouterr().err


def test_the_report_counts_pruned_trials_names_the_rule_and_the_epoch(tuned, tmp_path):
    _, results = tuned
    out = tmp_path / "report"
    assert main(["report", str(results / "pruned"), "-o", str(out)]) == 0
    line = next(line for line in (out / "report.md").read_text().splitlines() if line.startswith("| sam \\| mlp"))
    assert "| 2 (1 pruned by threshold(lower=0.3)) |" in line
    assert "base_optimizer.lr=1e-07: pruned after epoch 1" in line


@pytest.mark.parametrize("name", ["median", "percentile", "successive_halving", "hyperband", "threshold"])
def test_every_named_pruner_is_built_from_its_block(tmp_path, registry, name):
    from harness.suite.tuning import PRUNERS, build_pruner

    arguments = {"percentile": ", percentile: 25.0", "threshold": ", lower: 0.2"}.get(name, "")
    suite = load_suite(
        write_suite(
            tmp_path / "p.yaml", SUITE.replace("{name: threshold, lower: 0.3}", f"{{name: {name}{arguments}}}")
        ),
        registry,
    )
    assert type(build_pruner(suite.tuning.pruner)) is getattr(optuna.pruners, PRUNERS[name])
