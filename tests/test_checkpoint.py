"""Preemption-safe runs (``harness.run.checkpoint``): a run stopped at a step boundary writes its checkpoint and no
row; the rerun resumes from it and ends with the weights, metrics, history and step trace of the run trained in one
go, bit for bit on CPU; periodic checkpoints; checkpoints for another configuration, or damaged, are ignored."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch

from harness import hookimpl
from harness.plugins import Registry
from harness.results.read import read_history, read_runs, read_steps
from harness.run import checkpoint as checkpoints
from harness.run import runner, stop
from harness.suite import load_suite

from .conftest import write_suite

pytestmark = pytest.mark.slow

# 1437 digits training samples / 96 = 14 steps an epoch; the stop at step 20 is in epoch 2, batch 6.
SUITE = """
    name: resumed
    defaults: {{epochs: 3, batch_size: 96, trace_every: 3, checkpoint_every: {every}}}
    methods: [sam, looksam, ae-sam, ss-sam, gsam, erm]
    models: [mlp]
    datasets: [digits]
    seeds: [0]
"""
STEPS_PER_EPOCH = 14


class At:
    """A plugin that calls ``then()`` after optimizer step ``step`` (0-based)."""

    def __init__(self, step: int, then) -> None:
        self.step, self.then = step, then

    @hookimpl
    def step_finished(self, run, step, info):
        if step == self.step:
            self.then()


def StopAt(step: int) -> At:  # noqa: N802 (a plugin factory)
    """Asks the run to stop after ``step``, as SIGTERM would."""
    return At(step, lambda: stop.request_stop(signal.SIGTERM))


def _interrupt() -> None:
    raise KeyboardInterrupt


def DieAt(step: int) -> At:  # noqa: N802
    """Interrupts the run after ``step`` without a stop request, as a killed worker would end."""
    return At(step, _interrupt)


def _runs(tmp_path: Path, every: int = 0):
    registry = Registry.from_plugins()
    suite = load_suite(write_suite(tmp_path / f"resumed-{every}.yaml", SUITE.format(every=every)), registry)
    return {run.method: run for run in suite.runs}


@pytest.fixture
def weights(monkeypatch):
    """The final weights of every run trained through ``runner.execute``, by run id."""
    seen: dict[str, dict[str, torch.Tensor]] = {}
    build = runner.build

    def keeping(run, registry, *args, **kwargs):
        setup = build(run, registry, *args, **kwargs)
        seen[run.run_id] = setup.model.state_dict()  # the live tensors: their final values once trained
        return setup

    monkeypatch.setattr(runner, "build", keeping)
    return seen


def _execute(run, results: Path, stop_at: int | None = None):
    registry = Registry.from_plugins()
    if stop_at is not None:
        registry.manager.register(StopAt(stop_at))
    return runner.execute(run, registry, results)


@pytest.mark.parametrize("method", ["sam", "looksam", "ae-sam", "ss-sam", "gsam"])
def test_a_run_stopped_mid_epoch_resumes_bit_for_bit(tmp_path, weights, method):
    run = _runs(tmp_path)[method]
    whole = _execute(run, tmp_path / "whole")
    straight = {key: value.clone() for key, value in weights[run.run_id].items()}

    resumed_dir = tmp_path / "resumed"
    with pytest.raises(stop.StopRequested):
        _execute(run, resumed_dir, stop_at=19)  # after the 20th step: epoch 2, 6 of its 14 batches done
    saved = checkpoints.Checkpoint(resumed_dir, run).path
    assert saved.is_file(), "a stopped run leaves its checkpoint"
    assert not (resumed_dir / run.suite / f"{run.run_id}.parquet").exists(), "and no row"
    blob = torch.load(saved, weights_only=True)
    assert (blob["position"]["epoch"], blob["position"]["batch"]) == (2, 20 - STEPS_PER_EPOCH)

    row = _execute(run, resumed_dir)
    assert not saved.exists(), "the checkpoint is removed once the run is recorded"
    assert row["status"] == "ok" and row["restarts"] == 1 and whole["restarts"] == 0
    assert row["restart_time_s"] > 0 and whole["checkpoint_time_s"] == whole["restart_time_s"] == 0
    for column in ("steps", "grad_evals", "perturbed_steps", "train_loss", "test_loss", "test_acc", "best_test_acc"):
        assert row[column] == whole[column], column
    for name, tensor in weights[run.run_id].items():
        assert torch.equal(tensor, straight[name]), f"{method}: {name} differs from the uninterrupted run's"
    folders = (tmp_path / "whole", resumed_dir)
    curves = [read_history(folder / run.suite).drop(columns=["train_time_s"]) for folder in folders]
    assert curves[0].equals(curves[1])
    traces = [read_steps(folder / run.suite) for folder in folders]
    assert len(traces[0]) == 3 * STEPS_PER_EPOCH // 3 and traces[0].equals(traces[1])


def test_a_stop_at_an_epoch_end_resumes_at_the_next_epoch(tmp_path, weights):
    run = _runs(tmp_path)["sam"]
    whole = _execute(run, tmp_path / "whole")
    with pytest.raises(stop.StopRequested):
        _execute(run, tmp_path / "resumed", stop_at=STEPS_PER_EPOCH - 1)  # the epoch's last step: stop after its eval
    blob = torch.load(checkpoints.Checkpoint(tmp_path / "resumed", run).path, weights_only=True)
    assert (blob["position"]["epoch"], blob["position"]["batch"]) == (2, 0)
    assert [entry["epoch"] for entry in blob["state"]["history"]] == [1]
    row = _execute(run, tmp_path / "resumed")
    assert (row["test_acc"], row["train_loss"], row["restarts"]) == (whole["test_acc"], whole["train_loss"], 1)


def test_a_stop_in_the_last_epoch_finishes_the_run(tmp_path):
    run = _runs(tmp_path)["erm"]
    row = _execute(run, tmp_path / "results", stop_at=3 * STEPS_PER_EPOCH - 1)  # nothing left to checkpoint
    assert row["status"] == "ok" and row["restarts"] == 0
    assert not checkpoints.Checkpoint(tmp_path / "results", run).path.exists()


def test_checkpoint_every_writes_after_each_nth_epoch_and_resumes(tmp_path, monkeypatch):
    run = _runs(tmp_path, every=1)["looksam"]
    written: list[tuple[int, int]] = []
    save = checkpoints.Checkpoint.save

    def counting(self, setup, state, timer, trace, position, shuffle):
        written.append((position.epoch, position.batch))
        save(self, setup, state, timer, trace, position, shuffle)

    monkeypatch.setattr(checkpoints.Checkpoint, "save", counting)
    whole = _execute(run, tmp_path / "whole")
    assert written == [(2, 0), (3, 0)], "after epochs 1 and 2; never after the last"
    assert whole["checkpoint_time_s"] > 0 and whole["restarts"] == 0

    # a worker that dies in epoch 3 without a stop request (SIGKILL, a crash) leaves the checkpoint of epoch 2's end
    registry = Registry.from_plugins()
    registry.manager.register(DieAt(2 * STEPS_PER_EPOCH + 3))
    with pytest.raises(KeyboardInterrupt):
        runner.execute(run, registry, tmp_path / "killed")
    row = _execute(run, tmp_path / "killed")
    assert (row["test_acc"], row["train_loss"], row["restarts"]) == (whole["test_acc"], whole["train_loss"], 1)
    assert read_runs(tmp_path / "killed" / run.suite)["restarts"].tolist() == [1]


def test_a_checkpoint_of_another_configuration_or_damaged_is_ignored(tmp_path, capsys):
    run, other = _runs(tmp_path)["sam"], _runs(tmp_path, every=2)["sam"]
    whole = _execute(run, tmp_path / "whole")
    with pytest.raises(stop.StopRequested):
        _execute(other, tmp_path / "results", stop_at=19)
    planted = checkpoints.Checkpoint(tmp_path / "results", run).path  # another run's checkpoint under this run's name
    checkpoints.Checkpoint(tmp_path / "results", other).path.rename(planted)
    row = _execute(run, tmp_path / "results")
    assert "was written for another configuration" in capsys.readouterr().err
    assert (row["restarts"], row["test_acc"]) == (0, whole["test_acc"])

    path = checkpoints.Checkpoint(tmp_path / "damaged", run).path
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    row = _execute(run, tmp_path / "damaged")
    assert "cannot be read" in capsys.readouterr().err
    assert (row["restarts"], row["test_acc"]) == (0, whole["test_acc"])


def test_a_stop_outside_training_interrupts_at_once():
    with pytest.raises(KeyboardInterrupt):
        stop.request_stop(signal.SIGTERM)
    with stop.stoppable():
        stop.request_stop(signal.SIGTERM)
        assert stop.stop_requested() == signal.SIGTERM
    assert stop.stop_requested() is None
