"""ERM: the base optimizer alone, through the sharpness-aware step protocol.

One gradient evaluation per step and never a perturbation, whatever the scheduler says: this is
the baseline every paper compares against (for example 003_dc502e6d0d8ca36d.txt, Sec. 3.1).
"""

from __future__ import annotations

import torch

from harness import SharpnessAwareOptimizer, StepInfo


class ERM(SharpnessAwareOptimizer):
    """The base optimizer's step on the clean gradient; ``StepInfo.perturbed`` is always false."""

    @torch.no_grad()
    def step(self, closure=None) -> torch.Tensor:
        with torch.enable_grad():
            loss = closure()
        if self.rank_mean is not None:  # DDP local scope: the pass ran under no_sync, average it here
            self.average_over_ranks(*self.params_with_grads())
        self.base_optimizer.step()
        self.steps_taken += 1
        self.last_step = StepInfo(perturbed=False, rho=0.0)
        return loss
