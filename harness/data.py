"""The dataset contract: a classification dataset held on the device as tensors.

Dataset plugins return ``ClassificationData`` with every tensor already on the training device
(shared/DESIGN.md section 9: small datasets live on the device; no DataLoader workers on the hot
path). Batches are drawn by shuffling indices with a seeded generator, so the order depends only on
the run's seed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch


@dataclass
class ClassificationData:
    """Train and test tensors for classification, on one device.

    train_x, test_x: inputs, shape ``(N, *input_shape)``, already normalized.
    train_y, test_y: integer class labels, shape ``(N,)``; ``train_y`` are the labels trained on
        (noisy where the dataset adds label noise).
    num_classes: the number of classes.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int

    def __post_init__(self) -> None:
        for split, x, y in (("train", self.train_x, self.train_y), ("test", self.test_x, self.test_y)):
            if x.shape[0] != y.shape[0]:
                raise ValueError(f"dataset {self.name!r}: {split} has {x.shape[0]} inputs but {y.shape[0]} labels")

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input, without the batch dimension."""
        return tuple(self.train_x.shape[1:])

    def steps_per_epoch(self, batch_size: int) -> int:
        """Full batches per epoch (the last partial batch is dropped so every step sees ``batch_size``)."""
        return max(1, self.train_x.shape[0] // batch_size)

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of shuffled training batches, drawn with ``generator`` (a CPU generator)."""
        count = self.train_x.shape[0]
        order = torch.randperm(count, generator=generator).to(self.train_x.device, non_blocking=True)
        size = min(batch_size, count)
        for step in range(self.steps_per_epoch(batch_size)):
            index = order[step * size : (step + 1) * size]
            yield self.train_x[index], self.train_y[index]
