"""What ``harness validate`` asks the datasets of ``harness_vision``, answered without torch or any data.

Each ``describe_*`` returns a dataset's input shape and class count and raises ``ValueError`` naming
the first out-of-range parameter; the loaders call the same checks, so loading fails with the same
message. Kept apart from the loaders (which import torch, and scikit-learn for digits) so that
validating a suite imports neither: a ``harness validate`` answers in a fraction of a second.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

NOISE_TYPES = ("symmetric", "asymmetric")
DIGITS_SHAPE = (1, 8, 8)
DIGITS_CLASSES = 10
CIFAR_SHAPE = (3, 32, 32)
CIFAR10_CLASSES = 10
CIFAR100_CLASSES = 100


def check_params(
    name: str,
    *,
    validation_fraction: float = 0.0,
    noise_rate: float = 0.0,
    noise_type: str = "symmetric",
    limit_train: int = 0,
    limit_test: int = 0,
    cutout: int = 0,
    **others: Any,
) -> None:
    """Raise ``ValueError`` naming the first out-of-range shared parameter (for ``describe``: no data needed)."""
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"{name}: validation_fraction must be in [0, 1), got {validation_fraction}")
    if not 0.0 <= noise_rate < 1.0:
        raise ValueError(f"{name}: noise_rate must be in [0, 1), got {noise_rate}")
    if noise_type not in NOISE_TYPES:
        raise ValueError(f"{name}: noise_type must be one of {', '.join(NOISE_TYPES)}, got {noise_type!r}")
    for key, value in (("limit_train", limit_train), ("limit_test", limit_test)):
        if value < 0:
            raise ValueError(f"{name}: {key} must be >= 0 (0 keeps all samples), got {value}")
    if cutout < 0:
        raise ValueError(f"{name}: cutout must be >= 0 (0 = off, else the square's side), got {cutout}")


def check_digits(*, test_fraction: float = 0.2, **params: Any) -> None:
    """Raise ``ValueError`` naming the first out-of-range parameter of ``digits``."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"digits: test_fraction must be in (0, 1), got {test_fraction}")
    check_params("digits", **params)


def describe_digits(**params: Any) -> tuple[tuple[int, ...], int]:
    """Digits' input shape and class count, without loading the data (checks the parameters' ranges)."""
    check_digits(**params)
    return DIGITS_SHAPE, DIGITS_CLASSES


def describe_cifar10(**params: Any) -> tuple[tuple[int, ...], int]:
    """CIFAR-10's input shape and class count, without reading the files (checks the parameters' ranges)."""
    check_params("cifar10", **params)
    return CIFAR_SHAPE, CIFAR10_CLASSES


def describe_cifar100(**params: Any) -> tuple[tuple[int, ...], int]:
    """CIFAR-100's input shape and class count, without reading the files (checks the parameters' ranges)."""
    check_params("cifar100", **params)
    return CIFAR_SHAPE, CIFAR100_CLASSES


def describe_synthetic(
    *,
    num_classes: int = 10,
    shape: Sequence[int] = (3, 32, 32),
    train_size: int = 5000,
    test_size: int = 1000,
    pixel_noise: float = 1.0,
    augment: bool = False,
    cutout: int = 0,
    **params: Any,
) -> tuple[tuple[int, ...], int]:
    """The input shape and class count the parameters ask for (all checked), without generating data."""
    dims = tuple(shape)
    if not dims or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in dims):
        raise ValueError(f"synthetic: shape must be a non-empty list of positive integers, got {shape!r}")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"synthetic: num_classes must be an integer >= 2, got {num_classes!r}")
    if train_size < 1 or test_size < 1:
        raise ValueError(f"synthetic: train_size and test_size must be >= 1, got {train_size} and {test_size}")
    if pixel_noise < 0:
        raise ValueError(f"synthetic: pixel_noise must be >= 0, got {pixel_noise}")
    if (augment or cutout) and len(dims) != 3:
        raise ValueError(f"synthetic: augment and cutout need image shapes [C, H, W], got shape {list(dims)}")
    check_params("synthetic", cutout=cutout, **params)
    return dims, num_classes
