"""LookSAM and Look-LayerSAM (Liu et al., CVPR 2022): reuse SAM's flatness direction between SAM steps.

Source: shared/papers/000_821cd26b06e61c4d.txt, Algorithm 1 (LookSAM), Algorithm 2
(Look-LayerSAM), eq. 4; extraction notes shared/papers/seed_looksam_aesam.md A.2-A.3. AE-LookSAM
(001_543051aac35e9f16.txt, Alg. 1 lines 8 and 11) is this optimizer with the ``adaptive``
scheduler.

On a perturbed step (the scheduler's choice: ``periodic`` every k steps for LookSAM) the SAM
gradient g_s is computed and its component orthogonal to the clean gradient g is kept:

    g_v = g_s - (<g, g_s> / ||g||^2) g        (Alg. 1; g_s sin(theta) of eq. 4)

and the update direction is g_s. On every other step, with ONE gradient evaluation:

    g_s = g + alpha (||g|| / ||g_v||) g_v      (Alg. 1 "else" branch; the ratio keeps both at one scale)

Choices the papers leave open, exposed as parameters: the perturbation (``norm``: eq. 2 is l2,
Alg. 1 prints rho sign(g); the default is l2, because the experiments reuse SAM's rho values
(Table 10), which only make sense for the l2 form); ``layerwise`` trust-ratio perturbation for
Look-LayerSAM (Alg. 2, with LAMB as the base optimizer); before the first perturbed step there is
no g_v and the plain gradient is used (the paper is silent, seed A.2). Dot products and norms are
global over all parameters (seed A.2).
"""

from __future__ import annotations

from typing import Any

import torch

from harness_sam.sam import SAM, GradientMemory


class LookSAM(SAM):
    """SAM every time the scheduler says so; in between, the clean gradient plus the reused g_v."""

    def __init__(self, params, *, base_optimizer, scheduler, alpha: float = 0.7, **options: Any) -> None:
        super().__init__(params, base_optimizer=base_optimizer, scheduler=scheduler, alpha=alpha, **options)
        if self.m:
            raise ValueError("LookSAM: m-sharpness (m > 0) is not supported; use SAM for m-sharpness")
        self.alpha = alpha
        self._clean = GradientMemory(self._params)
        self._orthogonal = GradientMemory(self._params)
        self._orthogonal_norm: torch.Tensor | None = None

    def ascend(self, params, grads, rho, grad_norm):
        self._clean_grads = self._clean.store(params, grads)
        extras = super().ascend(params, grads, rho, grad_norm)  # e from this rank's own gradient
        clean_norm = self.synced_clean_gradients(params, self._clean_grads, grad_norm)  # DDP local scope
        self._clean_sq = clean_norm * clean_norm
        return extras

    def descend(self, params, rho):
        extras = super().descend(params, rho)
        if self.step_overflowed:  # fp16: pass 2 overflowed, the step is skipped and g_v kept
            return extras
        sam_grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        # <g, g_s> by polarization, with the clean-gradient buffer turned into s = g + g_s in place:
        # <g, g_s> = (||s||^2 - ||g||^2 - ||g_s||^2) / 2. Then g_v = g_s - projection g
        # = (1 + projection) g_s - projection s. Fused kernels with a 0-dim tensor scalar (one launch per
        # tensor group on CUDA, no host sync), no temporary, no loop.
        total = self._clean_grads
        torch._foreach_add_(total, sam_grads)
        sam_norm = self.global_norm(sam_grads)
        total_norm = self.global_norm(total)
        inner = (total_norm * total_norm - self._clean_sq - sam_norm * sam_norm) / 2
        projection = inner / (self._clean_sq + self.eps)
        orthogonal = self._orthogonal.store(params, sam_grads)
        torch._foreach_mul_(orthogonal, 1.0 + projection)
        torch._foreach_mul_(total, projection)
        torch._foreach_sub_(orthogonal, total)
        self._orthogonal_norm = self.global_norm(self._orthogonal.buffers)
        extras["gv_norm"] = self._orthogonal_norm
        return extras

    def reuse(self, params, grads, grad_norm):
        if self._orthogonal_norm is None:
            return {}
        scale = self.alpha * grad_norm / (self._orthogonal_norm + self.eps)
        # g += scale g_v; scale stays on the device (a 0-dim tensor: the fused multi-tensor kernels take it
        # whole, where a list of 0-dim tensors would fall back to one kernel per parameter on CUDA). The
        # clean-gradient buffer, idle on reuse steps, holds scale g_v: no per-step allocation.
        scaled = self._clean.select(params)
        torch._foreach_copy_(scaled, self._orthogonal.select(params))
        torch._foreach_mul_(scaled, scale)
        torch._foreach_add_(grads, scaled)
        return {"gv_norm": self._orthogonal_norm}

    def variant_state_dict(self) -> dict[str, Any]:
        return {**super().variant_state_dict(), "g_v": self._orthogonal.buffers, "g_v_norm": self._orthogonal_norm}

    def load_variant_state_dict(self, state: dict[str, Any]) -> None:
        super().load_variant_state_dict(state)
        if state.get("g_v") is not None:
            torch._foreach_copy_(self._orthogonal.select(self._params), state["g_v"])
        self._orthogonal_norm = state.get("g_v_norm")
