"""Noticing a non-finite loss within a few steps (harness/run/divergence.py)."""

from __future__ import annotations

import math

import pytest
import torch

from harness.run.divergence import Diverged, DivergenceWatch


def _feed(watch: DivergenceWatch, losses: list[float], *, first_step: int = 0, epoch: int = 1) -> tuple[int, str]:
    """Add each loss to an epoch's running sum as the runner does; return the step the watch raised at."""
    loss_sum = torch.zeros(())
    watch.epoch_started(first_step)
    for offset, loss in enumerate(losses, start=1):
        loss_sum += loss
        try:
            watch.check(loss_sum, first_step + offset, epoch)
        except Diverged as error:
            return first_step + offset, str(error)
    return -1, ""


def test_a_nan_is_seen_at_the_first_check_after_it():
    watch = DivergenceWatch(torch.device("cpu"), every=4)
    losses = [1.0] * 5 + [math.nan] + [1.0] * 20  # the NaN at step 6
    step, message = _feed(watch, losses)
    assert step == 8
    assert "in epoch 1, at one of steps 5-8" in message and "nan" in message


def test_infinity_counts_and_finite_losses_never_raise():
    watch = DivergenceWatch(torch.device("cpu"), every=3)
    assert _feed(watch, [0.5] * 30) == (-1, "")
    step, message = _feed(watch, [1.0, math.inf, 1.0], first_step=30, epoch=2)
    assert step == 33 and "(inf) in epoch 2, at one of steps 31-33" in message


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the asynchronous (pinned copy + event) path needs CUDA")
def test_cuda_path_notices_within_two_check_intervals():
    watch = DivergenceWatch(torch.device("cuda"), every=4)
    loss_sum = torch.zeros((), device="cuda")
    watch.epoch_started(0)
    with pytest.raises(Diverged):
        for step in range(1, 100):
            loss_sum += math.nan if step == 3 else 1.0
            watch.check(loss_sum, step, 1)
            torch.cuda.synchronize()  # the copy completes before the next check: seen at the second check
            assert step < 9
