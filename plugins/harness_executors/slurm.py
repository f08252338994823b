"""The ``submitit`` executor: runs as Slurm job arrays, or as local jobs where there is no Slurm.

All pending runs go to Slurm as one job array of ``harness.execution.run_worker`` calls (at most
``array_parallelism`` running at once); with ``cluster: local`` (or on a machine without Slurm)
submitit's local executor runs the same code path as subprocesses, and the driver keeps at most
``array_parallelism`` of them running. Each job writes its run's Parquet files and log; the driver
polls the jobs, reports progress from the logs, and records a job that ended without writing a row
(timed out, preempted, cancelled, out of memory, killed) as ``failed`` with the job's state and the
tail of its stderr. A run that times out while training is recorded by its own worker: submitit
raises in the job when Slurm signals the time limit. Ctrl-C cancels the jobs still in flight.
"""

from __future__ import annotations

import functools
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.errors import PluginError, UsageError
from harness.execution import RowWatch, RunEvents, RunSpec, loaded_entry_points, run_payload, run_worker, suite_dir
from harness_executors.log_progress import LogProgress

#: Seconds between two looks at the jobs (submitit rate-limits its own ``sacct`` calls).
POLL_S = 1.0
#: Seconds cancelled jobs get to end before the driver stops waiting for them.
CANCEL_GRACE_S = 10.0
#: Lines of a failed job's stderr kept in the run's error.
STDERR_LINES = 20


def _positive(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"executor submitit: {name}={value!r}; expected an integer >= {minimum}")
    return value


@dataclass
class _Job:
    job: Any  # submitit.Job
    run: RunSpec
    watch: RowWatch
    progress: LogProgress


class SubmititExecutor:
    """Trains runs as submitit jobs: a Slurm job array, or local subprocesses.

    folder: where submitit keeps its job files ("": ``RESULTS_DIR/<suite>/submitit``).
    cluster: ``slurm``, ``local`` or "" (Slurm when ``sbatch`` is available, else local).
    partition, slurm_additional_parameters: Slurm's partition and extra ``#SBATCH`` options.
    gpus_per_node, cpus_per_task, timeout_min: what each run's job asks for (threads = cpus_per_task).
    array_parallelism: runs training at the same time.
    """

    def __init__(
        self,
        folder: str = "",
        cluster: str = "",
        partition: str = "",
        gpus_per_node: int = 0,
        cpus_per_task: int = 2,
        timeout_min: int = 60,
        array_parallelism: int = 8,
        slurm_additional_parameters: Mapping[str, Any] | None = None,
    ) -> None:
        try:
            import submitit
        except ImportError as error:
            raise PluginError(
                'the submitit executor needs the submitit package: pip install -e ".[slurm]" (or pip install submitit)'
            ) from error
        if cluster not in ("", "slurm", "local"):
            raise UsageError(f"executor submitit: cluster={cluster!r}; expected 'slurm', 'local' or '' (detect)")
        self.submitit = submitit
        self.folder = folder
        self.cluster = cluster
        self.partition = partition
        self.gpus_per_node = _positive("gpus_per_node", gpus_per_node, 0)
        self.cpus_per_task = _positive("cpus_per_task", cpus_per_task, 1)
        self.timeout_min = _positive("timeout_min", timeout_min, 1)
        self.array_parallelism = _positive("array_parallelism", array_parallelism, 1)
        self.slurm_additional_parameters = dict(slurm_additional_parameters or {})

    def _executor(self, runs: Sequence[RunSpec], results_dir: str) -> Any:
        folder = self.folder or str(suite_dir(results_dir, runs[0].suite) / "submitit")
        executor = self.submitit.AutoExecutor(folder=folder, cluster=self.cluster or None)
        parameters: dict[str, Any] = {
            "name": f"harness-{runs[0].suite}",
            "timeout_min": self.timeout_min,
            "gpus_per_node": self.gpus_per_node,
            "cpus_per_task": self.cpus_per_task,
            "tasks_per_node": 1,
        }
        if executor.cluster == "slurm":
            parameters["slurm_array_parallelism"] = self.array_parallelism
            if self.partition:
                parameters["slurm_partition"] = self.partition
            if self.slurm_additional_parameters:
                parameters["slurm_additional_parameters"] = self.slurm_additional_parameters
        executor.update_parameters(**parameters)
        return executor

    def run(self, runs: Sequence[RunSpec], *, results_dir: str, events: RunEvents) -> None:
        if not runs:
            return
        results_dir = str(results_dir)
        executor = self._executor(runs, results_dir)
        # Slurm throttles the array itself; submitit's local executor starts every job it is given.
        limit = len(runs) if executor.cluster == "slurm" else self.array_parallelism
        pending = deque(runs)
        active: list[_Job] = []
        since = datetime.now(timezone.utc)
        try:
            while pending or active:
                batch = [pending.popleft() for _ in range(min(len(pending), limit - len(active)))]
                if batch:
                    active.extend(self._submit(executor, batch, results_dir, since))
                time.sleep(POLL_S)
                for item in list(active):
                    item.progress.poll(events)
                    if item.job.done():
                        item.progress.poll(events)
                        item.progress.start(events)
                        item.watch.settle(events, _failure(item.job), _outcome(item.job))
                        active.remove(item)
        except BaseException:
            _cancel([item.job for item in active])
            raise

    def _submit(self, executor: Any, batch: list[RunSpec], results_dir: str, since: datetime) -> list[_Job]:
        watches = [RowWatch(results_dir, run) for run in batch]
        train = functools.partial(
            run_worker, threads=self.cpus_per_task, entry_points=loaded_entry_points(), since=since
        )
        jobs = executor.map_array(train, [run_payload(run) for run in batch], [results_dir] * len(batch))
        return [
            _Job(job, run, watch, LogProgress(results_dir, run, f"job {job.job_id}"))
            for job, run, watch in zip(jobs, batch, watches, strict=True)
        ]


def _outcome(job: Any) -> Any:
    """What a finished job's ``run_worker`` returned (a status or ``Skipped``); None for a job that failed."""
    try:
        return job.result()
    except Exception:  # the job died or raised; _failure says how
        return None


def _failure(job: Any) -> str:
    """Why a job ended without its run's row: its state, and the tail of its stderr."""
    message = f"submitit job {job.job_id} ended in state {job.state} without writing the run's row"
    try:
        stderr = job.stderr() or ""
    except Exception:  # the job's files may be gone or unreadable; the state says enough
        stderr = ""
    tail = "\n".join(stderr.strip().splitlines()[-STDERR_LINES:])
    return f"{message}; stderr ({job.paths.stderr}):\n{tail}" if tail else message


def _cancel(jobs: list[Any]) -> None:
    """Cancel ``jobs`` and give them a moment to end (local jobs stop their training processes)."""
    for job in jobs:
        try:
            job.cancel(check=False)
        except Exception:  # already gone; cancelling is best effort while interrupting
            pass
    deadline = time.monotonic() + CANCEL_GRACE_S
    while time.monotonic() < deadline and not all(_ended(job) for job in jobs):
        time.sleep(0.2)


def _ended(job: Any) -> bool:
    process = getattr(job, "_process", None)  # a local job: its controller process
    if process is not None:
        return process.poll() is not None
    return Path(job.paths.folder).exists() and job.done()
