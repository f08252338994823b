"""Registration of the datasets and models of ``harness_vision`` (cheap to import: no torch)."""

from __future__ import annotations

from harness import DatasetSpec, ModelSpec, hookimpl
from harness_vision.dataset_specs import dataset_specs
from harness_vision.model_specs import model_specs


@hookimpl
def register_datasets() -> list[DatasetSpec]:
    return dataset_specs()


@hookimpl
def register_models() -> list[ModelSpec]:
    return model_specs()
