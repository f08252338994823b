"""One thing ``harness bench`` times (``Candidate``), and the bytes its optimizer holds between steps."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from harness.contract.held import held_tensors, optimizer_state_bytes, storage_bytes
from harness.contract.optim import SharpnessAwareOptimizer
from harness.run.row import RunState


@dataclass
class Candidate:
    """One thing to time: ``step`` takes one step and counts it in ``state`` (steps, perturbed, evaluations).

    The rest describes what it steps, for the bench's rows (benchmark scripts may leave it empty).
    ``expected_fraction``: the share of steps with a second pass, None when only a measurement can tell.
    """

    name: str
    kind: str  # preset | reference | bare
    step: Callable[[], None]
    optimizer: Any = None
    model: nn.Module | None = None
    base_optimizer: torch.optim.Optimizer | None = None
    optimizer_name: str = ""
    scheduler_name: str = ""
    base_settings: dict[str, Any] = field(default_factory=dict)
    expected_fraction: float | None = None
    warmup: int = 0
    state: RunState = field(default_factory=RunState)
    extra_held: list[torch.Tensor] = field(default_factory=list)


def held_bytes(candidate: Candidate) -> tuple[int, int]:
    """(bytes the optimizer holds between steps, of which beyond its base optimizer's state)."""
    base = optimizer_state_bytes(candidate.base_optimizer)
    optimizer = candidate.optimizer
    if isinstance(optimizer, SharpnessAwareOptimizer):
        total = optimizer_state_bytes(optimizer)
    else:  # a reference: what its base optimizer, its own object (none for a bare loop) and its extra buffers hold
        params = [p for group in candidate.base_optimizer.param_groups for p in group["params"]]
        total = storage_bytes(held_tensors(candidate.base_optimizer, optimizer, candidate.extra_held, params=params))
    return total, total - base
