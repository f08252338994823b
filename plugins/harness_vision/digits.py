"""scikit-learn's digits as a device-resident ``ClassificationData`` (the quickstart dataset).

1797 grey 8x8 images of the digits 0-9 that ship with scikit-learn, so the quickstart needs no
download. The train/test split is stratified and seeded by ``split_seed`` (fixed across runs, so
every method and seed is scored on the same test images); inputs are standardized with the mean
and standard deviation of the training pixels.
"""

from __future__ import annotations

import torch
from sklearn import datasets
from sklearn.model_selection import train_test_split

from harness import ClassificationData


def load_digits(*, device: torch.device, test_fraction: float = 0.2, split_seed: int = 0) -> ClassificationData:
    """Load digits as tensors of shape ``(N, 1, 8, 8)`` on ``device``."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"digits: test_fraction must be in (0, 1), got {test_fraction}")
    bunch = datasets.load_digits()
    train_x, test_x, train_y, test_y = train_test_split(
        bunch.data, bunch.target, test_size=test_fraction, random_state=split_seed, stratify=bunch.target
    )
    mean, std = train_x.mean(), train_x.std()

    def images(x) -> torch.Tensor:
        return torch.as_tensor((x - mean) / std, dtype=torch.float32).reshape(-1, 1, 8, 8).to(device)

    def labels(y) -> torch.Tensor:
        return torch.as_tensor(y, dtype=torch.long).to(device)

    return ClassificationData(
        name="digits",
        train_x=images(train_x),
        train_y=labels(train_y),
        test_x=images(test_x),
        test_y=labels(test_y),
        num_classes=10,
    )
