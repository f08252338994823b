"""A run's log: where it is, the lines its worker writes there, and how a driver reads them back.

The worker (``harness.execution.run_worker``) sends the run's stdout and stderr to
``RESULTS_DIR/<suite>/logs/<run_id>.log`` and writes these lines around whatever the run prints::

    2025-01-01T12:00:00.000000+00:00 <run_id>: start on <host>
    {"batch_size": 64, ...}                              the run's configuration, one JSON line
    epoch 3/15 test_acc 0.9120                           after every epoch
    2025-01-01T12:03:00.000000+00:00 <run_id>: ok        its status, then its error if any

A driver whose workers train elsewhere (a Slurm node, a Ray worker) follows its runs from these lines
(the results folder is shared with the workers anyway: they write their Parquet files there):
``LogReader`` gives the ``Started`` and ``Epoch`` records of the lines appended since it was created.
``LogWriter`` and the parser live side by side so that the format has one home.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

from harness.contract.run_spec import RunSpec
from harness.paths import inside
from harness.results.store import suite_dir

_EPOCH = re.compile(r"^epoch (\d+)/\d+ test_acc (\S+)$")
_START = re.compile(r"^\S+ (\S+): start on (\S+)$")


def log_path(results_dir: str | Path, run: RunSpec) -> Path:
    """Where a run's log goes."""
    return inside(suite_dir(results_dir, run.suite), "logs", f"{run.run_id}.log")


@dataclass(frozen=True)
class Started:
    """The worker began training the run on ``host``."""

    host: str


@dataclass(frozen=True)
class Epoch:
    """The run finished epoch ``epoch`` (from 1) with ``test_acc``."""

    epoch: int
    test_acc: float


class LogWriter:
    """Writes the lines a driver reads back (``LogReader``) to ``log``, the run's open log."""

    def __init__(self, log: TextIO, run: RunSpec) -> None:
        self.log = log
        self.run = run

    def started(self, host: str) -> None:
        """The start line, naming ``host``, and the run's configuration."""
        print(f"{_now()} {self.run.run_id}: start on {host}", file=self.log)
        print(json.dumps(self.run.config(), sort_keys=True), file=self.log)

    def epoch(self, epoch: int, test_acc: float) -> None:
        print(f"epoch {epoch}/{self.run.epochs} test_acc {test_acc:.4f}", file=self.log)

    def ended(self, status: str, error: str) -> None:
        print(f"{_now()} {self.run.run_id}: {status} {error}", file=self.log)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def parse_line(line: str, run_id: str) -> Started | Epoch | None:
    """The record a line of ``run_id``'s log stands for; None for every other line (what the run printed)."""
    start = _START.match(line)
    if start and start.group(1) == run_id:
        return Started(start.group(2))
    epoch = _EPOCH.match(line)
    if epoch:
        return Epoch(int(epoch.group(1)), float(epoch.group(2)))
    return None


class LogReader:
    """The records of the lines appended to a run's log since the reader was created.

    Create it when the run is handed to a worker: lines already in the log (earlier attempts) are
    skipped. A line is read once it is complete (ends with a newline).
    """

    def __init__(self, results_dir: str | Path, run: RunSpec) -> None:
        self.run_id = run.run_id
        self.path = log_path(results_dir, run)
        self.offset = self.path.stat().st_size if self.path.exists() else 0
        self._partial = ""

    def read(self) -> list[Started | Epoch]:
        """The records of the lines completed since the last read (none while the log does not exist)."""
        try:
            with self.path.open("rb") as log:
                log.seek(self.offset)
                data = log.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        *lines, self._partial = (self._partial + data.decode(errors="replace")).split("\n")
        records = (parse_line(line, self.run_id) for line in lines)
        return [record for record in records if record is not None]
