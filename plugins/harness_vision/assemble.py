"""From a dataset's full train and test tensors to the ``ClassificationData`` a run trains on.

The steps every ``harness_vision`` dataset shares, in this order (all on the CPU, then moved to the
device once):

1. ``limit_test`` / ``limit_train`` (0 = all): a seeded random subset, for ``--smoke`` runs;
2. ``validation_fraction``: a seeded random ``round(fraction * N)`` of the (limited) training set held
   out as a validation split, before any noise, so its labels are clean;
3. ``noise_rate`` / ``noise_type`` / ``noise_seed``: label noise on the remaining training labels
   (``harness_vision.label_noise``); ``true_train_y`` keeps the clean labels.

Subsets and the split are seeded by ``(dataset name, split_seed)``, the noise by ``(dataset name,
noise_seed)``; none depends on the run seed.
"""

from __future__ import annotations

import torch

from harness import Augment, ClassificationData, Normalize
from harness_vision.describe import check_params
from harness_vision.label_noise import add_label_noise
from harness_vision.splits import cpu_generator, subset, validation_split


def assemble(
    name: str,
    *,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    num_classes: int,
    device: torch.device | str,
    validation_fraction: float = 0.0,
    noise_rate: float = 0.0,
    noise_type: str = "symmetric",
    noise_seed: int = 0,
    limit_train: int = 0,
    limit_test: int = 0,
    split_seed: int = 0,
    augment: Augment | None = None,
    normalize: Normalize | None = None,
) -> ClassificationData:
    """``ClassificationData`` on ``device`` from CPU tensors (labels: integer class indices)."""
    check_params(
        name,
        validation_fraction=validation_fraction,
        noise_rate=noise_rate,
        noise_type=noise_type,
        limit_train=limit_train,
        limit_test=limit_test,
    )
    train_y, test_y = train_y.long(), test_y.long()
    for split, labels in (("train", train_y), ("test", test_y)):
        if labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < num_classes:
            low, high = int(labels.min()), int(labels.max())
            raise ValueError(f"{name}: {split} labels must lie in [0, {num_classes}), found [{low}, {high}]")
    kept = subset(test_x.shape[0], limit_test, cpu_generator("limit-test", name, split_seed))
    if kept is not None:
        test_x, test_y = test_x[kept], test_y[kept]
    kept = subset(train_x.shape[0], limit_train, cpu_generator("limit-train", name, split_seed))
    if kept is not None:
        train_x, train_y = train_x[kept], train_y[kept]
    val_x = val_y = None
    if validation_fraction:
        train_index, val_index = validation_split(
            train_x.shape[0], validation_fraction, cpu_generator("validation", name, split_seed)
        )
        val_x, val_y = train_x[val_index], train_y[val_index]
        train_x, train_y = train_x[train_index], train_y[train_index]
    noisy_y = add_label_noise(
        train_y, dataset=name, num_classes=num_classes, rate=noise_rate, noise_type=noise_type, noise_seed=noise_seed
    )

    def on_device(tensor: torch.Tensor | None) -> torch.Tensor | None:
        return None if tensor is None else tensor.contiguous().to(device)

    return ClassificationData(
        name=name,
        train_x=on_device(train_x),
        train_y=on_device(noisy_y),
        test_x=on_device(test_x),
        test_y=on_device(test_y),
        num_classes=num_classes,
        true_train_y=on_device(train_y) if noise_rate > 0 else None,
        val_x=on_device(val_x),
        val_y=on_device(val_y),
        augment=augment,
        normalize=normalize,
    )
