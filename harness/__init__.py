"""sam-harness: a benchmarking harness for sharpness-aware minimization and its variants.

The public API for plugin authors. Importing ``harness`` is cheap (no torch): the names that need
torch (``SharpnessAwareOptimizer``, ``StepInfo``, ...) are loaded on first use, so entry-point
modules that only register specs stay light.
"""

from __future__ import annotations

import importlib
from typing import Any

from harness.contract.hookspecs import hookimpl
from harness.contract.run_spec import RunSpec
from harness.contract.seeding import component_seed
from harness.contract.specs import (
    DatasetSpec,
    ExecutorSpec,
    MetricSpec,
    ModelSpec,
    OptimizerSpec,
    PresetSpec,
    SchedulerSpec,
)
from harness.errors import (
    DuplicateNameError,
    HarnessError,
    PluginError,
    ProtocolError,
    SuiteError,
    UnknownNameError,
)

_LAZY = {
    "SharpnessAwareOptimizer": "harness.contract.optim",
    "PerturbationScheduler": "harness.contract.optim",
    "StepInfo": "harness.contract.optim",
    "StepContext": "harness.contract.optim",
    "ClassificationData": "harness.contract.data",
    "Augment": "harness.contract.data",
    "Normalize": "harness.contract.data",
    "Registry": "harness.plugins",
    "get_plugin_manager": "harness.plugins",
    "create_optimizer": "harness.run.create",
    "BatchClosure": "harness.run.closure",
    "batchnorm_modules": "harness.run.closure",
}

__all__ = [
    "DatasetSpec",
    "DuplicateNameError",
    "ExecutorSpec",
    "HarnessError",
    "MetricSpec",
    "ModelSpec",
    "OptimizerSpec",
    "PluginError",
    "PresetSpec",
    "ProtocolError",
    "RunSpec",
    "SchedulerSpec",
    "SuiteError",
    "UnknownNameError",
    "__version__",
    "component_seed",
    "hookimpl",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name == "__version__":
        return _version()
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'harness' has no attribute {name!r}")


def _version() -> str:
    """The installed sam-harness distribution's version: its one home is pyproject.toml (read on first use,
    so ``import harness`` stays cheap); ``0+unknown`` for a source tree that was never installed."""
    from importlib import metadata

    try:
        return metadata.version("sam-harness")
    except metadata.PackageNotFoundError:
        return "0+unknown"
