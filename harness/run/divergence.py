"""Noticing a diverged run within a few steps, without a host synchronisation per step.

The runner sums each step's loss on the device (``loss_sum``) and reads it once per epoch. Reading it
every step would stall a GPU's queue at every step; reading it only at the end of an epoch trains a
whole epoch of NaNs (hours on ImageNet) after the loss became non-finite at step 1. ``DivergenceWatch``
looks every ``every`` steps instead:

- CPU: the running sum is read directly (there is no queue to stall).
- CUDA, one process: the sum is copied into pinned host memory with ``non_blocking=True`` behind an
  event; a later check reads the copy only once the event has completed (``Event.query()`` never
  blocks), so the watch costs no synchronisation and notices a NaN at most ``2 * every`` steps late.
- DDP: the sum's mean over ranks is read at the same steps on every rank (one all-reduce every
  ``every`` steps), so every rank stops at the same step; a rank that stopped alone would leave the
  others waiting in their next collective.

A non-finite sum means a non-finite loss since the epoch began: the step that made it is in the
``every`` steps before the check (``2 * every`` on CUDA).
"""

from __future__ import annotations

import math

import torch

from harness.run import distributed

#: Steps between two looks at the running loss.
CHECK_EVERY = 8


class Diverged(Exception):
    """The training loss became non-finite."""


class DivergenceWatch:
    """Raises ``Diverged`` soon after the running loss sum of an epoch becomes non-finite."""

    def __init__(self, device: torch.device, every: int = CHECK_EVERY) -> None:
        self.every = every
        self._asynchronous = device.type == "cuda" and not distributed.active()
        self._host = torch.zeros((), pin_memory=True) if self._asynchronous else None
        self._copied: torch.cuda.Event | None = None
        self._copied_at = 0
        self._finite_through = 0  # the last step known to have left the sum finite

    def epoch_started(self, step: int) -> None:
        """A new epoch's sum starts at zero after ``step``: a copy of the last one says nothing about it."""
        self._copied, self._finite_through = None, step

    def check(self, loss_sum: torch.Tensor, step: int, epoch: int) -> None:
        """Look at ``loss_sum`` after ``step`` (counted from 1 over the run) when a check is due."""
        if step % self.every:
            return
        if not self._asynchronous:
            seen = float(distributed.mean_over_ranks(loss_sum)) if distributed.active() else float(loss_sum)
            self._judge(seen, step, epoch)
            return
        if self._copied is not None and self._copied.query():
            self._judge(float(self._host), self._copied_at, epoch)
            self._copied = None
        if self._copied is None:
            self._host.copy_(loss_sum.detach(), non_blocking=True)
            self._copied = torch.cuda.Event()
            self._copied.record()
            self._copied_at = step

    def _judge(self, value: float, step: int, epoch: int) -> None:
        if math.isfinite(value):
            self._finite_through = step
            return
        raise Diverged(
            f"the training loss became non-finite ({value}) in epoch {epoch}, "
            f"at one of steps {self._finite_through + 1}-{step}"
        )
