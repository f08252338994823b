"""scikit-learn's digits as a device-resident ``ClassificationData`` (the quickstart dataset).

1797 grey 8x8 images of the digits 0-9 that ship with scikit-learn, so the quickstart needs no
download. The train/test split is stratified and seeded by ``split_seed`` (fixed across runs, so
every method and seed is scored on the same test images); inputs are standardized with the mean
and standard deviation of the training pixels.

Sample limits, the validation split and label noise are those of every ``harness_vision`` dataset
(``harness_vision.assemble``). ``augment: true`` applies random crops with 1-pixel padding (filled
with the background) on the device, without flips (a mirrored digit is another glyph); ``cutout``
(> 0) blanks a square of that side to the background.
"""

from __future__ import annotations

import torch
from sklearn import datasets
from sklearn.model_selection import train_test_split

from harness import ClassificationData
from harness_vision.assemble import assemble
from harness_vision.augment import ImagePipeline, crop_padding
from harness_vision.describe import DIGITS_CLASSES, DIGITS_SHAPE, check_digits


def load_digits(
    *,
    device: torch.device | str,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    augment: bool = False,
    cutout: int = 0,
    validation_fraction: float = 0.0,
    noise_rate: float = 0.0,
    noise_type: str = "symmetric",
    noise_seed: int = 0,
    limit_train: int = 0,
    limit_test: int = 0,
) -> ClassificationData:
    """Load digits as float32 tensors of shape ``(N, 1, 8, 8)`` on ``device``."""
    check_digits(
        test_fraction=test_fraction,
        cutout=cutout,
        validation_fraction=validation_fraction,
        noise_rate=noise_rate,
        noise_type=noise_type,
        limit_train=limit_train,
        limit_test=limit_test,
    )
    bunch = datasets.load_digits()
    train_x, test_x, train_y, test_y = train_test_split(
        bunch.data, bunch.target, test_size=test_fraction, random_state=split_seed, stratify=bunch.target
    )
    mean, std = train_x.mean(), train_x.std()

    def images(x) -> torch.Tensor:
        return torch.as_tensor((x - mean) / std, dtype=torch.float32).reshape(-1, *DIGITS_SHAPE)

    pipeline = None
    if augment or cutout:
        background = float((0.0 - mean) / std)  # a blank pixel, standardized
        pipeline = ImagePipeline(
            padding=crop_padding(*DIGITS_SHAPE[1:]) if augment else 0, flip=False, cutout=cutout, fill=background
        )
    return assemble(
        "digits",
        train_x=images(train_x),
        train_y=torch.as_tensor(train_y),
        test_x=images(test_x),
        test_y=torch.as_tensor(test_y),
        num_classes=DIGITS_CLASSES,
        device=device,
        validation_fraction=validation_fraction,
        noise_rate=noise_rate,
        noise_type=noise_type,
        noise_seed=noise_seed,
        limit_train=limit_train,
        limit_test=limit_test,
        split_seed=split_seed,
        augment=pipeline,
    )
