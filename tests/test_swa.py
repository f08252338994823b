"""Stochastic weight averaging (``harness.run.swa``; the run settings ``swa_start`` and ``swa_lr``).

The final weights are the equal average of the epoch-end weights from ``floor(swa_start * epochs) + 1`` on, with
BatchNorm's statistics recomputed for them on the training data; ``swa_lr`` holds the learning rate while it
averages; a run stopped while averaging resumes to the same weights, bit for bit.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.cli import main
from harness.errors import SuiteError
from harness.plugins import Registry
from harness.results.read import read_history, read_runs
from harness.run import checkpoint as checkpoints
from harness.run import runner, stop
from harness.run.precision import Precision
from harness.run.swa import WeightAverage
from harness.suite import load_suite

from .conftest import write_suite
from .test_checkpoint import At, StopAt, weights  # noqa: F401 (weights: a fixture)

pytestmark = pytest.mark.slow

# 1437 digits training samples / 96 = 14 steps an epoch; averaging from epoch 3 of 4 (floor(0.5 * 4) + 1).
SUITE = """
    name: averaged
    defaults: {{epochs: 4, batch_size: 96, swa_start: 0.5{lr}}}
    methods: [sam]
    models: [{{name: {model}}}]
    datasets: [digits]
    seeds: [0]
"""
STEPS = 14


def _run(tmp_path, model: str = "mlp", lr: str = ""):
    registry = Registry.from_plugins()
    suite = load_suite(write_suite(tmp_path / f"averaged-{model}.yaml", SUITE.format(model=model, lr=lr)), registry)
    return suite.runs[0]


def test_the_average_is_the_mean_of_its_epochs_weights_and_batchnorm_is_recomputed_for_it():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 10))
    average = WeightAverage(model, swa_start=0.5, epochs=4)
    assert [average.due(epoch) for epoch in (1, 2, 3, 4)] == [False, False, True, True]
    snapshots = []
    for _ in range(2):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        snapshots.append([p.clone() for p in model.parameters()])
        average.update(model)
    data = Registry.from_plugins().create("dataset", "digits", device=torch.device("cpu"))
    average.install(model, data, 96, Precision("fp32", "cpu"), seed=0)
    for p, first, second in zip(model.parameters(), *snapshots, strict=True):
        torch.testing.assert_close(p, (first + second) / 2, rtol=0, atol=1e-6)
    batch_means = []  # update_bn: the cumulative average (momentum None) of the batches' means, same batches
    order, augment = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    with torch.no_grad():
        for inputs, _ in data.train_batches(96, order, augment):
            batch_means.append(model[1](model[0](inputs)).mean(0))
    torch.testing.assert_close(model[2].running_mean, torch.stack(batch_means).mean(0), rtol=0, atol=1e-5)


def test_a_run_ends_at_the_average_of_its_last_epochs_and_swa_lr_holds_the_rate(tmp_path, weights):  # noqa: F811
    run = _run(tmp_path, lr=", swa_lr: 0.01")
    registry = Registry.from_plugins()
    ends: list[dict[str, torch.Tensor]] = []

    def keep():  # the weights at the end of epochs 3 and 4 (``weights`` holds the live tensors)
        ends.append({key: value.clone() for key, value in weights[run.run_id].items()})

    for epoch in (3, 4):
        registry.manager.register(At(epoch * STEPS - 1, keep), name=f"end-{epoch}")
    row = runner.execute(run, registry, tmp_path / "out")
    assert row["status"] == "ok" and len(ends) == 2
    for key, value in weights[run.run_id].items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (ends[0][key] + ends[1][key]) / 2, rtol=0, atol=1e-6, msg=key)
    history = read_history(tmp_path / "out" / run.suite)
    assert list(history.loc[history["epoch"] >= 3, "lr"]) == [0.01, 0.01]
    assert history.loc[history["epoch"] == 1, "lr"].iloc[0] > 0.01  # the run's own schedule before
    assert row["test_acc"] == history.loc[history["epoch"] == 4, "test_acc"].iloc[0]  # the average's accuracy


def test_a_run_stopped_while_averaging_resumes_to_the_same_weights(tmp_path, weights):  # noqa: F811
    run = _run(tmp_path, model="small-cnn")  # a CNN with BatchNorm: statistics recomputed at the end
    registry = Registry.from_plugins()
    whole = runner.execute(run, registry, tmp_path / "whole")
    straight = {key: value.clone() for key, value in weights[run.run_id].items()}
    stopping = Registry.from_plugins()
    stopping.manager.register(StopAt(3 * STEPS + 5))  # in epoch 4, after epoch 3 joined the average
    with pytest.raises(stop.StopRequested):
        runner.execute(run, stopping, tmp_path / "resumed")
    assert checkpoints.Checkpoint(tmp_path / "resumed", run).path.is_file()
    row = runner.execute(run, Registry.from_plugins(), tmp_path / "resumed")
    assert row["restarts"] == 1 and row["test_acc"] == whole["test_acc"]
    for key, value in weights[run.run_id].items():
        assert torch.equal(value, straight[key]), key


def test_swa_settings_are_checked_and_enter_the_run_id(tmp_path):
    text = SUITE.format(model="mlp", lr="").replace(", swa_start: 0.5", "")
    plain = load_suite(write_suite(tmp_path / "p.yaml", text), Registry.from_plugins()).runs[0]
    assert plain.run_id != _run(tmp_path).run_id
    for bad, says in (("swa_start: 1.0", "defaults.swa_start"), ("swa_lr: 0.01", "null unless swa_start is set")):
        text = f"name: bad\ndefaults: {{{bad}}}\nmethods: [sam]\nmodels: [mlp]\ndatasets: [digits]\n"
        with pytest.raises(SuiteError, match=says):
            load_suite(write_suite(tmp_path / "bad.yaml", text), Registry.from_plugins())
    suite = write_suite(tmp_path / "cli.yaml", SUITE.format(model="mlp", lr=""))
    assert main(["run", str(suite), "--results-dir", str(tmp_path / "cli"), "--set", "epochs=2"]) == 0
    assert read_runs(tmp_path / "cli" / "averaged").iloc[0]["status"] == "ok"
