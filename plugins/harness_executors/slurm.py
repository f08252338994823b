"""The ``submitit`` executor: runs as Slurm job arrays, or as local jobs where there is no Slurm.

All pending runs go to Slurm as one job array of ``harness.execution.run_worker`` calls (at most
``array_parallelism`` running at once); with ``cluster: local`` (or where no Slurm controller answers ``sinfo``)
submitit's local executor runs the same code path as subprocesses, and the driver keeps at most
``array_parallelism`` of them running. Each job writes its run's Parquet files and log; the driver
polls the jobs, reports progress from the logs, and records a job that ended without writing a row
(timed out, preempted, cancelled, out of memory, killed) as ``failed`` with the job's state and the
tail of its stderr.

When a Slurm job has ended is decided by ``squeue``, not ``sacct``: a cancelled job is CANCELLED in the accounting
at once while its processes go on through Slurm's ``KillWait``, and without accounting (no slurmdbd) ``sacct`` fails
and submitit never sees a job that died without its result file end. A job is judged once ``squeue`` no longer
lists it; its ``sacct`` state, where there is one, goes into the failure's text.

Preemption-safe: the job's worker handles Slurm's signals as stop requests (``harness.execution.request_stop``):
the run writes its checkpoint at the next step boundary. On USR2 (sent ``signal_delay_s`` before the time limit, and
on preemption) submitit then requeues the job (``SlurmWorker.checkpoint``), which resumes from the checkpoint; on
SIGTERM (``scancel``, the end of the time limit) the job ends without a row and is recorded ``failed``: a rerun
resumes it. Ctrl-C and SIGTERM to the driver cancel the jobs still in flight and wait until Slurm has ended them.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.errors import EngineUnavailable, PluginError, UsageError
from harness.execution import (
    RowWatch,
    RunEvents,
    RunSpec,
    StopRequested,
    loaded_entry_points,
    request_stop,
    run_payload,
    run_worker,
    suite_dir,
    training,
)
from harness_executors.log_progress import LogProgress

#: Seconds between two looks at the jobs (submitit rate-limits its own ``sacct`` calls).
POLL_S = 1.0
#: Seconds cancelled jobs get to end before the driver stops waiting for them (beyond Slurm's usual KillWait).
CANCEL_GRACE_S = 60.0
#: Seconds ``sinfo`` and ``squeue`` get to answer.
COMMAND_TIMEOUT_S = 20.0
#: The least training time a job must have before Slurm's USR2 (``timeout_min`` against ``signal_delay_s``).
MIN_TRAIN_S = 60
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


def slurm_answers() -> bool:
    """Whether a Slurm controller answers here: ``sinfo`` runs and exits 0 (not just ``sbatch`` on PATH, which a laptop
    or a login node with the client but no reachable controller also has)."""
    try:
        answer = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, timeout=COMMAND_TIMEOUT_S)
        return answer.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def listed_jobs(job_ids: Sequence[str]) -> set[str] | None:
    """The ones of ``job_ids`` (``123_4`` for array tasks) that Slurm still lists (pending, running, completing,
    requeued); None when ``squeue`` cannot tell (the controller did not answer)."""
    arrays = sorted({job_id.split("_")[0] for job_id in job_ids})
    command = ["squeue", "-h", "-r", "-o", "%i", "-j", ",".join(arrays)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:  # squeue exits 1 for ids it no longer knows at all: then none is listed
        return set() if "Invalid job id" in done.stderr else None
    return set(done.stdout.split()) & set(job_ids)


class SlurmWorker:
    """What each job of the array runs: ``run_worker`` with Slurm's signals turned into stop requests.

    submitit calls ``checkpoint`` on USR2 (the time limit is ``signal_delay_s`` away, or the job is preempted) and
    requeues the job with what it returns; the handler here first lets the run reach a step boundary and write its
    checkpoint (``harness.execution.request_stop``), then hands over to submitit's. SIGTERM (``scancel``, a
    preemption that cancels) stops the run the same way, without a requeue: the job ends without a row.
    """

    def __init__(self, threads: int, entry_points: list[tuple[str, str]], since: datetime) -> None:
        self.threads, self.entry_points, self.since = threads, entry_points, since

    def __call__(self, payload: dict[str, Any], results_dir: str) -> Any:
        requeue = signal.getsignal(signal.SIGUSR2)  # submitit's checkpoint-and-requeue handler, inside a Slurm job

        def on_usr2(signum: int, frame: Any) -> None:
            if training():
                request_stop(signum, frame)
            elif callable(requeue):
                requeue(signum, frame)

        signal.signal(signal.SIGUSR2, on_usr2)
        signal.signal(signal.SIGTERM, request_stop)
        try:
            return run_worker(
                payload, results_dir, threads=self.threads, entry_points=self.entry_points, since=self.since
            )
        except StopRequested as stopped:
            if stopped.signum == signal.SIGUSR2 and callable(requeue):
                requeue(stopped.signum, None)  # calls self.checkpoint, requeues the job and exits
            raise

    def checkpoint(self, payload: dict[str, Any], results_dir: str) -> Any:
        """The job to requeue: the same call, which resumes from the run's checkpoint."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, payload, results_dir)


class SubmititExecutor:
    """Trains runs as submitit jobs: a Slurm job array, or local subprocesses.

    folder: where submitit keeps its job files ("": ``RESULTS_DIR/<suite>/submitit``).
    cluster: ``slurm``, ``local`` or "" (Slurm when a controller answers ``sinfo``, else local); ``slurm`` with no
        controller answering is ``EngineUnavailable`` (exit 2, and the contract kit skips, saying why).
    partition, slurm_additional_parameters: Slurm's partition and extra ``#SBATCH`` options.
    gpus_per_node, cpus_per_task, timeout_min: what each run's job asks for (threads = cpus_per_task).
    signal_delay_s: how long before the time limit Slurm sends USR2 (the run checkpoints and its job is requeued);
        ``timeout_min`` must leave at least ``MIN_TRAIN_S`` seconds of training before it.
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
        signal_delay_s: int = 90,
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
        self.signal_delay_s = _positive("signal_delay_s", signal_delay_s, 1)
        if self.timeout_min * 60 - self.signal_delay_s < MIN_TRAIN_S:
            raise UsageError(
                f"executor submitit: timeout_min={timeout_min} ({timeout_min * 60} s) leaves "
                f"{timeout_min * 60 - self.signal_delay_s} s before Slurm's USR2 at signal_delay_s={signal_delay_s}; "
                f"expected timeout_min * 60 - signal_delay_s >= {MIN_TRAIN_S}"
            )
        self.array_parallelism = _positive("array_parallelism", array_parallelism, 1)
        self.slurm_additional_parameters = dict(slurm_additional_parameters or {})

    def _executor(self, runs: Sequence[RunSpec], results_dir: str) -> Any:
        folder = self.folder or str(suite_dir(results_dir, runs[0].suite) / "submitit")
        answers = self.cluster != "local" and slurm_answers()
        cluster = self.cluster or ("slurm" if answers else "local")
        if cluster == "slurm" and not answers:
            raise EngineUnavailable(
                "executor submitit: cluster='slurm', but no Slurm controller answers sinfo here; start Slurm, "
                "or use cluster: local (or '' to detect)"
            )
        executor = self.submitit.AutoExecutor(folder=folder, cluster=cluster)
        parameters: dict[str, Any] = {
            "name": f"harness-{runs[0].suite}",
            "timeout_min": self.timeout_min,
            "gpus_per_node": self.gpus_per_node,
            "cpus_per_task": self.cpus_per_task,
            "tasks_per_node": 1,
        }
        if executor.cluster == "slurm":
            parameters["slurm_array_parallelism"] = self.array_parallelism
            parameters["slurm_signal_delay_s"] = self.signal_delay_s
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
        slurm = executor.cluster == "slurm"
        # Slurm throttles the array itself; submitit's local executor starts every job it is given.
        limit = len(runs) if slurm else self.array_parallelism
        pending = deque(runs)
        active: list[_Job] = []
        since = datetime.now(timezone.utc)
        try:
            while pending or active:
                batch = [pending.popleft() for _ in range(min(len(pending), limit - len(active)))]
                if batch:
                    active.extend(self._submit(executor, batch, results_dir, since))
                time.sleep(POLL_S)
                ended = _ended_jobs([item.job for item in active], slurm)
                for item in list(active):
                    item.progress.poll(events)
                    if item.job.job_id in ended:
                        item.progress.poll(events)
                        item.progress.start(events)
                        item.watch.settle(events, _failure(item.job), _outcome(item.job))
                        active.remove(item)
        except BaseException:
            _cancel([item.job for item in active], slurm)
            raise

    def _submit(self, executor: Any, batch: list[RunSpec], results_dir: str, since: datetime) -> list[_Job]:
        watches = [RowWatch(results_dir, run) for run in batch]
        train = SlurmWorker(self.cpus_per_task, loaded_entry_points(), since)
        jobs = executor.map_array(train, [run_payload(run) for run in batch], [results_dir] * len(batch))
        return [
            _Job(job, run, watch, LogProgress(results_dir, run, f"job {job.job_id}"))
            for job, run, watch in zip(jobs, batch, watches, strict=True)
        ]


def _ended_jobs(jobs: list[Any], slurm: bool) -> set[str]:
    """The ids of ``jobs`` that have ended: for Slurm, those ``squeue`` no longer lists (submitit's view, from
    ``sacct``, where ``squeue`` cannot answer); for local jobs, submitit's ``done()``."""
    if slurm and jobs:
        listed = listed_jobs([job.job_id for job in jobs])
        if listed is not None:
            return {job.job_id for job in jobs} - listed
    return {job.job_id for job in jobs if job.done()}


def _outcome(job: Any) -> Any:
    """What a finished job's ``run_worker`` returned (a status or ``Skipped``); None for a job that failed or left no
    result file (``job.result()`` would wait for one)."""
    if not job.paths.result_pickle.exists():
        return None
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


def _cancel(jobs: list[Any], slurm: bool) -> None:
    """Cancel ``jobs`` and wait until they have ended (Slurm: gone from ``squeue``; local: processes ended)."""
    for job in jobs:
        try:
            job.cancel(check=False)
        except Exception:  # already gone; cancelling is best effort while interrupting
            pass
    deadline = time.monotonic() + CANCEL_GRACE_S
    while time.monotonic() < deadline and not all(_stopped(job, slurm) for job in jobs):
        time.sleep(0.5)


def _stopped(job: Any, slurm: bool) -> bool:
    if slurm:
        listed = listed_jobs([job.job_id])
        return listed is not None and not listed
    process = getattr(job, "_process", None)  # a local job: its controller process
    if process is not None:
        return process.poll() is not None
    return Path(job.paths.folder).exists() and job.done()
