"""Progress of runs that train elsewhere (a Slurm node, a Ray worker), read from their logs.

Every worker writes its run's start and epochs to the run's log (``harness.execution.run_worker``);
``LogProgress`` reads the records of the new lines on the driver with the core's ``LogReader`` (workers
write their Parquet files to the results folder, so it is shared anyway) and reports them to the
driver's events: ``started`` (once, naming the worker's host) and ``epoch``.
"""

from __future__ import annotations

from pathlib import Path

from harness.execution import Epoch, LogReader, RunEvents, RunSpec, Started


class LogProgress:
    """Reports a run's progress from the lines its worker appends to the run's log.

    Create it when the run is handed to a worker: lines already in the log (earlier attempts) are
    skipped. ``where`` is added to the worker's host in the ``started`` event (a job id).
    """

    def __init__(self, results_dir: str | Path, run: RunSpec, where: str = "") -> None:
        self.run = run
        self.where = where
        self.reader = LogReader(results_dir, run)
        self.started = False

    def poll(self, events: RunEvents) -> None:
        """Report the lines written since the last poll."""
        for record in self.reader.read():
            if isinstance(record, Started):
                self.start(events, record.host)
            elif isinstance(record, Epoch):
                self.start(events)
                events.epoch(self.run, record.epoch, record.test_acc)

    def start(self, events: RunEvents, host: str = "") -> None:
        """Report the run started, once (also called for a run that ended before its log said so)."""
        if not self.started:
            self.started = True
            events.started(self.run, ", ".join(part for part in (host, self.where) if part))
