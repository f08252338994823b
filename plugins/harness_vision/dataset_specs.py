"""The dataset specs of ``harness_vision`` (no torch import: factories are lazy paths)."""

from __future__ import annotations

from harness import DatasetSpec


def dataset_specs() -> list[DatasetSpec]:
    return [
        DatasetSpec(
            name="digits",
            factory="harness_vision.digits:load_digits",
            defaults={"test_fraction": 0.2, "split_seed": 0},
            description="scikit-learn's 8x8 handwritten digits (1797 images, 10 classes), no download",
        ),
    ]
