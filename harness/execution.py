"""What executors need from the core: runs as JSON payloads, the worker entry point, crash records.

Executor plugins (``register_executors``) build an object with one method::

    executor.run(runs: Sequence[RunSpec], *, results_dir: str, events: RunEvents) -> None

It trains every run somewhere (a local process pool, a Slurm job array, Ray tasks), each through
``run_worker`` in the process that trains it, which writes the run's own Parquet files and its log
(``RESULTS_DIR/<suite>/logs/<run_id>.log``). Nothing needs to travel back through pickles: the driver
reads the statuses from the files. ``events`` receives progress (``started``, ``epoch``,
``finished``, ``skipped``) where the executor can deliver it; an executor whose worker died without
writing a row (a signal, the OOM killer, a preempted job) calls ``record_crash`` so the run is
recorded as ``failed`` and the others go on.

``run_worker`` first takes the run's lease (``harness.leases``): a run that another live process is
training, or that another process finished since the driver chose it, is not trained twice. The
worker then returns ``Skipped`` having written nothing, and the executor reports ``events.skipped``
and writes nothing either (no crash record).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from harness import leases
from harness.paths import inside
from harness.plugins import Registry
from harness.results import FINISHED_STATUSES, suite_dir, write_run
from harness.suite import RunSpec


class RunEvents(Protocol):
    """Progress callbacks an executor calls from the driver process (any may be a no-op)."""

    def started(self, run: RunSpec, worker: str = "") -> None: ...

    def epoch(self, run: RunSpec, epoch: int, test_acc: float) -> None: ...

    def finished(self, run: RunSpec, row: Mapping[str, Any]) -> None: ...

    def skipped(self, run: RunSpec, reason: str) -> None: ...


class Executor(Protocol):
    """Runs a list of runs to completion (or to a recorded failure)."""

    def run(self, runs: Sequence[RunSpec], *, results_dir: str, events: RunEvents) -> None: ...


#: Modules every run imports besides its components' own: the runner, and timm's optimizer and
#: learning-rate schedule factories (``harness.runner.build``).
RUN_MODULES = ("torch", "harness.runner", "harness.execution", "timm.optim", "timm.scheduler")


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


def run_payload(run: RunSpec) -> dict[str, Any]:
    """``run`` as plain JSON-able data (what crosses process and machine boundaries)."""
    payload = dataclasses.asdict(run)
    payload["metrics"] = [[name, dict(params)] for name, params in run.metrics]
    return json.loads(json.dumps(payload))


def run_from_payload(payload: Mapping[str, Any]) -> RunSpec:
    """The ``RunSpec`` that ``run_payload`` described."""
    fields = dict(payload)
    fields["metrics"] = tuple((name, dict(params)) for name, params in fields.get("metrics", ()))
    return RunSpec(**fields)


def log_path(results_dir: str | Path, run: RunSpec) -> Path:
    """Where a run's log goes."""
    return inside(suite_dir(results_dir, run.suite), "logs", f"{run.run_id}.log")


def lease_path(results_dir: str | Path, run: RunSpec) -> Path:
    """The lease file of a run being trained (``harness.leases``)."""
    return inside(suite_dir(results_dir, run.suite), ".leases", f"{run.run_id}.lease")


@dataclasses.dataclass(frozen=True)
class Skipped:
    """What ``run_worker`` returns for a run it did not train: another process has it (``reason`` says which)."""

    run_id: str
    reason: str


def finished_since(results_dir: str | Path, run: RunSpec, since: datetime) -> str:
    """Who finished ``run`` (status ok or diverged) at or after ``since``; "" when nobody did.

    A row that cannot be read counts as not finished: training the run again replaces it.
    """
    path = inside(suite_dir(results_dir, run.suite), f"{run.run_id}.parquet")
    try:
        row = pq.read_table(path, columns=["status", "finished_at", "host"]).to_pylist()[0]
    except (OSError, pa.ArrowException, IndexError):
        return ""
    finished_at = row["finished_at"]
    if row["status"] not in FINISHED_STATUSES or finished_at is None or finished_at < since:
        return ""
    return f"finished {row['status']} on {row['host'] or 'another host'} at {finished_at.isoformat(timespec='seconds')}"


@contextlib.contextmanager
def _redirected(path: Path):
    """Send this process's stdout and stderr (file descriptors too) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with path.open("a", buffering=1) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        old_streams = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = log
        try:
            yield log
        finally:
            sys.stdout, sys.stderr = old_streams
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def run_worker(
    payload: Mapping[str, Any],
    results_dir: str,
    *,
    threads: int | None = None,
    on_epoch: Callable[[str, int, float], None] | None = None,
    entry_points: Sequence[tuple[str, str]] = (),
    since: datetime | None = None,
) -> str | Skipped:
    """Train one run in this process (a fresh one, ideally) and write its files; return its status.

    The run's lease is held while it trains (released when its row is written or the run is stopped).
    ``Skipped``, with nothing written, when another live process holds the lease, or when a row
    finished at or after ``since`` is already there (another process trained the run after the driver
    chose it: the driver gives the time it chose its runs; None trains whatever is recorded).

    threads: torch's intra-op threads for this run (executors split the cores between workers).
    on_epoch: ``on_epoch(run_id, epoch, test_acc)`` after every epoch (progress for the driver).
    entry_points: the driver's ``harness.plugins.loaded_entry_points()``, loaded here too, so the run
        trains with the plugins its suite was validated against.
    """
    run = run_from_payload(payload)
    lease = leases.take(lease_path(results_dir, run))
    if isinstance(lease, leases.Holder):
        return Skipped(run.run_id, f"leased by {lease.describe()}")
    with lease:
        done = finished_since(results_dir, run, since) if since is not None else ""
        if done:
            return Skipped(run.run_id, done)
        return _train(run, results_dir, threads, on_epoch, entry_points)


def _train(
    run: RunSpec,
    results_dir: str,
    threads: int | None,
    on_epoch: Callable[[str, int, float], None] | None,
    entry_points: Sequence[tuple[str, str]],
) -> str:
    """``run_worker``'s training, under the run's lease: the log, the plugins, the run; return its status."""
    import torch

    from harness.plugins import Registry
    from harness.runner import execute

    if threads:
        torch.set_num_threads(threads)
    with _redirected(log_path(results_dir, run)) as log:
        print(f"{datetime.now(timezone.utc).isoformat()} {run.run_id}: start on {os.uname().nodename}", file=log)
        print(json.dumps(run.config(), sort_keys=True), file=log)
        epoch_callback = None
        if on_epoch is not None:

            def epoch_callback(spec: RunSpec, epoch: int, test_acc: float) -> None:
                print(f"epoch {epoch}/{spec.epochs} test_acc {test_acc:.4f}", file=log)
                on_epoch(spec.run_id, epoch, test_acc)

        registry = Registry.from_plugins(extra_entry_points=entry_points)
        row = execute(run, registry, results_dir, on_epoch=epoch_callback)
        print(f"{datetime.now(timezone.utc).isoformat()} {run.run_id}: {row['status']} {row['error']}", file=log)
    return row["status"]


def record_crash(run: RunSpec, results_dir: str | Path, error: str) -> dict[str, Any]:
    """Write a ``failed`` row for a run whose worker died before recording anything itself."""
    now = datetime.now(timezone.utc)
    row = {
        "run_id": run.run_id,
        "suite": run.suite,
        "method": run.method,
        "preset": run.preset,
        "optimizer": run.optimizer,
        "scheduler": run.scheduler,
        "model": run.model,
        "dataset": run.dataset,
        "noise_rate": run.noise_rate,
        "seed": run.seed,
        "epochs": run.epochs,
        "batch_size": run.batch_size,
        "steps": 0,
        "status": "failed",
        "error": error,
        "config": json.dumps(run.config(), sort_keys=True),
        "started_at": now,
        "finished_at": now,
    }
    write_run(results_dir, run.suite, row, [])
    return row


def describe_exception() -> str:
    """The current exception as ``Type: message`` plus a short traceback (for crash records)."""
    kind, value, _ = sys.exc_info()
    return f"{kind.__name__ if kind else 'Error'}: {value}\n{traceback.format_exc(limit=-6)}"
