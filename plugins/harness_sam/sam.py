"""SAM (Foret et al., ICLR 2021): the gradient at the worst point of an L2 ball of radius rho.

Source: shared/papers/003_dc502e6d0d8ca36d.txt, Algorithm 1 and eq. 2-3, and the extraction notes
shared/papers/seed_sam_gsam.md, part A.2. With p=2 the first-order solution of the inner
maximization is e = rho g / ||g||_2 (footnote 2), where g is the clean gradient of the batch and
||.||_2 the global norm over all parameters; the update applies the base optimizer to the gradient
at w + e (eq. 3, second-order terms dropped). ``eps`` (1e-12) guards the division when g = 0; the
JAX reference divides with no epsilon.

rho comes from the perturbation scheduler (``constant`` for plain SAM).
"""

from __future__ import annotations

import torch

from harness import SharpnessAwareOptimizer


class SAM(SharpnessAwareOptimizer):
    """SAM with the p=2 perturbation ``rho * g / (||g|| + eps)``."""

    def __init__(self, params, *, base_optimizer, scheduler, eps: float = 1e-12) -> None:
        super().__init__(params, base_optimizer=base_optimizer, scheduler=scheduler, eps=eps)
        self.eps = eps

    def perturbation(self, params, grads, rho, grad_norm):
        scale = rho / (grad_norm + self.eps)
        return torch._foreach_mul(grads, scale)
