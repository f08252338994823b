"""Stochastic weight averaging on any variant: the run settings ``swa_start`` and ``swa_lr``.

SWA (Izmailov, Podoprikhin, Garipov, Vetrov, Wilson, UAI 2018, arXiv 1803.05407, Alg. 1): average the weights
the optimizer visits late in training, with an equal weight each, and evaluate the average. Here the weights at
the end of every epoch from epoch ``first_epoch = floor(swa_start * epochs) + 1`` on join the average (the
paper's cycle of c = 1 epoch; ``torch.optim.swa_utils.AveragedModel``). With ``swa_lr`` the learning rate is
held at that value from the first step of ``first_epoch`` on (the paper's constant schedule while averaging,
``SWALR`` without annealing); without it the run's own schedule goes on, and the average is of the tail of a
decaying schedule (the "SWA on a cosine tail" reading).

After the last epoch the averaged weights replace the model's, and BatchNorm's running statistics are computed
again for them by one pass over the training data (``swa_utils.update_bn``, on the run's precision and input
layout): the averaged weights never ran forward, so the statistics the iterates left behind do not describe
them (paper Sec. 3.2). That pass is part of SWA's cost and counts as train time. The final evaluation, the
row's accuracies and losses and the sharpness metrics are then the averaged model's; the history's earlier
epochs are the iterates'.

The average is saved in the run's checkpoint, so a resumed run averages the same weights.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, update_bn

from harness.contract.data import ClassificationData
from harness.run.precision import Precision


class WeightAverage:
    """The equal average of the epoch-end weights from ``first_epoch`` on (``swa_start``), and its BatchNorm pass."""

    def __init__(self, model: nn.Module, *, swa_start: float, epochs: int) -> None:
        self.first_epoch = math.floor(swa_start * epochs) + 1
        self.averaged = AveragedModel(model, use_buffers=False)

    def due(self, epoch: int) -> bool:
        """Whether the weights at the end of ``epoch`` (1-based) join the average."""
        return epoch >= self.first_epoch

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.averaged.update_parameters(model)

    @torch.no_grad()
    def install(
        self, model: nn.Module, data: ClassificationData, batch_size: int, precision: Precision, seed: int
    ) -> None:
        """Put the averaged weights into ``model`` and recompute its BatchNorm statistics on the training data."""
        for mine, averaged in zip(model.parameters(), self.averaged.module.parameters(), strict=True):
            mine.copy_(averaged)
        order = torch.Generator().manual_seed(seed)
        augment = torch.Generator(device=precision.device).manual_seed(seed)
        batches = (precision.prepare_inputs(inputs) for inputs, _ in data.train_batches(batch_size, order, augment))
        with precision.autocast():
            update_bn(batches, model)

    def state_dict(self) -> dict[str, Any]:
        return self.averaged.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.averaged.load_state_dict(state)


class HeldLearningRate:
    """A per-update learning-rate schedule whose rate is held at ``lr`` from update ``from_update`` on.

    It wraps the run's timm scheduler (``step_update``, ``state_dict``): SWA's constant rate while averaging.
    """

    def __init__(self, schedule: Any, optimizer: torch.optim.Optimizer, *, lr: float, from_update: int) -> None:
        self.schedule, self.optimizer, self.lr, self.from_update = schedule, optimizer, float(lr), int(from_update)

    def step_update(self, num_updates: int, metric: Any = None) -> None:
        self.schedule.step_update(num_updates=num_updates, metric=metric)
        if num_updates >= self.from_update:
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr

    def state_dict(self) -> dict[str, Any]:
        return self.schedule.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.schedule.load_state_dict(state)
