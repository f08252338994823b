"""Progress of runs that train elsewhere (a Slurm node, a Ray worker), read from their logs.

``run_logged`` is what those workers run: ``run_worker`` with an epoch callback, so every epoch is
written to the run's log (``epoch 3/15 test_acc 0.9120``). ``LogProgress`` reads the new lines of
that log on the driver (workers write their Parquet files to the results folder, so it is shared
anyway) and reports ``started`` (from the log's start line, which names the host) and ``epoch``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from harness.execution import RunEvents, Skipped, log_path, run_worker
from harness.suite import RunSpec

_EPOCH = re.compile(r"^epoch (\d+)/\d+ test_acc (\S+)$")


def _ignore(run_id: str, epoch: int, test_acc: float) -> None:
    """The epoch callback of remote workers: ``run_worker`` logs each epoch when it has one."""


def run_logged(
    payload: dict[str, Any],
    results_dir: str,
    threads: int | None = None,
    entry_points: Sequence[tuple[str, str]] = (),
    since: datetime | None = None,
) -> str | Skipped:
    """Train one run in this process, its epochs written to its log; return its status (or ``Skipped``).

    entry_points, since: the driver's ``harness.plugins.loaded_entry_points()`` and the time it chose
    its runs (see ``run_worker``).
    """
    return run_worker(payload, results_dir, threads=threads, on_epoch=_ignore, entry_points=entry_points, since=since)


class LogProgress:
    """Reports a run's progress from the lines its worker appends to the run's log.

    Create it when the run is handed to a worker: lines already in the log (earlier attempts) are
    skipped. ``where`` is added to the worker's host in the ``started`` event (a job id).
    """

    def __init__(self, results_dir: str | Path, run: RunSpec, where: str = "") -> None:
        self.run = run
        self.where = where
        self.path = log_path(results_dir, run)
        self.offset = self.path.stat().st_size if self.path.exists() else 0
        self.started = False
        self._partial = ""
        self._start = re.compile(rf"^\S+ {re.escape(run.run_id)}: start on (\S+)$")

    def poll(self, events: RunEvents) -> None:
        """Report the lines written since the last poll."""
        try:
            with self.path.open("rb") as log:
                log.seek(self.offset)
                data = log.read()
        except FileNotFoundError:
            return
        self.offset += len(data)
        *lines, self._partial = (self._partial + data.decode(errors="replace")).split("\n")
        for line in lines:
            start = self._start.match(line)
            epoch = _EPOCH.match(line)
            if start:
                self.start(events, start.group(1))
            elif epoch:
                self.start(events)
                events.epoch(self.run, int(epoch.group(1)), float(epoch.group(2)))

    def start(self, events: RunEvents, host: str = "") -> None:
        """Report the run started, once (also called for a run that ended before its log said so)."""
        if not self.started:
            self.started = True
            events.started(self.run, ", ".join(part for part in (host, self.where) if part))
