"""The model specs of ``harness_vision`` (no torch import: factories are lazy paths)."""

from __future__ import annotations

from harness import ModelSpec


def model_specs() -> list[ModelSpec]:
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
