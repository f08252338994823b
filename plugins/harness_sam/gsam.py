"""GSAM (Zhuang et al., ICLR 2022): surrogate gap guided sharpness-aware minimization.

Source: shared/papers/004_c79f6670b818170d.txt, Algorithm 1 and eq. 4-6; extraction notes
shared/papers/seed_sam_gsam.md B.1-B.3. After SAM's two passes (clean gradient g at w, perturbed
gradient g_p at w_adv = w + rho_t g / (||g|| + eps)), g is decomposed against g_p:

    g_par = (<g, g_p> / ||g_p||^2) g_p,    g_perp = g - g_par,

and the base optimizer receives the surrogate gradient g_p - alpha g_perp (Alg. 1 step 4: a descent
on f_p with an ascent on f in the direction orthogonal to it, which lowers the surrogate gap
h = f(w_adv) - f(w)). With alpha = 0 and a constant rho it is SAM. The rho_t schedule linear in the
learning rate is the ``lr_linked`` scheduler; the perturbation options are SAM's (``adaptive``
gives "ASAM+ascent", Sec. 5).

StepInfo extras: ``surrogate_gap`` (h, eq. 4; its eigenvalue estimate 2h/rho^2 is Lemma 3.3) and
``cos_g_gp`` (cos of the angle between g and g_p).
"""

from __future__ import annotations

from typing import Any

import torch

from harness_sam import perturbations
from harness_sam.sam import SAM, GradientMemory


class GSAM(SAM):
    """SAM whose update is ``g_p - alpha * g_perp`` (g_perp: the clean gradient orthogonal to g_p)."""

    def __init__(self, params, *, base_optimizer, scheduler, alpha: float = 0.01, **options: Any) -> None:
        super().__init__(params, base_optimizer=base_optimizer, scheduler=scheduler, alpha=alpha, **options)
        if self.m:
            raise ValueError("GSAM: m-sharpness (m > 0) is not supported; use SAM for m-sharpness")
        self.alpha = alpha
        self._clean = GradientMemory(self._params)

    def ascend(self, params, grads, rho, grad_norm):
        self._clean_grads = self._clean.store(params, grads)
        self._clean_norm = grad_norm
        return super().ascend(params, grads, rho, grad_norm)

    def descend(self, params, rho):
        extras = super().descend(params, rho)
        clean = self._clean_grads
        perturbed = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        inner = perturbations.dot(clean, perturbed)
        perturbed_sq = perturbations.dot(perturbed, perturbed)
        # g_perp = g - (<g, g_p> / ||g_p||^2) g_p;   update = g_p - alpha g_perp
        projection = inner / (perturbed_sq + self.eps)
        torch._foreach_mul_(perturbed, 1.0 + self.alpha * projection)
        torch._foreach_add_(perturbed, clean, alpha=-self.alpha)
        for p, update in zip(params, perturbed, strict=True):
            p.grad = update
        extras["cos_g_gp"] = inner / (self._clean_norm * perturbed_sq.sqrt() + self.eps)
        return extras

    def held_tensors(self) -> list[torch.Tensor]:
        return super().held_tensors() + self._clean.held()
