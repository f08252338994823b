"""``lr_schedule.warmup_steps``: a warm-up counted in updates (LookSAM Table 11, seed_looksam_aesam.md A.4.2)."""

from __future__ import annotations

import pytest
import torch

from harness.run.build import build_lr_scheduler


def _lrs(schedule: dict, steps_per_epoch: int, updates: int) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = build_lr_scheduler(optimizer, schedule, epochs=10, steps_per_epoch=steps_per_epoch)
    lrs = []
    for update in range(updates):
        scheduler.step_update(update)
        lrs.append(optimizer.param_groups[0]["lr"])
    return lrs


@pytest.mark.parametrize("steps_per_epoch", [3, 7])
def test_the_warm_up_rises_linearly_over_the_given_number_of_updates_whatever_the_epoch_length(steps_per_epoch):
    lrs = _lrs({"name": "poly", "decay_rate": 1.0, "warmup_steps": 8, "warmup_lr": 0.0}, steps_per_epoch, 12)
    assert lrs[:8] == pytest.approx([0.1 * t / 8 for t in range(8)])
    assert lrs[8] == pytest.approx(0.1 * (1 - 8 / (10 * steps_per_epoch)), rel=1e-6)  # then linear decay
    assert all(later < earlier for earlier, later in zip(lrs[8:], lrs[9:], strict=False))


def test_warmup_steps_equals_the_same_warm_up_given_in_epochs():
    in_steps = _lrs({"name": "cosine", "warmup_steps": 6, "warmup_lr": 0.0}, 3, 20)
    in_epochs = _lrs({"name": "cosine", "warmup_epochs": 2, "warmup_lr": 0.0}, 3, 20)
    assert in_steps == pytest.approx(in_epochs)
