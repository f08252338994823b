"""The dataset contract: a classification dataset held on the device as tensors.

Dataset plugins return ``ClassificationData`` with every tensor already on the training device
(shared/DESIGN.md section 9: small datasets live on the device; no DataLoader workers on the hot
path). Batches are drawn by shuffling indices with a seeded CPU generator, so the order depends only
on the run's seed; ``augment`` transforms a whole batch on the device in one batched operation
(random crop, flip, cutout, then normalization), drawing from a seeded device generator.

Label noise: ``train_y`` holds the labels trained on; ``true_train_y`` the labels before noise was
added (``None`` when there is none), so the runner can report memorization (accuracy on the noisy
samples against their given labels), accuracy on the noisy samples against their true labels, and
accuracy on the clean samples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
Normalize = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class ClassificationData:
    """Train, test (and optional validation) tensors for classification, on one device.

    train_x, test_x, val_x: inputs, shape ``(N, *input_shape)``. Stored as the dataset likes
        (for images, uint8 saves memory); ``augment`` / ``normalize`` turn a batch into model input.
    train_y, test_y, val_y: integer class labels, shape ``(N,)``; ``train_y`` are the labels
        trained on (noisy where the dataset adds label noise); test and validation labels are clean.
    true_train_y: the training labels before noise (``None`` without noise).
    num_classes: the number of classes.
    augment: ``augment(batch, generator) -> model input`` for training batches (default: normalize).
    normalize: ``normalize(batch) -> model input`` for evaluation (default: identity).
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    true_train_y: torch.Tensor | None = None
    val_x: torch.Tensor | None = None
    val_y: torch.Tensor | None = None
    augment: Augment | None = None
    normalize: Normalize | None = None

    def __post_init__(self) -> None:
        splits = [("train", self.train_x, self.train_y), ("test", self.test_x, self.test_y)]
        if self.val_x is not None or self.val_y is not None:
            splits.append(("validation", self.val_x, self.val_y))
        for split, x, y in splits:
            if x is None or y is None or x.shape[0] != y.shape[0]:
                raise ValueError(f"dataset {self.name!r}: {split} inputs and labels do not match in number")
        if self.true_train_y is not None and self.true_train_y.shape != self.train_y.shape:
            raise ValueError(f"dataset {self.name!r}: true_train_y must have the shape of train_y")

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input, without the batch dimension."""
        return tuple(self.train_x.shape[1:])

    @property
    def noisy_mask(self) -> torch.Tensor | None:
        """True for training samples whose label was changed by label noise (``None`` without noise)."""
        if self.true_train_y is None:
            return None
        return self.train_y != self.true_train_y

    def steps_per_epoch(self, batch_size: int) -> int:
        """Full batches per epoch (the last partial batch is dropped so every step sees ``batch_size``)."""
        return max(1, self.train_x.shape[0] // batch_size)

    def model_input(self, inputs: torch.Tensor) -> torch.Tensor:
        """An evaluation batch as the model takes it."""
        return self.normalize(inputs) if self.normalize is not None else inputs

    def train_batches(
        self, batch_size: int, shuffle: torch.Generator, augment: torch.Generator | None = None, start: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of shuffled, augmented training batches.

        shuffle: a CPU generator for the order; augment: a generator on the data's device for the
        augmentation's random draws. start: the batches already trained in this epoch (a run resumed from a
        mid-epoch checkpoint): the order is drawn as at the epoch's start, and those batches are not built.
        """
        count = self.train_x.shape[0]
        order = torch.randperm(count, generator=shuffle).to(self.train_x.device, non_blocking=True)
        size = min(batch_size, count)
        for step in range(start, self.steps_per_epoch(batch_size)):
            index = order[step * size : (step + 1) * size]
            inputs = self.train_x[index]
            if self.augment is not None:
                inputs = self.augment(inputs, augment)
            else:
                inputs = self.model_input(inputs)
            yield inputs, self.train_y[index]
