"""``surrogate_gap``: GSAM's surrogate gap ``h(w) = f(w_adv) - f(w)`` and the eigenvalue it implies.

GSAM (shared/papers/004_c79f6670b818170d.txt, Sec. 3, eq. 4; seed_sam_gsam.md B.1 and B.6 items 3-4):
``w_adv = w + rho g / (||g|| + 1e-12)`` with ``g`` the gradient of ``f`` at ``w`` and norms over the full
parameter vector, so ``h = rho ||g|| + O(rho^2)`` (Lemma 3.2). By Lemma 3.3, at a local minimum and for
small ``rho``, ``sigma_max ~= 2 h / rho^2`` (the dominant Hessian eigenvalue, largest in magnitude):
``surrogate_gap_eig_estimate``. Away from a minimum the first-order term ``rho ||g||`` dominates ``h`` and
the estimate overstates sigma_max by about ``2 ||g|| / rho``: compare it with ``hessian_max_eig`` only for
a trained model.

Here ``f`` is the mean loss over the whole metric subset (GSAM's Fig. 4 "estimated" panel uses the whole
training set; the per-step value its optimizer logs is the minibatch's). Cost: one gradient evaluation and
one forward pass per batch. This is ``sam_sharpness`` with ``steps=1`` up to the 1e-12 in the denominator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from harness_sharpness.functional import Batch, LossSurface, eval_mode

EPSILON = 1e-12  # GSAM's default epsilon in w_adv (seed_sam_gsam.md B.1)


class SurrogateGap:
    """GSAM's surrogate gap over the metric batches.

    rho: the perturbation radius.

    Columns: ``surrogate_gap`` (h), ``surrogate_gap_eig_estimate`` (2 h / rho^2, Lemma 3.3),
    ``surrogate_gap_batches``.
    """

    name = "surrogate_gap"

    def __init__(self, *, rho: float = 0.05) -> None:
        if not rho > 0:
            raise ValueError(f"surrogate_gap: rho must be > 0, got {rho!r}")
        self.rho = float(rho)

    def __call__(
        self, model: nn.Module, batches: Sequence[Batch], loss_fn: Callable[..., torch.Tensor]
    ) -> dict[str, Any]:
        with eval_mode(model):
            surface = LossSurface(model, batches, loss_fn)
            parts = surface.parts()
            clean_loss, _, gradient = surface.evaluate(parts, grad=True)
            offset = gradient * (self.rho / (float(gradient.norm().item()) + EPSILON))
            adversarial_loss, _, _ = surface.evaluate(parts, offset, grad=False)
        gap = adversarial_loss - clean_loss
        return {
            self.name: gap,
            f"{self.name}_eig_estimate": 2.0 * gap / self.rho**2,
            f"{self.name}_batches": len(surface.batches),
        }
