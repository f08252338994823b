"""Registration of the datasets and models of ``harness_vision`` (cheap to import: no torch)."""

from __future__ import annotations

from harness import DatasetSpec, ModelSpec, hookimpl


@hookimpl
def register_datasets() -> list[DatasetSpec]:
    return [
        DatasetSpec(
            name="digits",
            factory="harness_vision.digits:load_digits",
            defaults={"test_fraction": 0.2, "split_seed": 0},
            description="scikit-learn's 8x8 handwritten digits (1797 images, 10 classes), no download",
        ),
    ]


@hookimpl
def register_models() -> list[ModelSpec]:
    return [
        ModelSpec(
            name="mlp",
            factory="harness_vision.small_models:mlp",
            defaults={"hidden": 128, "depth": 2, "dropout": 0.0},
            description="Multi-layer perceptron on flattened inputs",
        ),
        ModelSpec(
            name="small-cnn",
            factory="harness_vision.small_models:small_cnn",
            defaults={"channels": 32, "dropout": 0.0},
            description="Two 3x3 conv + BatchNorm blocks and a linear head, for digits-sized images",
        ),
    ]
