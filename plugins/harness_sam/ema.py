"""An exponential moving average of the clean gradients, and the SAM variants that perturb along a direction
built from one (``AlongGradientAverage``: F-SAM, VaSSO).

F-SAM (``harness_sam.fsam``: the EMA m_t estimates the full gradient) and VaSSO (``harness_sam.vasso``: the
EMA d_t is the variance-suppressed ascent direction) both keep one: ``m <- (1 - weight) m + weight g``, one
buffer per trainable parameter, allocated once (``harness_sam.sam.GradientMemory``), updated with one
``torch._foreach_lerp_`` (no per-parameter loop, no allocation, no host synchronization).

The first update differs between papers and their code: ``start="zero"`` is an EMA from m = 0 (m_0 =
weight g_0); ``start="gradient"`` copies the first gradient (m_0 = g_0, what both reference codes do).
"""

from __future__ import annotations

from typing import Any

import torch

from harness import SharpnessAwareOptimizer
from harness_sam.sam import GradientMemory

STARTS = ("zero", "gradient")


class GradientEMA:
    """``m <- (1 - weight) m + weight g`` per parameter; ``start`` says what the first update gives."""

    def __init__(self, params: list[torch.Tensor], weight: float, start: str, owner: str) -> None:
        if start not in STARTS:
            raise ValueError(f"{owner}: the first update must be one of {STARTS}, got {start!r}")
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"{owner}: the moving-average weight must be in [0, 1], got {weight}")
        self.weight, self.start = float(weight), start
        self.memory = GradientMemory(params)
        self.updates = 0

    def select(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        """The buffers of ``params`` (zeros before the first update)."""
        return self.memory.select(params)

    def update(self, params: list[torch.Tensor], grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """Fold ``grads`` (of ``params``) into the average; return the buffers of ``params``."""
        buffers = self.memory.select(params)
        if self.updates == 0 and self.start == "gradient":
            torch._foreach_copy_(buffers, grads)
        else:
            torch._foreach_lerp_(buffers, grads, self.weight)
        self.updates += 1
        return buffers

    def state_dict(self) -> dict[str, Any]:
        return {"buffers": self.memory.buffers, "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any], params: list[torch.Tensor]) -> None:
        if state.get("buffers") is not None:
            torch._foreach_copy_(self.memory.select(params), state["buffers"])
        self.updates = int(state.get("updates", 0))


class AlongGradientAverage(SharpnessAwareOptimizer):
    """SAM with e = rho d / ||d||, d built from the clean gradient and ``self.average`` (a ``GradientEMA``).

    Subclasses set ``self.average`` and write d into the clean gradients (``direction_in_place``; pass 2
    replaces them); ``direction_name`` names d's norm in ``StepInfo.extras``. An unperturbed step (a scheduler
    that skips steps) still folds its clean gradient into the average.
    """

    direction_name = "direction"
    average: GradientEMA
    eps: float

    def direction_in_place(self, params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        """Fold ``grads`` into the average and overwrite them with d."""
        raise NotImplementedError

    def ascend(self, params, grads, rho, grad_norm):
        torch._foreach_copy_(self._backup_buffers(), self._params)
        self.direction_in_place(params, grads)  # the gradients now hold d
        direction_norm = self.global_norm(grads)
        scale = rho / (direction_norm + self.eps)
        torch._foreach_mul_(grads, scale)  # ... and now e
        torch._foreach_add_(params, grads)
        return {"perturbation_norm": direction_norm * scale, f"{self.direction_name}_norm": direction_norm}

    def reuse(self, params, grads, grad_norm):
        """An unperturbed step: the clean gradient still feeds the average (``grads`` unchanged)."""
        self.average.update(params, grads)
        return {}

    def variant_state_dict(self) -> dict[str, Any]:
        return {"average": self.average.state_dict()}

    def load_variant_state_dict(self, state: dict[str, Any]) -> None:
        self.average.load_state_dict(state["average"], self._params)
