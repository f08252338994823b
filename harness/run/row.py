"""A run's result row: the state the training loop fills (``RunState``) and the row built from it.

``result_row`` fills every run column of ``harness.results.columns`` that the runner owns: the run's
identity, its measurements (accuracies, times, memory, gradient evaluations, %SAM) and its
provenance (versions, machine). The columns themselves, their types and meanings are declared in
``harness.results.columns``; this module only fills them.
"""

from __future__ import annotations

import json
import math
import platform
import resource
import socket
import statistics
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

import torch

import harness
from harness.contract.run_spec import RunSpec
from harness.plugins import Registry
from harness.results.columns import RUN_COLUMNS, identity
from harness.run.build import resolve_device
from harness.run.source import source_commit


@dataclass
class RunState:
    """Counters and measurements accumulated while a run trains.

    A field named as a run column (``harness.results.columns.RUN_COLUMNS``) is that column of the result row as it
    is (``_STATE_COLUMNS``); ``result_row`` turns the others into columns.
    """

    steps: int = 0
    grad_evals: float = 0.0
    perturbed_steps: int = 0
    epochs_completed: int = 0
    train_time_s: float = 0.0
    eval_time_s: float = 0.0
    train_loss: float = math.nan
    test_loss: float = math.nan
    test_acc: float = math.nan
    best_test_acc: float = math.nan
    val_acc: float | None = None
    best_val_acc: float | None = None
    time_to_target_s: float | None = None
    metric_time_s: float = 0.0
    metric_values: dict[str, Any] = field(default_factory=dict)
    train_accuracies: dict[str, float | None] = field(default_factory=dict)
    step_times: list[float] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    step_trace: list[dict[str, Any]] = field(default_factory=list)  # with trace_every (harness.run.trace)
    optimizer_state_bytes: int = 0
    perturbation_state_bytes: int = 0
    peak_device_bytes: int | None = None
    checkpoint_time_s: float = 0.0  # writing checkpoints (harness.run.checkpoint), outside the train clock
    restarts: int = 0  # resumes from a checkpoint
    restart_time_s: float = 0.0  # reading and restoring them


#: The ``RunState`` fields that ``result_row`` copies into the columns of the same name.
_STATE_COLUMNS = tuple(f.name for f in fields(RunState) if f.name in {column.name for column in RUN_COLUMNS})


def _harness_version() -> str:
    try:
        return metadata.version("sam-harness")
    except metadata.PackageNotFoundError:
        return harness.__version__


def _plugin_versions(run: RunSpec, registry: Registry) -> str:
    used = {
        "optimizer": registry.get("optimizer", run.optimizer),
        "scheduler": registry.get("scheduler", run.scheduler),
        "model": registry.get("model", run.model),
        "dataset": registry.get("dataset", run.dataset),
    }
    return json.dumps({kind: f"{spec.provider} {spec.version}".strip() for kind, spec in used.items()}, sort_keys=True)


def result_row(
    run: RunSpec, state: RunState, status: str, error: str, started: datetime, registry: Registry
) -> dict[str, Any]:
    """The run's result row: every column of ``harness.results.columns.RUN_COLUMNS`` but ``schema_version`` (the
    writer's), and the metric plugins' values. The ``spec`` columns come from ``identity``, a ``RunState``
    field named as a column fills it as it is, and the entries below are the others."""
    device = resolve_device(run.device)
    quantiles = _step_quantiles(state.step_times)
    return {
        **identity(run),
        **{name: getattr(state, name) for name in _STATE_COLUMNS},
        "status": status,
        "error": error,
        "test_acc": _finite_or_none(state.test_acc),
        "best_test_acc": _finite_or_none(state.best_test_acc),
        "test_loss": _finite_or_none(state.test_loss),
        "train_loss": _finite_or_none(state.train_loss),
        "train_acc": state.train_accuracies.get("train_acc"),
        "train_acc_clean": state.train_accuracies.get("train_acc_clean"),
        "train_acc_noisy_given": state.train_accuracies.get("train_acc_noisy_given"),
        "train_acc_noisy_true": state.train_accuracies.get("train_acc_noisy_true"),
        "step_time_median_s": quantiles[1],
        "step_time_p10_s": quantiles[0],
        "step_time_p90_s": quantiles[2],
        "throughput_samples_per_s": (state.steps * run.batch_size / state.train_time_s) if state.train_time_s else None,
        "sam_fraction": state.perturbed_steps / state.steps if state.steps else None,
        "grad_evals": round(state.grad_evals),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "host": socket.gethostname(),
        "torch_version": torch.__version__,
        "harness_version": _harness_version(),
        "git_commit": source_commit(),
        "plugin_versions": _plugin_versions(run, registry),
        **state.metric_values,
        "started_at": started,
        "finished_at": datetime.now(timezone.utc),
    }


def _step_quantiles(times: list[float]) -> tuple[float | None, float | None, float | None]:
    """p10, median and p90 of the step times (``statistics.quantiles``, inclusive method)."""
    if not times:
        return None, None, None
    if len(times) == 1:
        return times[0], times[0], times[0]
    deciles = statistics.quantiles(times, n=10, method="inclusive")
    return deciles[0], statistics.median(times), deciles[-1]


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
