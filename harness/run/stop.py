"""A stop request: the signal handler that asks the run training in this process to stop at its next step boundary.

Executors install ``request_stop`` for the signals that end a worker (SIGTERM locally, Slurm's preemption and cancel
signals): while a run trains (``stoppable``) the handler only records the signal; the runner checks
``stop_requested()`` after every step, writes the run's checkpoint (``harness.run.checkpoint``) and raises
``StopRequested``. Acting at a step boundary, never inside a step, is what makes the checkpoint exact: mid-step the
weights may be perturbed (w + e) and the gradients half-accumulated. Outside training the handler interrupts at once.
No torch here: drivers import it through ``harness.execution``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


class StopRequested(KeyboardInterrupt):
    """The worker was asked to stop (``request_stop``): raised at a step boundary, after the checkpoint was written.

    A ``KeyboardInterrupt``, so it passes every ``except Exception`` and the run ends without a row, as an interrupted
    run does; ``signum`` says which signal asked.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by signal {signum} at a step boundary; the checkpoint is written")
        self.signum = signum


@dataclass
class _StopState:
    armed: bool = False  # a run is training in this process (``stoppable``)
    signum: int | None = None  # the signal that asked it to stop


_STOP = _StopState()


def request_stop(signum: int, frame: Any = None) -> None:
    """Signal handler: ask the run training in this process to checkpoint and stop at its next step boundary.

    Outside training (building the run, writing its row) there is nothing to checkpoint: ``KeyboardInterrupt`` at once.
    """
    if not _STOP.armed:
        raise KeyboardInterrupt
    _STOP.signum = signum


def training() -> bool:
    """Whether a run is training in this process (``request_stop`` then asks instead of interrupting)."""
    return _STOP.armed


def stop_requested() -> int | None:
    """The signal that asked the training run to stop, or None."""
    return _STOP.signum


@contextlib.contextmanager
def stoppable() -> Iterator[None]:
    """Training is under way: ``request_stop`` asks instead of interrupting."""
    _STOP.armed, _STOP.signum = True, None
    try:
        yield
    finally:
        _STOP.armed, _STOP.signum = False, None
