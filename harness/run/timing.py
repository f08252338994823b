"""Train-only timing: per-step durations and epoch wall-clock, honest on CPU and on CUDA.

On CUDA, kernels run asynchronously, so a host clock read without synchronizing measures launch
time, not work (MLCommons AlgoPerf's timing discipline, shared/STYLE.md). ``StepTimer`` records a
pair of CUDA events around every step and resolves them once per epoch, after one
synchronization; on CPU it reads ``time.perf_counter``.
"""

from __future__ import annotations

import time

import torch


def synchronize(device: torch.device) -> None:
    """Wait for all queued work on ``device`` (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepTimer:
    """Collects the duration of every training step, in seconds."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.durations: list[float] = []
        self._pending: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self._started = 0.0
        self._start_event: torch.cuda.Event | None = None

    def start(self) -> None:
        if self.device.type == "cuda":
            self._start_event = torch.cuda.Event(enable_timing=True)
            self._start_event.record()
        else:
            self._started = time.perf_counter()

    def stop(self) -> None:
        if self.device.type == "cuda":
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self._pending.append((self._start_event, end))
        else:
            self.durations.append(time.perf_counter() - self._started)

    def flush(self) -> None:
        """Resolve pending CUDA events (synchronizes once); call outside the timed region."""
        if self._pending:
            self._pending[-1][1].synchronize()
            self.durations.extend(start.elapsed_time(end) / 1000.0 for start, end in self._pending)
            self._pending.clear()


class Stopwatch:
    """Accumulates wall-clock over several timed regions, synchronizing the device at each edge."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.total = 0.0
        self._started: float | None = None

    def __enter__(self) -> Stopwatch:
        synchronize(self.device)
        self._started = time.perf_counter()
        return self

    def running_total(self) -> float:
        """The wall-clock so far, the current region included (synchronizes; for a checkpoint taken inside it)."""
        synchronize(self.device)
        return self.total + (time.perf_counter() - self._started if self._started is not None else 0.0)

    def __exit__(self, *exc: object) -> None:
        synchronize(self.device)
        self.total += time.perf_counter() - self._started
