"""The ``local`` executor: a fresh worker process per run, ``workers`` at a time, on this machine.

Each run trains in a new process, so its timing, peak memory and CUDA state are its own: by default
(``start_method: auto``) forked from a forkserver, a clean process that imported torch and the suite's
modules once, trains nothing and never touches CUDA; ``spawn`` starts a fresh interpreter per
run instead (seconds slower per run; the only choice where there is no forkserver). A worker takes the
driver's current environment variables, whichever start method made it. Worker slot ``i``
gets the GPU ``gpus[i % len(gpus)]`` through ``CUDA_VISIBLE_DEVICES``, set in the worker before
torch touches CUDA (a run with ``nproc: k`` gets k GPUs, one per rank; a run that names its device,
``cuda:N``, gets no mask and uses GPU N as the machine numbers it), and ``threads_per_worker``
intra-op threads (by default the cores split evenly between the workers). With ``workers=1`` the
runs train one after another, in order.

Faults: a run that raises, diverges or runs out of memory is recorded by its own worker
(``harness.execution.run_worker``); a worker that dies without writing a row (killed by a signal,
the OOM killer, an error outside the run) is recorded ``failed`` by the driver, with the cause.

Ctrl-C: a terminal sends SIGINT to the whole process group, so workers ignore it and the driver
stops them with SIGTERM, which ends a run at its next step boundary, its checkpoint written and no row
(``harness.execution.request_stop``: a rerun resumes it from the checkpoint); then the driver re-raises
``KeyboardInterrupt`` for the CLI to report. Finished rows are never touched.

A driver that dies without stopping them (SIGKILL, a crash) takes its workers along: each worker holds
the reading end of a pipe, its lifeline, whose writing end only the driver holds, and a thread in the
worker that sees the pipe close stops the worker as SIGTERM would (SIGKILL after ``STOP_GRACE_S``). A
worker that stops stops the ranks of its DDP run first. The forkserver and multiprocessing's resource
tracker need nothing more: each exits when the last process holding its pipe does, that is, with the
driver and its workers (tested).
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from harness import Registry
from harness.errors import UsageError
from harness.execution import (
    RowWatch,
    RunEvents,
    RunSpec,
    Skipped,
    describe_exception,
    loaded_entry_points,
    log_path,
    request_stop,
    run_payload,
    run_worker,
    worker_modules,
)

#: What the forkserver imports before it forks the first worker, besides ``worker_modules`` of the runs.
FORKSERVER_PRELOAD = ("harness_executors.local",)

START_METHODS = ("auto", "spawn", "forkserver")

#: Seconds a worker has to stop after SIGTERM before it is killed.
STOP_GRACE_S = 10.0


def available_cpus() -> int:
    """The CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def visible_gpus(gpus: str | Sequence[Any]) -> list[str]:
    """The GPUs to hand out: ``"auto"`` (every visible CUDA device), ``""`` (none) or ``"0,1"`` / a list."""
    if not isinstance(gpus, str):
        return [str(gpu) for gpu in gpus]
    if gpus.strip().lower() != "auto":
        return [gpu.strip() for gpu in gpus.split(",") if gpu.strip()]
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return [gpu.strip() for gpu in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if gpu.strip() not in ("", "-1")]
    if shutil.which("nvidia-smi") is None:
        return []
    # nvidia-smi rather than torch.cuda: the driver never initializes CUDA (forked workers could not use it).
    query = subprocess.run(
        ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True, check=False
    )
    if query.returncode != 0:
        return []
    return [line.strip() for line in query.stdout.splitlines() if line.strip().isdigit()]


def preload_modules(runs: Sequence[RunSpec], entry_points: list[tuple[str, str]]) -> list[str]:
    """What the forkserver imports before forking workers for ``runs`` (``harness.execution.worker_modules``).

    Each module is imported here first and left out if that fails: a module that fails to import in
    the server would take every run with it, while left out, the runs that need it record the error
    themselves. The server starts once per driver process, so a later suite in the same process keeps
    the first one's list.
    """
    needed = worker_modules(runs, Registry.from_plugins(extra_entry_points=entry_points))
    importable = []
    for name in dict.fromkeys([*needed, *FORKSERVER_PRELOAD]):
        try:
            importlib.import_module(name)
        except Exception:  # the run that needs it will record the error
            continue
        importable.append(name)
    return importable


def _end_with_driver(lifeline: Connection) -> None:
    """Stop this worker when the driver is gone: the lifeline pipe, written only by the driver, closes.

    SIGTERM first (the run stops as the driver would stop it: no row, its lease released), SIGKILL if
    the worker is still alive ``STOP_GRACE_S`` later.
    """

    def watch() -> None:
        with contextlib.suppress(EOFError, OSError):
            lifeline.recv_bytes()  # the driver never writes: this returns only when its end closes
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(STOP_GRACE_S)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="driver-lifeline", daemon=True).start()


def _stop_children() -> None:
    """Stop the processes this worker started (the ranks of a DDP run), which outlive it otherwise.

    SIGTERM ends them at once. The parent-death signal torch gives them is SIGINT, which they inherit
    ignored from the worker.
    """
    for child in multiprocessing.active_children():
        child.terminate()


def work(
    payload: dict[str, Any],
    results_dir: str,
    threads: int,
    gpu: str | None,
    entry_points: list[tuple[str, str]],
    environment: dict[str, str],
    since: datetime,
    progress: Connection,
    lifeline: Connection,
) -> None:
    """A worker process: train one run; epochs go to the driver through ``progress``.

    ``environment`` is the driver's when it started this run: a forkserver's child would otherwise have
    the environment of the moment the server started (multiprocessing already passes ``sys.path`` and
    the working directory). Variables that a preloaded library read when it loaded (``OMP_NUM_THREADS``,
    ``MKL_*``) keep the server's values. ``since``: when the driver chose its runs (``run_worker``).
    ``lifeline`` closes when the driver is gone, and the worker then stops (``_end_with_driver``).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides when workers stop
    signal.signal(signal.SIGTERM, request_stop)  # ... with SIGTERM: checkpoint at the next step boundary, then stop
    _end_with_driver(lifeline)
    os.environ.clear()
    os.environ.update(environment)

    def on_epoch(run_id: str, epoch: int, test_acc: float) -> None:
        with contextlib.suppress(OSError):  # the driver is gone; the lifeline stops this worker
            progress.send(("epoch", epoch, test_acc))

    try:
        if gpu is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = gpu
        outcome = run_worker(
            payload, results_dir, threads=threads, on_epoch=on_epoch, entry_points=entry_points, since=since
        )
        if isinstance(outcome, Skipped):
            progress.send(("skipped", outcome))
    except KeyboardInterrupt:
        _stop_children()
        sys.exit(130)
    except Exception:  # outside the run's own recording (run_worker records the run's failures)
        with contextlib.suppress(OSError):
            progress.send(("error", describe_exception()))
        sys.exit(1)


def exit_cause(exitcode: int | None) -> str:
    """Why a worker that wrote no row ended, from its exit code."""
    if exitcode is not None and exitcode < 0:
        number = -exitcode
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = "unknown signal"
        hint = " (out of memory? the kernel's OOM killer sends SIGKILL)" if number == signal.SIGKILL else ""
        return f"worker process killed by signal {number} ({name}){hint}"
    if exitcode:
        return f"worker process exited with code {exitcode}"
    return "worker process exited without writing the run's row"


@dataclass
class _Worker:
    slot: int
    run: RunSpec
    process: BaseProcess
    progress: Connection | None
    lifeline: Connection
    watch: RowWatch
    error: str = ""
    skipped: Skipped | None = None


def gpu_mask(gpus: Sequence[str], slot: int, run: RunSpec) -> str | None:
    """The ``CUDA_VISIBLE_DEVICES`` of worker ``slot`` for ``run``; None leaves the worker's GPUs as they are.

    None when there is nothing to hand out, when the run names its device (``cuda:N`` counts GPUs as
    the machine does), or when it needs more GPUs than there are. Otherwise ``run.nproc`` GPUs (one per
    DDP rank, which takes ``cuda:<rank>``), the slot's own: slot i's block starts at ``gpus[i * nproc]``.
    """
    ranks = max(run.nproc, 1)
    if not gpus or ":" in run.device or ranks > len(gpus):
        return None
    return ",".join(gpus[(slot * ranks + rank) % len(gpus)] for rank in range(ranks))


class LocalExecutor:
    """Trains each run in a fresh process on this machine, ``workers`` processes at a time.

    workers: processes training at the same time (1: one run after another, in order).
    threads_per_worker: torch intra-op threads per worker; 0 splits this machine's cores evenly.
    gpus: ``"auto"`` (the visible CUDA devices; none on a CPU machine), ``""`` (no GPU assignment),
        or the devices to use, ``"0,1"``; worker ``i`` gets ``gpus[i % len(gpus)]`` (``gpu_mask``).
    start_method: ``auto`` (``forkserver`` where the platform has it, else ``spawn``), ``forkserver``
        (each run forks from a server that imported torch and the suite's modules once: seconds faster
        per run) or ``spawn`` (a fresh interpreter per run).
    """

    def __init__(
        self,
        workers: int = 1,
        threads_per_worker: int = 0,
        gpus: str | Sequence[Any] = "auto",
        start_method: str = "auto",
    ) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise UsageError(f"executor local: workers={workers!r}; expected an integer >= 1")
        if isinstance(threads_per_worker, bool) or not isinstance(threads_per_worker, int) or threads_per_worker < 0:
            raise UsageError(
                f"executor local: threads_per_worker={threads_per_worker!r}; expected an integer >= 0 "
                f"(0 splits the {available_cpus()} cores between the workers)"
            )
        if start_method not in START_METHODS:
            raise UsageError(f"executor local: start_method={start_method!r}; expected one of {START_METHODS}")
        if start_method == "auto":
            start_method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        self.workers = workers
        self.threads = threads_per_worker or max(1, available_cpus() // workers)
        self.gpus = visible_gpus(gpus)
        self.start_method = start_method
        self.context = multiprocessing.get_context(start_method)

    def run(self, runs: Sequence[RunSpec], *, results_dir: str, events: RunEvents) -> None:
        pending = deque(runs)
        free = list(range(self.workers))
        active: list[_Worker] = []
        entry_points = loaded_entry_points()
        since = datetime.now(timezone.utc)
        if self.start_method == "forkserver":
            self.context.set_forkserver_preload(preload_modules(runs, entry_points))
        try:
            while pending or active:
                while pending and free:
                    run, slot = pending.popleft(), free.pop(0)
                    active.append(self._start(run, slot, str(results_dir), entry_points, since, events))
                waitables = [w.process.sentinel for w in active] + [w.progress for w in active if w.progress]
                wait(waitables, timeout=1.0)
                for worker in list(active):
                    self._receive(worker, events)
                    if worker.process.exitcode is not None:
                        self._finish(worker, str(results_dir), events)
                        active.remove(worker)
                        free.append(worker.slot)
                        free.sort()
        except BaseException:
            self._stop(active)
            raise

    def _start(
        self,
        run: RunSpec,
        slot: int,
        results_dir: str,
        entry_points: list[tuple[str, str]],
        since: datetime,
        events: RunEvents,
    ) -> _Worker:
        gpu = gpu_mask(self.gpus, slot, run)
        reader, writer = self.context.Pipe(duplex=False)
        alive_r, alive_w = self.context.Pipe(duplex=False)
        watch = RowWatch(results_dir, run)
        process = self.context.Process(
            target=work,
            args=(run_payload(run), results_dir, self.threads, gpu, entry_points, dict(os.environ), since),
            kwargs={"progress": writer, "lifeline": alive_r},
            name=f"harness-worker-{slot}",
        )
        process.start()
        writer.close()  # the worker holds the only writing end: the driver sees EOF when it exits
        alive_r.close()  # ... and the only reading end of its lifeline: it sees EOF when the driver exits
        events.started(run, f"worker {slot}" + (f", GPU {gpu}" if gpu is not None else ""))
        return _Worker(slot, run, process, reader, alive_w, watch)

    @staticmethod
    def _receive(worker: _Worker, events: RunEvents) -> None:
        """Pass on the messages the worker has sent (sends are synchronous: an exited worker's are all there)."""
        while worker.progress is not None and worker.progress.poll():
            try:
                kind, *fields = worker.progress.recv()
            except (EOFError, OSError):
                worker.progress.close()
                worker.progress = None
                return
            if kind == "epoch":
                events.epoch(worker.run, *fields)
            elif kind == "error":
                worker.error = fields[0]
            elif kind == "skipped":
                worker.skipped = fields[0]

    def _finish(self, worker: _Worker, results_dir: str, events: RunEvents) -> None:
        """Report an exited worker's run: its row, or a crash record naming the cause."""
        self._receive(worker, events)  # what it sent just before exiting
        worker.process.join()
        worker.lifeline.close()
        if worker.progress is not None:
            worker.progress.close()
            worker.progress = None
        cause = worker.error or exit_cause(worker.process.exitcode)
        worker.watch.settle(events, f"{cause}; log: {log_path(results_dir, worker.run)}", worker.skipped)

    @staticmethod
    def _stop(active: list[_Worker]) -> None:
        """Stop every worker still running: SIGTERM, a grace period, then SIGKILL."""
        for worker in active:
            if worker.process.exitcode is None:
                worker.process.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for worker in active:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.exitcode is None:
                worker.process.kill()
                worker.process.join()
            worker.lifeline.close()
            if worker.progress is not None:
                worker.progress.close()
