"""Progress display for ``harness run``: a live rich display on a terminal, plain lines otherwise.

It receives an executor's events (``started``, ``epoch``, ``finished``, ``skipped``; ``harness.execution.RunEvents``)
for any number of runs in flight. On a terminal: one bar for the suite (runs done out of runs to
train, with the counts done / running / not ok and an ETA) and one bar per run in flight (its worker,
epoch and test accuracy). When stdout is not a terminal (CI, a log file, a Slurm job): one line per
run started and finished, and one per epoch.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class SuiteProgress:
    """Reports a suite's progress; use as a context manager around the executor's work."""

    def __init__(self, suite: str, runs: Sequence[Any], *, live: bool | None = None) -> None:
        self.suite = suite
        self.total = len(runs)
        self.done = 0
        self.not_ok = 0
        self.skipped_runs: dict[str, str] = {}  # run id -> why another process has it
        self.live = sys.stdout.isatty() if live is None else live
        self._progress: Progress | None = None
        self._suite_task = None
        self._run_tasks: dict[str, Any] = {}
        self._lock = threading.Lock()  # executors may report from a listener thread

    def __enter__(self) -> SuiteProgress:
        if self.live:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(),
            )
            self._progress.start()
            self._suite_task = self._progress.add_task(self._suite_line(), total=self.total)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def _suite_line(self) -> str:
        running = len(self._run_tasks)
        return f"suite {self.suite}: {self.done} done, {running} running, {self.not_ok} not ok"

    def started(self, run: Any, worker: str = "") -> None:
        where = f" [{worker}]" if worker else ""
        with self._lock:
            if self._progress is not None:
                self._run_tasks[run.run_id] = self._progress.add_task(f"  {run.run_id}{where}", total=run.epochs)
                self._progress.update(self._suite_task, description=self._suite_line())
            else:
                self._run_tasks[run.run_id] = None
                print(f"[{self.done}/{self.total}] {run.run_id}{where}: training {run.epochs} epochs", flush=True)

    def epoch(self, run: Any, epoch: int, test_acc: float) -> None:
        with self._lock:
            task = self._run_tasks.get(run.run_id)
            if self._progress is not None and task is not None:
                self._progress.update(task, completed=epoch, description=f"  {run.run_id} acc {test_acc:.4f}")
            elif self._progress is None:
                print(f"    {run.run_id}: epoch {epoch}/{run.epochs} test_acc {test_acc:.4f}", flush=True)

    def finished(self, run: Any, row: Mapping[str, Any]) -> None:
        acc = row.get("test_acc")
        line = f"{run.run_id}: {row['status']}" + (f", test_acc {acc:.4f}" if acc is not None else "")
        if row["status"] != "ok" and row.get("error"):
            line += f" ({row['error'].splitlines()[0]})"
        with self._lock:
            self.not_ok += row["status"] not in ("ok", "pruned")  # a pruned trial stopped as its study asked
            self._end(run, line)

    def skipped(self, run: Any, reason: str) -> None:
        """A run another process has (``harness.execution.Skipped``): not trained here, kept in ``skipped``."""
        with self._lock:
            self.skipped_runs[run.run_id] = reason
            self._end(run, f"{run.run_id}: skipped, {reason}")

    def _end(self, run: Any, line: str) -> None:
        """Count a run done and print its line (the lock held)."""
        self.done += 1
        task = self._run_tasks.pop(run.run_id, None)
        if self._progress is not None:
            if task is not None:
                self._progress.remove_task(task)
            self._progress.update(self._suite_task, advance=1, description=self._suite_line())
            self._progress.console.print(line)
        else:
            print(f"[{self.done}/{self.total}] {line}", flush=True)
