"""The executor API: everything an executor plugin needs from the core, importable from this module.

Executor plugins (``register_executors``) build an object with one method::

    executor.run(runs: Sequence[RunSpec], *, results_dir: str, events: RunEvents) -> None

It trains every run somewhere (a local process pool, a Slurm job array, Ray tasks), each through

    run_worker(run_payload(run), results_dir, entry_points=loaded_entry_points(), since=...)

in the process that trains it (``harness.execution.worker``), which writes the run's own Parquet files and its
log (``harness.execution.worker_log``). Nothing needs to travel back through pickles: the driver reads each
run's result from its row file (a ``RowWatch`` made when the run is handed to a worker, whose
``settle`` reports it to ``events``). A worker installs ``request_stop`` for the signals that stop it (SIGTERM,
a cluster's preemption signal): the run then writes its checkpoint at the next step boundary and ends with
``StopRequested``, without a row; the next attempt resumes from the checkpoint (``harness.run.checkpoint``).
``events`` receives progress (``started``, ``epoch``,
``finished``, ``skipped``) where the executor can deliver it; a driver whose workers train elsewhere
reads the epochs from the runs' logs (``LogReader``). A worker that died without writing a row (a
signal, the OOM killer, a preempted job) leaves ``RowWatch.settle`` to record the run ``failed``
(``record_crash``), so the others go on.

``run_worker`` first takes the run's lease (``harness.execution.leases``): a run that another live process is
training, or that another process finished since the driver chose it, is not trained twice. The
worker then returns ``Skipped`` having written nothing, and ``RowWatch.settle`` reports
``events.skipped`` and writes nothing either (no crash record).

``__all__`` is the API: the names defined here (the protocols, ``RowWatch``, ``worker_modules``) and
those of ``harness.execution.worker`` and ``harness.execution.worker_log`` that executors use. Importing it is cheap (no
torch): the worker imports the runner and torch only when it trains.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import pyarrow.parquet as pq

from harness.contract.run_spec import RunSpec
from harness.execution.worker import (
    Skipped,
    describe_exception,
    lease_path,
    record_crash,
    row_path,
    run_from_payload,
    run_payload,
    run_worker,
)
from harness.execution.worker_log import Epoch, LogReader, Started, log_path
from harness.plugins import Registry, loaded_entry_points
from harness.results.store import suite_dir
from harness.run.stop import StopRequested, request_stop, training

__all__ = [
    "RUN_MODULES",
    "Epoch",
    "Executor",
    "LogReader",
    "RowWatch",
    "RunEvents",
    "RunSpec",
    "Skipped",
    "Started",
    "StopRequested",
    "describe_exception",
    "lease_path",
    "loaded_entry_points",
    "log_path",
    "record_crash",
    "request_stop",
    "row_path",
    "run_from_payload",
    "run_payload",
    "run_worker",
    "suite_dir",
    "training",
    "worker_modules",
]


class RunEvents(Protocol):
    """Progress callbacks an executor calls from the driver process (any may be a no-op)."""

    def started(self, run: RunSpec, worker: str = "") -> None: ...

    def epoch(self, run: RunSpec, epoch: int, test_acc: float) -> None: ...

    def finished(self, run: RunSpec, row: Mapping[str, Any]) -> None: ...

    def skipped(self, run: RunSpec, reason: str) -> None: ...


class Executor(Protocol):
    """Runs a list of runs to completion (or to a recorded failure)."""

    def run(self, runs: Sequence[RunSpec], *, results_dir: str, events: RunEvents) -> None: ...


#: Modules every run imports besides its components' own: torch, the runner, this API (the worker),
#: and timm's optimizer and learning-rate schedule factories (``harness.run.build.build``).
RUN_MODULES = ("torch", "harness.run.runner", "harness.execution", "timm.optim", "timm.scheduler")


def worker_modules(runs: Sequence[RunSpec], registry: Registry) -> list[str]:
    """The modules a worker imports to train ``runs``: the core's and each component's factory module.

    An executor whose workers start from a common parent (the local executor's forkserver) can import
    them there once, so that each run does not import torch, timm or scikit-learn again (seconds per run).
    Components whose factory is a callable rather than a lazy ``"module:attribute"`` path are already
    imported with their plugin and are not listed.
    """
    modules = dict.fromkeys(RUN_MODULES)
    for run in runs:
        for kind, name in run.components():
            factory = registry.get(kind, name).factory
            if isinstance(factory, str):
                modules[factory.split(":", 1)[0]] = None
    return list(modules)


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


class RowWatch:
    """How a run ended, seen from the driver: the row its worker wrote since the watch began, or a crash record.

    Create it when the run is handed to a worker. A worker that died without writing a row leaves
    either no file or the file of an earlier attempt (a ``failed`` row being retried): the watch
    remembers the file as it was, so only a row written since counts.
    """

    def __init__(self, results_dir: str | Path, run: RunSpec) -> None:
        self.run = run
        self.results_dir = results_dir
        self.path = row_path(results_dir, run)
        self._before = _signature(self.path)

    def fresh_row(self) -> dict[str, Any] | None:
        """The row written since the watch began, or ``None``."""
        signature = _signature(self.path)
        if signature is None or signature == self._before:
            return None
        return pq.read_table(self.path).to_pylist()[0]

    def settle(self, events: RunEvents, error: str, outcome: Any = None) -> dict[str, Any] | None:
        """Report how the run ended: with its fresh row, or with a ``failed`` row recording ``error``.

        ``outcome`` is what the worker returned, where the executor has it: for ``Skipped`` the run is
        reported skipped, nothing is written, and None returned.
        """
        if isinstance(outcome, Skipped):
            events.skipped(self.run, outcome.reason)
            return None
        row = self.fresh_row()
        if row is None:
            row = record_crash(self.run, self.results_dir, error)
        events.finished(self.run, row)
        return row
