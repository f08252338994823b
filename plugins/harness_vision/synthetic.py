"""A class-conditional synthetic dataset of any input shape and class count (tests, speed benchmarks).

Each class ``c`` has a fixed random prototype ``mu_c`` of unit mean square; a sample of class ``c`` is
``(mu_c + pixel_noise * eps) / sqrt(1 + pixel_noise ** 2)`` with ``eps`` standard normal, so inputs have
about unit variance and the classes are separable (learnable by a linear model, by nearest class mean,
by a CNN). For image shapes ``(C, H, W)`` the prototypes are smooth: drawn at a quarter of the
resolution and upsampled bilinearly, so they survive random crops and flips. Labels are balanced
(``N // K`` or ``N // K + 1`` per class) in a random order. Everything is drawn on the CPU from
generators seeded by ``seed`` (prototypes and train set; the test set from an independent stream),
so the data is identical on every device. Inputs are stored as float32, already model input.

``augment: true`` (image shapes only) applies random crops padded by an eighth of the image side
and horizontal flips, and ``cutout`` when > 0, on the device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from harness import ClassificationData
from harness_vision.assemble import assemble
from harness_vision.augment import ImagePipeline, crop_padding
from harness_vision.describe import describe_synthetic
from harness_vision.splits import cpu_generator


def load_synthetic(
    *,
    device: torch.device | str,
    num_classes: int = 10,
    shape: Sequence[int] = (3, 32, 32),
    train_size: int = 5000,
    test_size: int = 1000,
    seed: int = 0,
    pixel_noise: float = 1.0,
    augment: bool = False,
    cutout: int = 0,
    validation_fraction: float = 0.0,
    noise_rate: float = 0.0,
    noise_type: str = "symmetric",
    noise_seed: int = 0,
    limit_train: int = 0,
    limit_test: int = 0,
    split_seed: int = 0,
) -> ClassificationData:
    """Synthetic class-conditional data of input shape ``shape`` on ``device``."""
    shape, num_classes = describe_synthetic(
        num_classes=num_classes,
        shape=shape,
        train_size=train_size,
        test_size=test_size,
        pixel_noise=pixel_noise,
        augment=augment,
        cutout=cutout,
        validation_fraction=validation_fraction,
        noise_rate=noise_rate,
        noise_type=noise_type,
        limit_train=limit_train,
        limit_test=limit_test,
    )
    generator = cpu_generator("synthetic", seed)
    prototypes = _prototypes(num_classes, shape, generator)
    train_x, train_y = _samples(prototypes, train_size, pixel_noise, generator)
    test_x, test_y = _samples(prototypes, test_size, pixel_noise, cpu_generator("synthetic-test", seed))
    pipeline = None
    if augment or cutout:
        padding = crop_padding(shape[1], shape[2]) if augment else 0
        pipeline = ImagePipeline(padding=padding, flip=augment, cutout=cutout)
    return assemble(
        "synthetic",
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        num_classes=num_classes,
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


def _prototypes(num_classes: int, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """``(K, *shape)`` class means of unit mean square; smooth for image shapes."""
    if len(shape) == 3:
        channels, height, width = shape
        coarse = torch.randn(num_classes, channels, math.ceil(height / 4), math.ceil(width / 4), generator=generator)
        prototypes = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    else:
        prototypes = torch.randn(num_classes, *shape, generator=generator)
    flat = prototypes.reshape(num_classes, -1)
    flat = flat / flat.pow(2).mean(dim=1, keepdim=True).sqrt().clamp_min(1e-12)
    return flat.reshape(num_classes, *shape)


def _samples(
    prototypes: torch.Tensor, count: int, pixel_noise: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    num_classes = prototypes.shape[0]
    labels = (torch.arange(count) % num_classes)[torch.randperm(count, generator=generator)]
    noise = torch.randn(count, *prototypes.shape[1:], generator=generator)
    inputs = (prototypes[labels] + pixel_noise * noise) / math.sqrt(1.0 + pixel_noise**2)
    return inputs, labels
