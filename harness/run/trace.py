"""A run's step trace: what the optimizer and its scheduler said about every ``trace_every``-th step.

The papers draw per-step quantities the epoch history cannot show: AE-SAM's squared gradient norm against its
adaptive threshold and the steps that perturbed (001 Figs. 1-2), GSAM's surrogate gap and the angle between
the clean and the perturbed gradient over training (004 Sec. 5). With the run setting ``trace_every: N`` the
runner keeps, for every N-th step (numbered from 1), the step's ``StepInfo`` (``perturbed``, ``rho`` and every
numeric value of ``extras``), the scheduler's ``diagnostics()`` and the %SAM so far, and writes them to
``RESULTS_DIR/<suite>/steps/<run_id>.parquet`` (``harness.results.store.write_run``; columns in
``harness.results.columns.STEP_COLUMNS``).

Cost: the device tensors among a traced step's extras are stacked into one small tensor inside the train
clock (one kernel, no host synchronization); they are copied to the host once per epoch, after the clock
stops (``flush``). Tracing never changes what trains: a traced run's weights and metrics equal an untraced
one's (tested), though its run id differs (the setting is in its configuration).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch

from harness.contract.optim import PerturbationScheduler, StepInfo
from harness.results.columns import STEP_COLUMNS

#: The trace's own columns: a variant's extras and diagnostics may not be named like them.
FIXED_COLUMNS = tuple(column.name for column in STEP_COLUMNS)


class StepTrace:
    """The traced steps of one run, kept until the epoch ends."""

    def __init__(self, every: int, scheduler: PerturbationScheduler) -> None:
        if every < 1:
            raise ValueError(f"trace_every must be >= 1 to trace, got {every!r}")
        self.every = every
        self.scheduler = scheduler
        self.rows: list[dict[str, Any]] = []
        self._pending: list[tuple[dict[str, Any], list[str], torch.Tensor | None]] = []

    def wants(self, step: int) -> bool:
        """Whether step number ``step`` (from 1) is traced."""
        return step % self.every == 0

    def record(self, step: int, epoch: int, info: StepInfo, perturbed_so_far: int) -> None:
        """Keep step ``step``'s values; its device tensors stay on the device until ``flush``."""
        row: dict[str, Any] = {
            "step": step,
            "epoch": epoch,
            "perturbed": bool(info.perturbed),
            "rho": float(info.rho),
            "sam_fraction": perturbed_so_far / step,
        }
        names, tensors = [], []
        for name, value in info.extras.items():
            if name in FIXED_COLUMNS or isinstance(value, bool):
                continue
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                names.append(name)
                tensors.append(value.detach().reshape(()).to(torch.float64))
            elif isinstance(value, numbers.Real):
                row[name] = float(value)
        for name, value in self.scheduler.diagnostics().items():
            if name not in FIXED_COLUMNS and isinstance(value, numbers.Real) and not isinstance(value, bool):
                row[name] = float(value)
        self._pending.append((row, names, torch.stack(tensors) if tensors else None))

    def flush(self) -> None:
        """Copy the kept device values to the host (after the epoch's train clock has stopped)."""
        for row, names, stacked in self._pending:
            if stacked is not None:
                row.update(zip(names, stacked.tolist(), strict=True))
            self.rows.append({key: _finite_or_none(value) for key, value in row.items()})
        self._pending.clear()


def _finite_or_none(value: Any) -> Any:
    """A float that is not finite (AE-SAM's threshold before its first decision) as null, other values as they are."""
    return None if isinstance(value, float) and not math.isfinite(value) else value
