"""``grad_stats``: mini-batch gradient norms and variance against the subset's full gradient.

AE-SAM (shared/papers/001_543051aac35e9f16.txt, Sec. 3.1, eq. 3; seed_looksam_aesam.md B.2 and B.8 items
4-6) uses ``E_B ||grad L(B; w)||^2`` as its sharpness proxy (the trace of the squared-gradient
approximation of the Hessian) and relates it to the gradient variance

    Var = E_B ||grad L(B; w) - grad L(D; w)||^2 = E_B ||grad L(B; w)||^2 - ||grad L(D; w)||^2   (eq. 3)

and plots ``||grad L(D; w)||^2`` as a convergence diagnostic (Sec. 4.5, Fig. 7). Here ``D`` is the metric
subset, not the whole training set, and ``B`` ranges over its batches.

Expectations over batches are weighted by batch size, ``E_B x_B = sum_b (n_b / N) x_b``, and
``grad L(D) = sum_b (n_b / N) grad L(B_b)`` is the subset's full gradient; with equal batches (the harness's
case unless the training set is smaller than the subset) these are plain means, and eq. 3 holds exactly
for the weighted versions too. The variance is accumulated directly, not as the difference of the two
other columns (which cancels catastrophically near a minimum), by the weighted form of Welford's update
(West 1979), in float64, with two vectors of memory. Cost: one gradient evaluation per batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from harness_sharpness.functional import Batch, LossSurface, batch_size, eval_mode


class GradStats:
    """Gradient statistics over the metric batches (no parameters).

    Columns: ``grad_stats_mean_sq_norm`` (E_B ||g_B||^2), ``grad_stats_full_sq_norm`` (||g_D||^2),
    ``grad_stats_variance`` (E_B ||g_B - g_D||^2), ``grad_stats_batches``.
    """

    name = "grad_stats"

    def __call__(
        self, model: nn.Module, batches: Sequence[Batch], loss_fn: Callable[..., torch.Tensor]
    ) -> dict[str, Any]:
        with eval_mode(model):
            surface = LossSurface(model, batches, loss_fn)
            mean = surface.zeros()
            seen, squared_norms, scatter = 0.0, 0.0, 0.0
            for inputs, targets in surface.batches:
                _, _, gradient = surface.evaluate([(inputs, targets, 1.0)], grad=True)
                size = float(batch_size((inputs, targets)))
                seen += size
                delta = gradient - mean
                mean.add_(delta, alpha=size / seen)
                scatter += size * float(torch.dot(delta, gradient - mean).item())
                squared_norms += size * float(torch.dot(gradient, gradient).item())
            full_sq_norm = float(torch.dot(mean, mean).item())
        return {
            f"{self.name}_mean_sq_norm": squared_norms / seen,
            f"{self.name}_full_sq_norm": full_sq_norm,
            f"{self.name}_variance": scatter / seen,
            f"{self.name}_batches": len(surface.batches),
        }
