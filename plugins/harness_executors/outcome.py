"""How a run ended, seen from the driver: the row its worker wrote, or a crash record.

Workers write their own Parquet files (``harness.execution.run_worker``), so the driver learns a
run's result by reading the run's row file. A worker that died without writing one (a signal, the
OOM killer, a cancelled or timed-out job) leaves either no file or the file of an earlier attempt
(a ``failed`` row being retried): ``RowWatch`` remembers the file as it was when the run was handed
to a worker, so only a row written since counts. A worker that did not train its run because another
process has it (``harness.execution.Skipped``) wrote nothing, and nothing is written for it here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from harness.execution import RunEvents, Skipped, record_crash
from harness.results import suite_dir
from harness.suite import RunSpec


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


class RowWatch:
    """Tells whether a run's row file was (re)written since the watch began."""

    def __init__(self, results_dir: str | Path, run: RunSpec) -> None:
        self.run = run
        self.results_dir = results_dir
        self.path = suite_dir(results_dir, run.suite) / f"{run.run_id}.parquet"
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
        reported skipped, and None returned.
        """
        if isinstance(outcome, Skipped):
            events.skipped(self.run, outcome.reason)
            return None
        row = self.fresh_row()
        if row is None:
            row = record_crash(self.run, self.results_dir, error)
        events.finished(self.run, row)
        return row
