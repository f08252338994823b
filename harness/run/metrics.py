"""Running metric plugins on a trained model: a fixed data subset, eval mode, weights restored.

A metric plugin's factory is called as ``factory(**params)`` and returns a callable

    metric(model, batches, loss_fn) -> dict[str, float | int | None]

``batches`` is a list of ``(inputs, targets)`` already prepared as the model takes them (no
augmentation), drawn once per run from the training set with a generator seeded by the run's seed,
so every evaluation point and every method of a suite sees the same examples for the same seed;
``loss_fn(logits, targets)`` is the mean training loss. The returned keys become result columns;
they must start with the metric's name (``hessian_max_eig``, ``hessian_max_eig_iterations``), so
that each value sits beside its budget (shared/DESIGN.md section 7).

The harness puts the model in eval mode, and afterwards restores its weights, buffers and mode
whatever the metric did, and times the work outside the train-time clock (``metric_time_s``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from harness.contract.data import ClassificationData
from harness.errors import ProtocolError

Batch = tuple[torch.Tensor, torch.Tensor]
Metric = Callable[[nn.Module, list[Batch], Callable[..., torch.Tensor]], Mapping[str, Any]]


@dataclass(frozen=True)
class MetricRequest:
    """One metric of a suite: its registry name and parameters."""

    name: str
    params: Mapping[str, Any]


def metric_batches(data: ClassificationData, *, batches: int, batch_size: int, seed: int) -> list[Batch]:
    """A fixed, seeded subset of the training set, as model-ready batches."""
    generator = torch.Generator().manual_seed(seed)
    count = min(data.train_x.shape[0], batches * batch_size)
    index = torch.randperm(data.train_x.shape[0], generator=generator)[:count].to(data.train_x.device)
    subset_x, subset_y = data.train_x[index], data.train_y[index]
    return [
        (data.model_input(subset_x[start : start + batch_size]), subset_y[start : start + batch_size])
        for start in range(0, count, batch_size)
    ]


def run_metrics(
    model: nn.Module,
    metrics: Sequence[tuple[str, Metric]],
    batches: list[Batch],
    loss_fn: Callable[..., torch.Tensor],
) -> dict[str, Any]:
    """Call each metric in eval mode and restore the model afterwards; return all their columns."""
    saved = copy.deepcopy(model.state_dict())
    was_training = model.training
    columns: dict[str, Any] = {}
    try:
        for name, metric in metrics:
            model.eval()
            values = dict(metric(model, batches, loss_fn))
            stray = [key for key in values if not key.startswith(name)]
            if stray:
                raise ProtocolError(f"metric {name!r} returned columns {stray} that do not start with its name")
            columns.update(values)
            model.load_state_dict(saved)
    finally:
        model.load_state_dict(saved)
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return columns
