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
        extras = super().ascend(params, grads, rho, grad_norm)  # e from this rank's own gradient
        self._clean_norm = self.synced_clean_gradients(params, self._clean_grads, grad_norm)  # DDP local scope
        return extras

    def descend(self, params, rho):
        extras = super().descend(params, rho)
        if self.step_overflowed:  # fp16: pass 2 overflowed, the step is skipped
            return extras
        perturbed = [p.grad for p in params]
        if any(g is None for g in perturbed):  # a parameter unused in pass 2: g_p = 0 there
            perturbed = [g if g is not None else torch.zeros_like(p) for p, g in zip(params, perturbed, strict=True)]
            for p, g in zip(params, perturbed, strict=True):
                p.grad = g
        # <g, g_p> by polarization, with the clean-gradient buffer turned into s = g + g_p in place:
        # <g, g_p> = (||s||^2 - ||g||^2 - ||g_p||^2) / 2. Fused kernels, no temporary, no loop.
        total = self._clean_grads
        torch._foreach_add_(total, perturbed)
        perturbed_norm = self.global_norm(perturbed)
        perturbed_sq = perturbed_norm * perturbed_norm
        total_norm = self.global_norm(total)
        inner = (total_norm * total_norm - self._clean_norm * self._clean_norm - perturbed_sq) / 2
        # g_perp = g - (<g, g_p> / ||g_p||^2) g_p;   update = g_p - alpha g_perp
        #        = (1 + alpha (projection + 1)) g_p - alpha s, written into p.grad in place
        projection = inner / (perturbed_sq + self.eps)
        torch._foreach_mul_(perturbed, 1.0 + self.alpha * (projection + 1.0))
        torch._foreach_add_(perturbed, total, alpha=-self.alpha)
        extras["cos_g_gp"] = inner / (self._clean_norm * perturbed_norm + self.eps)
        return extras
