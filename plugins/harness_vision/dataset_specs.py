"""The dataset specs of ``harness_vision`` (no torch import: factories are lazy paths).

Every dataset takes the shared parameters below: a seeded validation split with clean labels,
label noise seeded per (dataset, ``noise_seed``), seeded sample limits for smoke runs, and on-device
augmentation. ``tests/test_datasets.py`` checks that these defaults equal the factories' keyword defaults.
"""

from __future__ import annotations

from typing import Any

from harness import DatasetSpec

# Shared by every dataset: noise_rate is filled in by the suite's noise_rates axis.
_SHARED: dict[str, Any] = {
    "validation_fraction": 0.0,
    "noise_rate": 0.0,
    "noise_type": "symmetric",
    "noise_seed": 0,
    "limit_train": 0,
    "limit_test": 0,
    "split_seed": 0,
}
_CHOICES = {"noise_type": ("symmetric", "asymmetric")}
_CIFAR: dict[str, Any] = {
    "root": "",
    "download": False,
    "augment": True,
    "cutout": 0,
    "policy": "none",
    "num_ops": 2,
    "magnitude": 9,
    **_SHARED,
}
#: AutoAugment / RandAugment (``harness_vision.policies``), added later: their defaults keep earlier run ids.
_CIFAR_LATER = ("policy", "num_ops", "magnitude")
_CIFAR_CHOICES = {**_CHOICES, "policy": ("none", "autoaugment", "randaugment")}
_CIFAR_NOTE = (
    "read from the dataset parameter root or $HARNESS_DATA (torchvision's layout); download: true to fetch it; "
    "random crop (4-pixel padding) + flip on the device; policy: autoaugment | randaugment per sample"
)

_CIFAR_PAPER = (
    "003_dc502e6d0d8ca36d.txt (SAM), Sec. 3 (10% validation split), Sec. 3.3 and App. C.1 (label noise, clean "
    "validation); 001_543051aac35e9f16.txt (AE-SAM), Sec. 4.3"
)


def dataset_specs() -> list[DatasetSpec]:
    return [
        DatasetSpec(
            name="digits",
            factory="harness_vision.digits:load_digits",
            defaults={"test_fraction": 0.2, "augment": False, "cutout": 0, **_SHARED},
            choices=_CHOICES,
            describe="harness_vision.describe:describe_digits",
            description="scikit-learn's 8x8 handwritten digits (1797 images, 10 classes), no download",
        ),
        DatasetSpec(
            name="cifar10",
            factory="harness_vision.cifar:load_cifar10",
            defaults=dict(_CIFAR),
            choices=_CIFAR_CHOICES,
            later_params=_CIFAR_LATER,
            describe="harness_vision.describe:describe_cifar10",
            description=f"CIFAR-10 (50000/10000 32x32 images, 10 classes), {_CIFAR_NOTE}",
            paper=_CIFAR_PAPER,
        ),
        DatasetSpec(
            name="cifar100",
            factory="harness_vision.cifar:load_cifar100",
            defaults=dict(_CIFAR),
            choices=_CIFAR_CHOICES,
            later_params=_CIFAR_LATER,
            describe="harness_vision.describe:describe_cifar100",
            description=f"CIFAR-100 (50000/10000 32x32 images, 100 classes), {_CIFAR_NOTE}",
            paper=_CIFAR_PAPER,
        ),
        DatasetSpec(
            name="synthetic",
            factory="harness_vision.synthetic:load_synthetic",
            defaults={
                "num_classes": 10,
                "shape": [3, 32, 32],
                "train_size": 5000,
                "test_size": 1000,
                "seed": 0,
                "pixel_noise": 1.0,
                "augment": False,
                "cutout": 0,
                **_SHARED,
            },
            choices=_CHOICES,
            describe="harness_vision.describe:describe_synthetic",
            description="class-conditional Gaussian data of any shape and class count, generated on the fly (tests, "
            "speed benchmarks)",
        ),
    ]
