"""ERM: the base optimizer alone, through the sharpness-aware step protocol.

One gradient evaluation per step and never a perturbation, whatever the scheduler says: the non-SAM
baseline every paper compares against (shared/papers/, ``harness_sam.plugin.ERM_PAPER``). 001 (AE-SAM)
names it ERM (Sec. 4.1, "Baselines: (i) ERM", Tables 1-3); 003 (SAM) calls it SGD, the standard training
procedure, and gives it twice the epochs, reporting the better of 1x and 2x (Sec. 3.1, Table 1; label
noise: Sec. 3.3, Table 4); 004 (GSAM) "Vanilla" (Sec. 6.1, Table 1, twice the epochs in Table 5);
000 (LookSAM, Sec. 4.2, Table 1; App. A.3, Table 7) and 002 (nuSAM, Sec. 5.1, Tables 2-3) "AdamW".
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
