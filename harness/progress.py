"""Progress display for ``harness run``: a live rich display on a terminal, plain lines otherwise.

On a terminal: one bar for the suite (runs done out of runs to train, with an ETA) and one for the
run in flight (epochs). When stdout is not a terminal (CI, a log file, a Slurm job): one line per
run started and finished, and one per epoch.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class SuiteProgress:
    """Reports a suite's progress; use as a context manager around the loop over runs."""

    def __init__(self, suite: str, runs: Sequence[Any]) -> None:
        self.suite = suite
        self.total = len(runs)
        self.done = 0
        self.failed = 0
        self.live = sys.stdout.isatty()
        self._progress: Progress | None = None
        self._suite_task = self._run_task = None

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
            self._suite_task = self._progress.add_task(f"suite {self.suite}", total=self.total)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def started(self, run: Any) -> None:
        if self._progress is not None:
            if self._run_task is not None:
                self._progress.remove_task(self._run_task)
            self._run_task = self._progress.add_task(f"  {run.run_id}", total=run.epochs)
        else:
            print(f"[{self.done + 1}/{self.total}] {run.run_id}: training {run.epochs} epochs", flush=True)

    def epoch(self, run: Any, epoch: int, test_acc: float) -> None:
        if self._progress is not None:
            self._progress.update(self._run_task, completed=epoch, description=f"  {run.run_id} acc {test_acc:.4f}")
        else:
            print(f"    {run.run_id}: epoch {epoch}/{run.epochs} test_acc {test_acc:.4f}", flush=True)

    def finished(self, run: Any, row: Mapping[str, Any]) -> None:
        self.done += 1
        self.failed += row["status"] != "ok"
        acc = row.get("test_acc")
        line = f"{run.run_id}: {row['status']}" + (f", test_acc {acc:.4f}" if acc is not None else "")
        if row["status"] != "ok":
            line += f" ({row['error'].splitlines()[0] if row['error'] else ''})"
        if self._progress is not None:
            self._progress.update(self._suite_task, advance=1, description=f"suite {self.suite} ({self.failed} not ok)")
            self._progress.console.print(line)
        else:
            print(f"[{self.done}/{self.total}] {line}", flush=True)
