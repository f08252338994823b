"""Tuning studies (``harness.suite.tuning``, ``harness.tune.driver``, ``harness tune``): equal budgets, selection
on the validation split only, resume without training a trial twice, and invalid spaces refused before
anything trains."""

from __future__ import annotations

import json
from collections import Counter

import pytest

import harness.cli as cli
from harness.cli import main
from harness.plugins import Registry
from harness.results.columns import identity
from harness.results.read import read_runs
from harness.results.store import write_run
from harness.suite import load_suite
from harness.tune.driver import run_studies

from .conftest import write_suite

SUITE = """
name: tuned
defaults: {epochs: 1, batch_size: 32, device: cpu}
methods: [erm, sam, {preset: looksam, name: looksam}]
models: [mlp]
datasets: [{name: digits, validation_fraction: 0.2, limit_train: 160, limit_test: 64}]
noise_rates: [0.0, 0.4]
seeds: [0, 1]
executor: {name: local, workers: 2}
tuning:
  objective: val_acc
  budget: {trials: 3}
  sampler: grid
  space:
    sam: {scheduler.rho: [0.01, 0.05, 0.1]}
    looksam: {scheduler.rho: [0.05, 0.1, 0.2]}
  final_seeds: [5, 6]
"""


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.from_plugins()


class FakeTraining:
    """Writes a result row for each run as if it had trained: val_acc and test_acc are functions of rho."""

    def __init__(self, results, suite, val, test, cost=1.0):
        self.results, self.suite, self.val, self.test, self.cost = results, suite, val, test, cost
        self.trained: Counter[str] = Counter()

    def __call__(self, runs) -> None:
        done = set(read_runs(self.results / self.suite.name, columns=["run_id"])["run_id"]) if self.trained else set()
        for run in runs:
            if run.run_id in done:
                continue
            self.trained[run.run_id] += 1
            rho = run.scheduler_params.get("rho", 0.0)
            row = {
                **identity(run),
                "status": "ok",
                "error": "",
                "val_acc": self.val(rho),
                "test_acc": self.test(rho),
                "grad_evals": self.cost,
                "train_time_s": 1.0,
            }
            write_run(self.results, self.suite.name, row, [])


def _suite(tmp_path, registry, text=SUITE, name="s.yaml"):
    return load_suite(write_suite(tmp_path / name, text), registry)


def _rows(results, suite):
    return read_runs(results / suite.name)


def test_selection_reads_the_validation_split_never_the_test_set(tmp_path, registry):
    """Validation prefers rho 0.1 (looksam: 0.2); the test set would pick 0.01 (0.05): the finals run 0.1 / 0.2."""
    suite = _suite(tmp_path, registry)
    results = tmp_path / "results"
    fake = FakeTraining(results, suite, val=lambda rho: rho, test=lambda rho: 1.0 - rho)
    outcomes = run_studies(suite, registry, results, fake)
    chosen = {o.study.name: o.chosen for o in outcomes}
    assert chosen["sam | mlp digits noise 0 batch 32"] == {"scheduler.rho": 0.1}
    assert chosen["looksam | mlp digits noise 0.4 batch 32"] == {"scheduler.rho": 0.2}
    assert chosen["erm | mlp digits noise 0 batch 32"] == {}  # no space: not tuned
    finals = _rows(results, suite).query("role == 'final'")
    assert sorted(finals.query("method == 'sam'")["scheduler_params"].map(lambda p: json.loads(p)["rho"])) == [0.1] * 4
    assert set(finals["seed"]) == {5, 6}
    assert set(finals.query("method == 'sam'")["tuned"]) == {'{"scheduler.rho": 0.1}'}


def test_every_tuned_method_gets_exactly_the_budget_and_untuned_ones_no_trials(tmp_path, registry):
    suite = _suite(tmp_path, registry)
    results = tmp_path / "results"
    run_studies(suite, registry, results, FakeTraining(results, suite, val=lambda rho: rho, test=lambda rho: rho))
    trials = _rows(results, suite).query("role == 'trial'")
    assert trials.groupby("study").size().to_dict() == {
        f"{method} | mlp digits noise {noise} batch 32": 3 for method in ("sam", "looksam") for noise in ("0", "0.4")
    }
    assert (trials["seed"] == 0).all() and (trials["objective"] == "val_acc").all()
    assert trials.groupby("study")["tuned"].nunique().eq(3).all()  # the whole grid, no point twice


def test_a_larger_grid_is_an_error_unless_subsampled_then_seeded(tmp_path, registry):
    bigger = SUITE.replace("[0.05, 0.1, 0.2]", "[0.05, 0.1, 0.2, 0.3]")
    with pytest.raises(Exception, match=r"tuning\.space\.looksam: a grid of 4 points is invalid for a budget of 3"):
        _suite(tmp_path, registry, bigger)
    sampled = bigger.replace("sampler: grid", "sampler: grid\n  subsample: true")
    picks = []
    for attempt in range(2):
        suite = _suite(tmp_path, registry, sampled, name=f"sub{attempt}.yaml")
        results = tmp_path / f"results{attempt}"
        run_studies(suite, registry, results, FakeTraining(results, suite, val=lambda rho: rho, test=lambda rho: rho))
        trials = _rows(results, suite).query("role == 'trial' and method == 'looksam'")
        assert trials.groupby("study").size().eq(3).all() and trials.groupby("study")["tuned"].nunique().eq(3).all()
        picks.append(sorted(trials["tuned"]))
    assert picks[0] == picks[1]  # the same seed draws the same subsample


def test_a_smaller_grid_cannot_spend_the_budget(tmp_path, registry):
    smaller = SUITE.replace("[0.01, 0.05, 0.1]", "[0.01, 0.05]")
    with pytest.raises(Exception, match=r"tuning\.space\.sam: a grid of 2 points is invalid for a budget of 3 trials"):
        _suite(tmp_path, registry, smaller)


def test_a_cost_budget_stops_each_study_once_it_is_spent(tmp_path, registry):
    text = SUITE.replace("budget: {trials: 3}", "budget: {grad_evals: 25}").replace(
        "[0.05, 0.1, 0.2]", "[0.05, 0.1, 0.2, 0.3]"
    )
    suite = _suite(tmp_path, registry, text)
    results = tmp_path / "results"
    run_studies(suite, registry, results, FakeTraining(results, suite, val=lambda r: r, test=lambda r: r, cost=10.0))
    trials = _rows(results, suite).query("role == 'trial'")
    assert trials.groupby("study").size().eq(3).all()  # 10 + 10 < 25 <= 30


def test_tpe_takes_a_range_and_stays_inside_it(tmp_path, registry):
    text = SUITE.replace("sampler: grid", "sampler: tpe\n  seed: 3").replace(
        "sam: {scheduler.rho: [0.01, 0.05, 0.1]}", "sam: {scheduler.rho: {low: 0.01, high: 0.3, log: true}}"
    )
    suite = _suite(tmp_path, registry, text)
    results = tmp_path / "results"
    run_studies(suite, registry, results, FakeTraining(results, suite, val=lambda r: -abs(r - 0.1), test=lambda r: r))
    rhos = [
        json.loads(t)["scheduler.rho"]
        for t in _rows(results, suite).query("role == 'trial' and method == 'sam'")["tuned"]
    ]
    assert len(rhos) == 6 and all(0.01 <= rho <= 0.3 for rho in rhos)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("[0.01, 0.05, 0.1]", "[0.01, -0.05, 0.1]"), r"tuning\.space\.sam\.scheduler\.rho: -0\.05 is invalid"),
        (
            ("sam: {scheduler.rho:", "sam: {scheduler.rhoo:"),
            r"tuning\.space\.sam\.scheduler\.rhoo: scheduler 'constant'",
        ),
        (
            ("[0.01, 0.05, 0.1]", "[]"),
            r"tuning\.space\.sam\.scheduler\.rho: \[\] is invalid; expected a non-empty list",
        ),
        (("    sam: {", "    samm: {"), r"tuning\.space\.samm: 'samm' is invalid; expected a method of this suite"),
        (("validation_fraction: 0.2, ", ""), r"tuning\.objective: 'val_acc' is invalid; expected a validation split"),
        (("sampler: grid", "sampler: gird"), r"tuning\.sampler: 'gird' is invalid; expected one of grid, random, tpe"),
        (("budget: {trials: 3}", "budget: {trials: 0}"), r"tuning\.budget\.trials: 0 is invalid"),
        (("objective: val_acc", "objective: test_acc"), r"tuning\.objective: 'test_acc' is invalid"),
    ],
)
def test_invalid_tuning_blocks_exit_2_naming_the_file_method_and_key(tmp_path, capsys, change, message):
    path = write_suite(tmp_path / "bad.yaml", SUITE.replace(*change))
    assert main(["tune", str(path), "--results-dir", str(tmp_path / "results")]) == 2
    error = capsys.readouterr().err
    assert str(path) in error
    assert pytest.importorskip("re").search(message, error), error
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").rglob("*.parquet"))


class Interrupting:
    """The suite's real executor, stopped (as Ctrl-C stops it) after ``limit`` runs; records what it trained."""

    def __init__(self, executor, limit, trained):
        self.executor, self.limit, self.trained = executor, limit, trained

    def run(self, runs, *, results_dir, events):
        allowed = runs if self.limit is None else runs[: self.limit]
        self.trained.extend(run.run_id for run in allowed)
        self.executor.run(allowed, results_dir=results_dir, events=events)
        if self.limit is not None and len(runs) > self.limit:
            raise KeyboardInterrupt


def test_an_interrupted_study_resumes_without_training_a_trial_twice(tmp_path, monkeypatch):
    """Real training (the local executor): stopped after 3 runs, the rerun trains the rest, never one of those."""
    path = write_suite(tmp_path / "s.yaml", SUITE.replace("noise_rates: [0.0, 0.4]", "noise_rates: [0.4]"))
    results = tmp_path / "results"
    real = cli._executor
    first: list[str] = []
    second: list[str] = []
    monkeypatch.setattr(cli, "_executor", lambda *a: Interrupting(real(*a), 3, first))
    assert main(["tune", str(path), "--results-dir", str(results)]) == 130
    monkeypatch.setattr(cli, "_executor", lambda *a: Interrupting(real(*a), None, second))
    assert main(["tune", str(path), "--results-dir", str(results)]) == 0
    assert len(first) == 3 and not set(first) & set(second)
    rows = read_runs(results / "tuned")
    assert (rows["status"] == "ok").all() and rows["run_id"].is_unique
    assert rows.query("role == 'trial'").groupby("study").size().to_dict() == {
        "sam | mlp digits noise 0.4 batch 32": 3,
        "looksam | mlp digits noise 0.4 batch 32": 3,
    }
    assert len(rows.query("role == 'final'")) == 3 * 2  # every method on both final seeds
    assert (results / "tuned" / "tuning" / "optuna.journal").is_file()


def test_harness_run_on_a_tuning_suite_tunes_and_no_tuning_trains_the_fixed_settings(tmp_path, capsys):
    path = write_suite(tmp_path / "s.yaml", SUITE.replace("noise_rates: [0.0, 0.4]", "noise_rates: [0.4]"))
    results = tmp_path / "results"
    assert main(["run", str(path), "--results-dir", str(results), "--dry-run"]) == 0
    assert "tuning: 3 studies (method x condition; 2 tuned)" in capsys.readouterr().out
    assert main(["run", str(path), "--results-dir", str(results), "--no-tuning", "--set", "seeds=[0]"]) == 0
    rows = read_runs(results / "tuned")
    assert len(rows) == 3 and set(rows["role"].fillna("")) == {""}
