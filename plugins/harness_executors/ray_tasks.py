"""The ``ray`` executor: each run is a Ray core task, on a running cluster or a local one.

``address`` connects to a running cluster (``auto``, ``host:6379``, ``ray://head:10001``); "" starts a new local
Ray with ``local_num_cpus`` CPUs (0: all of them), whatever ``RAY_ADDRESS`` says and whichever cluster a ``ray start``
recorded on the machine (``ray.init(address="local")``). A cluster that cannot be reached is a usage error (exit 2,
nothing trained), not a failed run. Each run is a task of ``harness.execution.run_worker``
asking for ``num_cpus`` CPUs (its torch threads) and ``num_gpus`` GPUs (Ray sets
``CUDA_VISIBLE_DEVICES``), in a fresh worker process (``max_calls=1``) and without retries: a task
that raised or whose worker died without writing a row is recorded ``failed`` with Ray's error.
Progress comes from the runs' logs, so the results folder must be shared with the cluster's nodes (it
is where they write their Parquet files). Ctrl-C and SIGTERM cancel the tasks in flight (``ray.init`` installs
its own SIGTERM handler; the driver's, which turns SIGTERM into Ctrl-C, is put back). Ray is imported only when the
executor is built.
"""

from __future__ import annotations

import signal
import socket
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from harness.errors import EngineUnavailable, PluginError, UsageError
from harness.execution import RowWatch, RunEvents, RunSpec, loaded_entry_points, run_payload, run_worker
from harness_executors.log_progress import LogProgress

#: Seconds the driver waits for a task to finish before it reads the logs again.
POLL_S = 1.0
#: Lines of Ray's error kept in the run's error.
ERROR_LINES = 20
#: Seconds cancelled tasks get to end before the driver stops waiting for them.
CANCEL_GRACE_S = 10.0
#: Seconds a cluster's address gets to accept a connection (``ray.init`` retries a dead address for many minutes).
CONNECT_TIMEOUT_S = 10.0


def _unreachable(address: str) -> str:
    """Why nothing accepts connections at ``address`` (``host:port`` or ``ray://host:port``); "" when something does,
    or when the address names no port to try (``auto``: Ray itself says when it finds no cluster)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return ""
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        return f"nothing accepts connections at {host}:{port} ({error.strerror or error})"
    return ""


@dataclass
class _Task:
    ref: Any  # ray.ObjectRef
    run: RunSpec
    watch: RowWatch
    progress: LogProgress


def _number(name: str, value: Any, minimum: float) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise UsageError(f"executor ray: {name}={value!r}; expected a number >= {minimum:g}")
    return value


class RayExecutor:
    """Trains each run as a Ray task.

    address: a running cluster to connect to ("": start a local Ray for this suite).
    num_cpus, num_gpus: what each run's task asks for (fractions of a GPU allowed).
    max_concurrent: runs in flight at once (0: all of them; Ray schedules by resources).
    local_num_cpus: CPUs of the local Ray (0: every core), when ``address`` is "".
    """

    def __init__(
        self,
        address: str = "",
        num_cpus: int = 1,
        num_gpus: float = 0.0,
        max_concurrent: int = 0,
        local_num_cpus: int = 0,
    ) -> None:
        try:
            import ray
        except ImportError as error:
            raise PluginError(
                'the ray executor needs the ray package: pip install -e ".[ray]" (or pip install "ray>=2.9")'
            ) from error
        self.ray = ray
        self.address = address
        self.num_cpus = _number("num_cpus", num_cpus, 0)
        self.num_gpus = _number("num_gpus", num_gpus, 0)
        self.max_concurrent = int(_number("max_concurrent", max_concurrent, 0))
        self.local_num_cpus = int(_number("local_num_cpus", local_num_cpus, 0))

    def _connect(self) -> bool:
        """Connect to (or start) Ray unless this process already did; True when this call did."""
        if self.ray.is_initialized():
            return False
        main = threading.current_thread() is threading.main_thread()
        handler = signal.getsignal(signal.SIGTERM) if main else None
        try:
            why = _unreachable(self.address)
            if why:
                raise ConnectionError(why)
            if self.address:
                self.ray.init(address=self.address, log_to_driver=False)
            else:
                self.ray.init(
                    address="local", num_cpus=self.local_num_cpus or None, include_dashboard=False, log_to_driver=False
                )
        except Exception as error:  # ConnectionError, a bad address (ValueError), a GCS that never answered
            where = f"the Ray cluster at address={self.address!r}" if self.address else "a local Ray"
            hint = "; start it (ray start --head) or use address: '' for a local Ray" if self.address else ""
            message = f"executor ray: cannot connect to {where}: {type(error).__name__}: {error}{hint}"
            raise EngineUnavailable(message) from None
        finally:
            if handler is not None:  # ray.init replaced it: SIGTERM must stop the suite as Ctrl-C does (exit 130)
                signal.signal(signal.SIGTERM, handler)
        return True

    def run(self, runs: Sequence[RunSpec], *, results_dir: str, events: RunEvents) -> None:
        if not runs:
            return
        results_dir = str(results_dir)
        ray = self.ray
        connected_here = self._connect()
        train = ray.remote(num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_calls=1, max_retries=0)(run_worker)
        threads = max(1, int(self.num_cpus))
        entry_points = loaded_entry_points()
        since = datetime.now(timezone.utc)
        limit = self.max_concurrent or len(runs)
        pending = deque(runs)
        active: dict[Any, _Task] = {}
        try:
            while pending or active:
                while pending and len(active) < limit:
                    run = pending.popleft()
                    watch = RowWatch(results_dir, run)
                    progress = LogProgress(results_dir, run, "ray")
                    ref = train.remote(
                        run_payload(run), results_dir, threads=threads, entry_points=entry_points, since=since
                    )
                    active[ref] = _Task(ref, run, watch, progress)
                ready, _ = ray.wait(list(active), num_returns=len(active), timeout=POLL_S, fetch_local=False)
                for task in active.values():
                    task.progress.poll(events)
                for ref in ready:
                    task = active.pop(ref)
                    outcome, error = self._outcome(ref)
                    task.progress.poll(events)
                    task.progress.start(events)
                    task.watch.settle(events, error, outcome)
        except BaseException:
            for ref in active:
                ray.cancel(ref, force=True)
            if active:  # cancelled tasks resolve once their workers are gone
                ray.wait(list(active), num_returns=len(active), timeout=CANCEL_GRACE_S, fetch_local=False)
            raise
        finally:
            if connected_here:
                ray.shutdown()

    def _outcome(self, ref: Any) -> tuple[Any, str]:
        """A finished task's return (a status, ``Skipped``; None if it failed) and the error of a rowless run."""
        try:
            return self.ray.get(ref), "ray task ended without writing the run's row"
        except self.ray.exceptions.RayError as error:
            lines = str(error).strip().splitlines()
            return None, f"ray task failed without writing the run's row: {type(error).__name__}: " + "\n".join(
                lines[-ERROR_LINES:]
            )
