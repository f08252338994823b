"""The worker side of execution: one run trained in this process, from its payload to its files.

``run_worker`` is what every executor's worker calls, wherever it runs: it takes the run's lease
(``harness.execution.leases``), sends the process's output to the run's log
(``harness.execution.worker_log``), loads the driver's plugins, trains the run
(``harness.run.runner.execute``; the ``nproc`` ranks of a data-parallel run, spawned here) and
returns its status, the run's Parquet files written. The driver reads the result from those files
(``harness.execution.RowWatch``), and writes ``record_crash`` for a worker that died without
writing them. Executors import all of this from ``harness.execution``.

The worker layer sits above the runner, which trains one run in one process and never starts
processes. The runner, ``harness.run.distributed`` and torch are imported in the functions that train, so
that drivers, which import this module to hand out payloads, stay free of torch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from harness.contract.run_spec import RunSpec, run_from_payload, run_payload
from harness.execution import leases
from harness.execution.worker_log import LogWriter, log_path
from harness.paths import inside
from harness.plugins import Registry
from harness.results.columns import crash_row
from harness.results.read import read_run_file
from harness.results.store import FINISHED_STATUSES, suite_dir, write_run


def row_path(results_dir: str | Path, run: RunSpec) -> Path:
    """Where a run's result row is written (``harness.results.store.write_run``)."""
    return inside(suite_dir(results_dir, run.suite), f"{run.run_id}.parquet")


def lease_path(results_dir: str | Path, run: RunSpec) -> Path:
    """The lease file of a run being trained (``harness.execution.leases``)."""
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
    try:
        row = pq.read_table(row_path(results_dir, run), columns=["status", "finished_at", "host"]).to_pylist()[0]
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
    # O_NOFOLLOW: a log planted as a symlink in a shared results folder must not make this run append to
    # whatever file it points at (the open fails instead, ELOOP, and the run is recorded failed).
    handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0), 0o666)
    with open(handle, "a", buffering=1) as log:
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
    on_epoch: ``on_epoch(run_id, epoch, test_acc)`` after every epoch (progress for the driver); every
        epoch is written to the run's log either way (``harness.execution.worker_log``).
    entry_points: the driver's ``harness.plugins.loaded_entry_points()``, loaded here (and in the
        ranks of a data-parallel run) too, so the run trains with the plugins its suite was validated
        against.
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
    import torch  # here, not at the top: drivers import this module without torch

    from harness.run.runner import execute

    if threads:
        torch.set_num_threads(threads)
    with _redirected(log_path(results_dir, run)) as log:
        writer = LogWriter(log, run)
        writer.started(os.uname().nodename)

        def epoch_callback(spec: RunSpec, epoch: int, test_acc: float) -> None:
            writer.epoch(epoch, test_acc)
            if on_epoch is not None:
                on_epoch(spec.run_id, epoch, test_acc)

        if run.nproc > 1:
            row = _train_ranks(run, results_dir, entry_points)
        else:
            row = execute(
                run, Registry.from_plugins(extra_entry_points=entry_points), results_dir, on_epoch=epoch_callback
            )
        writer.ended(row["status"], row["error"])
    return row["status"]


def end_with_parent(poll_s: float = 0.5) -> None:
    """End this process (``os._exit``) within ``poll_s`` seconds of its parent's death, on Linux and macOS.

    A DDP rank's parent is the worker that spawned it. torch's parent-death signal for ranks is SIGINT,
    which the worker ignores (the driver handles Ctrl-C) and the ranks inherit ignored: a worker killed by
    SIGKILL (the OOM killer, the driver's stop escalation) left its ranks training on, holding the GPU and
    writing a row without a lease. A reparented process sees another ``getppid()``.
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="end-with-parent", daemon=True).start()


def _rank_main(
    rank: int, payload: dict[str, Any], results_dir: str, port: int, world_size: int, entry_points: list
) -> None:
    """One rank of a data-parallel run (``torch.multiprocessing`` entry point), with the driver's plugins."""
    from harness.run import distributed
    from harness.run.build import resolve_device
    from harness.run.runner import execute

    end_with_parent()
    run = run_from_payload(payload)
    distributed.init(rank, world_size, port, resolve_device(run.device))
    try:
        execute(run, Registry.from_plugins(extra_entry_points=entry_points), results_dir)
    finally:
        distributed.shutdown()


def _train_ranks(run: RunSpec, results_dir: str, entry_points: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Spawn ``run.nproc`` ranks for ``run``; record a failure if they die before rank 0 writes a row."""
    import torch.multiprocessing as mp  # in the training process only, as ``_train`` imports torch

    from harness.run import distributed

    try:
        mp.start_processes(
            _rank_main,
            args=(run_payload(run), results_dir, distributed.free_port(), run.nproc, list(entry_points)),
            nprocs=run.nproc,
            start_method="spawn",
        )
        error = ""
    except Exception as failure:  # a rank raised or died: the others were stopped
        error = f"{type(failure).__name__}: {failure}"
    try:  # its own file, read directly: a folder read skips a file whose types clash with other files'
        mine = read_run_file(suite_dir(results_dir, run.suite) / f"{run.run_id}.parquet")
    except (OSError, ValueError):  # none written (FileNotFoundError), or cut short (pyarrow's ArrowInvalid)
        mine = None
    if mine is None or mine.empty or error:
        return record_crash(run, results_dir, error or "the ranks exited without writing a result")
    return mine.iloc[0].to_dict()


def record_crash(run: RunSpec, results_dir: str | Path, error: str) -> dict[str, Any]:
    """Write a ``failed`` row for a run whose worker died before recording anything itself.

    Its identity columns come from ``run``, as in a trained run's row; what only training measures is
    null (``harness.results.columns.crash_row``).
    """
    row = crash_row(run, error, datetime.now(timezone.utc))
    write_run(results_dir, run.suite, row, [])
    return row


def describe_exception() -> str:
    """The current exception as ``Type: message`` plus a short traceback (for crash records)."""
    kind, value, _ = sys.exc_info()
    return f"{kind.__name__ if kind else 'Error'}: {value}\n{traceback.format_exc(limit=-6)}"
