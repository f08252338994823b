"""Preemption-safe runs: a run's checkpoint, written periodically and when the worker is asked to stop.

A run with ``checkpoint_every: N`` writes ``RESULTS_DIR/<suite>/checkpoints/<run_id>.pt`` after every N-th epoch, and
every run writes it when its worker is asked to stop: the executors install ``harness.run.stop.request_stop`` as the
handler of SIGTERM (and of Slurm's preemption signal), and the runner acts on it at the next step boundary (never
inside a step, where the weights may be perturbed), then ends the run with ``StopRequested`` and no row. A run that
finds its checkpoint resumes from it and ends with the weights and metrics of an uninterrupted run, bit for bit on
CPU. The checkpoint holds:

- the model, the optimizer with its variant and scheduler state (``SharpnessAwareOptimizer.state_dict``, which the
  contract kit checks continues bit for bit), the learning-rate schedule and the fp16 loss scale;
- every random generator: Python's, NumPy's, torch's (CPU and CUDA), the run's augmentation generator, and its
  shuffle generator as at the epoch's start (the resumed epoch draws the same order and skips the batches done);
- the measurements so far (``RunState``: the epoch history, step times, step trace) and the epoch's partial loss sum.

It is written atomically (``harness.results.store.atomic_file``), read with ``torch.load(weights_only=True)`` (a file
planted in a shared results folder cannot run code), used only when it was written for the same run configuration
(later settings included: a resumed run must not mix, say, two ``trace_every`` values), and removed once the run's row
is written. Writing and restoring are timed apart from training (``checkpoint_time_s``, ``restart_time_s``) and
resumes are counted (``restarts``). Data-parallel runs (``nproc > 1``) are not checkpointed.
"""

from __future__ import annotations

import dataclasses
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.contract.run_spec import RunSpec, run_payload
from harness.paths import inside
from harness.results.store import atomic_file, suite_dir
from harness.run.build import Setup
from harness.run.row import RunState
from harness.run.timing import StepTimer
from harness.run.trace import StepTrace

#: The layout of a checkpoint file; a file of another layout is not resumed from.
FORMAT = 1


@dataclass
class Position:
    """Where training goes on: ``epoch`` (from 1), of which ``batch`` batches are done, their loss sum ``loss_sum``."""

    epoch: int = 1
    batch: int = 0
    loss_sum: torch.Tensor | None = None


def _config(run: RunSpec) -> str:
    return json.dumps(run_payload(run), sort_keys=True, default=str)


def _rng_states(setup: Setup, shuffle: torch.Tensor) -> dict[str, Any]:
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if setup.device.type == "cuda" else [],
        "shuffle": shuffle,
        "augment": setup.augment.get_state(),
    }


def _set_rng_states(setup: Setup, states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    kind, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if states["cuda"]:
        torch.cuda.set_rng_state_all(states["cuda"])
    setup.shuffle.set_state(states["shuffle"])
    setup.augment.set_state(states["augment"])


class Checkpoint:
    """The checkpoint of one run: ``save`` it, ``restore`` from it, ``remove`` it once the run is recorded."""

    def __init__(self, results_dir: str | Path, run: RunSpec) -> None:
        self.run = run
        self.path = inside(suite_dir(results_dir, run.suite), "checkpoints", f"{run.run_id}.pt")
        self._config = _config(run)

    def due(self, epoch: int) -> bool:
        """Whether the end of ``epoch`` is a periodic checkpoint (``checkpoint_every``; never after the last epoch)."""
        every = self.run.checkpoint_every
        return bool(every) and epoch % every == 0 and epoch < self.run.epochs

    def save(
        self,
        setup: Setup,
        state: RunState,
        timer: StepTimer,
        trace: StepTrace | None,
        position: Position,
        shuffle: torch.Tensor,
    ) -> None:
        """Write the run as it stands at ``position``; ``shuffle``: the order generator's state at the epoch's start."""
        started, since = time.perf_counter(), time.time()
        timer.flush()
        if trace is not None:
            trace.flush()
        state.step_times = list(timer.durations)
        loss_sum = position.loss_sum.detach().cpu() if position.loss_sum is not None else None
        scaler = setup.precision.scaler
        blob = {
            "format": FORMAT,
            "config": self._config,
            "position": {"epoch": position.epoch, "batch": position.batch, "loss_sum": loss_sum},
            "model": setup.model.state_dict(),
            "optimizer": setup.optimizer.state_dict(),
            "lr_scheduler": setup.lr_scheduler.state_dict(),
            "swa": setup.averaged.state_dict() if setup.averaged is not None else None,
            "loss_scale": scaler.state_dict() if scaler is not None else None,
            "rng": _rng_states(setup, shuffle),
            "state": dataclasses.asdict(state),
            # the write's own duration ends with the process when it stops: ``restore`` takes it from the file's
            # mtime (to the file system's clock granularity, a few milliseconds)
            "saving_since": since,
        }
        with atomic_file(self.path) as stream:
            torch.save(blob, stream)
        state.checkpoint_time_s += time.perf_counter() - started

    def restore(self, setup: Setup, state: RunState, timer: StepTimer, trace: StepTrace | None) -> Position:
        """Load the run's checkpoint into ``setup``, ``state``, ``timer`` and ``trace``; where training goes on.

        No checkpoint: the start (``Position()``). One that cannot be read, or was written for another configuration,
        is ignored with a warning on stderr (the run's log), and overwritten by the run's next checkpoint.
        """
        if not self.path.is_file():
            return Position()
        started = time.perf_counter()
        try:
            blob = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as error:  # damaged, truncated, or not a checkpoint at all
            return self._ignored(f"cannot be read ({type(error).__name__}: {error})")
        if not isinstance(blob, dict) or blob.get("format") != FORMAT:
            return self._ignored(f"is not a checkpoint of format {FORMAT}")
        if blob.get("config") != self._config:
            return self._ignored("was written for another configuration of this run")
        setup.model.load_state_dict(blob["model"])
        setup.optimizer.load_state_dict(blob["optimizer"])
        setup.lr_scheduler.load_state_dict(blob["lr_scheduler"])
        if setup.averaged is not None:
            setup.averaged.load_state_dict(blob["swa"])
        if setup.precision.scaler is not None:
            setup.precision.scaler.load_state_dict(blob["loss_scale"])
        _set_rng_states(setup, blob["rng"])
        for name, value in blob["state"].items():
            if hasattr(state, name):
                setattr(state, name, value)
        timer.durations = list(state.step_times)
        if trace is not None:
            trace.rows = state.step_trace
        state.checkpoint_time_s += max(0.0, self.path.stat().st_mtime - float(blob["saving_since"]))
        state.restarts += 1
        state.restart_time_s += time.perf_counter() - started
        where = blob["position"]
        loss_sum = where["loss_sum"].to(setup.device) if where["loss_sum"] is not None else None
        print(f"resumed from {self.path}: epoch {where['epoch']}, batch {where['batch']}", file=sys.stderr)
        return Position(int(where["epoch"]), int(where["batch"]), loss_sum)

    def _ignored(self, why: str) -> Position:
        print(f"warning: checkpoint {self.path} {why}: training from the start", file=sys.stderr)
        return Position()

    def remove(self) -> None:
        """Delete the checkpoint (the run is recorded)."""
        self.path.unlink(missing_ok=True)
