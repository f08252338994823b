"""``sam_sharpness``: SAM's sharpness ``max_{||e||_2 <= rho} L(w + e) - L(w)`` by projected gradient ascent.

SAM (shared/papers/003_dc502e6d0d8ca36d.txt, eq. 1 and App. C.6 / Table 11 and Fig. 7; seed_sam_gsam.md
A.3 and A.6 items 2-3) estimates the inner maximum with k steps of projected gradient ascent (k = 1, 2, 3, 5)
and reports it on the training error rate of the batch. The error rate has no gradient, so the ascent here
climbs the loss, and ``sam_sharpness_error`` is the increase in error rate caused by the same perturbation.

The ascent, from ``e_0 = 0``::

    e_{t+1} = P(e_t + step_size * g(w + e_t) / ||g(w + e_t)||),   P = projection onto ||e||_2 <= rho

Decisions (the paper states no step size):

- ``step_size`` defaults (``null``) to ``rho``. Then the first step is exactly SAM's first-order solution
  ``e = rho g / ||g||`` (Alg. 1, eq. 2), so ``steps=1`` is the sharpness SAM itself optimizes; each later
  step can still cross the ball, and from the sphere it moves ``e`` to the bisector of ``e`` and the new
  gradient direction before projecting back, which converges to a point where the gradient is parallel to
  ``e`` (the optimality condition of the ball-constrained maximum). The alternative ``rho / steps`` would
  make the iterates a path of length ``rho`` that, when it curves, ends inside the ball and never reaches
  the maximum on the sphere.
- Normalized gradient steps make ``step_size`` a distance, independent of the loss scale.
- The value is the best over the iterates ``e_1 ... e_k`` (``e_0 = 0`` is not counted, so one step gives
  SAM's estimate even where it is negative). The iterates do not depend on ``steps``, so the estimate never
  decreases when ``steps`` grows. The last iterate needs only a forward pass.
- Where ``g(w) = 0`` exactly there is no ascent direction: the value is 0.

m-sharpness (SAM Sec. 4.1 and Fig. 3; formalised in seed_sam_gsam.md A.6 item 3): with ``m > 0`` every batch
is split into consecutive chunks of ``m`` examples (the last one may be smaller; chunks never straddle
batches), each chunk gets its own maximization, and the increases are averaged weighted by chunk size,
``(1/n) sum_M max_e sum_{s in M} [l_s(w + e) - l_s(w)]``. With ``m = 0`` the whole subset is one chunk.
Cost: ``steps`` gradient evaluations and one forward pass per batch (per chunk when ``m > 0``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from harness_sharpness.functional import Batch, LossSurface, Part, batch_size, eval_mode


class SamSharpness:
    """SAM sharpness of the mean loss over the metric batches (or its mean over chunks of ``m``).

    rho: radius of the l2 ball over all trainable parameters.
    steps: projected gradient ascent steps (SAM Table 11 uses 1, 2, 3, 5).
    step_size: length of each normalized ascent step; ``None`` means ``rho``.
    m: chunk size for m-sharpness; 0 maximizes over the whole subset at once.

    Columns: ``sam_sharpness`` (loss increase), ``sam_sharpness_error`` (increase in error rate at the
    same perturbation, as a fraction; ``None`` when the outputs are not class logits with integer
    targets), ``sam_sharpness_steps``, ``sam_sharpness_batches``.
    """

    name = "sam_sharpness"

    def __init__(self, *, rho: float = 0.05, steps: int = 1, step_size: float | None = None, m: int = 0) -> None:
        if not rho > 0:
            raise ValueError(f"sam_sharpness: rho must be > 0, got {rho!r}")
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"sam_sharpness: steps must be an integer >= 1, got {steps!r}")
        if step_size is not None and not step_size > 0:
            raise ValueError(f"sam_sharpness: step_size must be > 0 or null (= rho), got {step_size!r}")
        if not isinstance(m, int) or m < 0:
            raise ValueError(f"sam_sharpness: m must be an integer >= 0 (0 = the whole subset), got {m!r}")
        self.rho = float(rho)
        self.steps = steps
        self.step_size = float(rho if step_size is None else step_size)
        self.m = m

    def __call__(
        self, model: nn.Module, batches: Sequence[Batch], loss_fn: Callable[..., torch.Tensor]
    ) -> dict[str, Any]:
        with eval_mode(model):
            surface = LossSurface(model, batches, loss_fn)
            loss_increase, error_increase = 0.0, 0.0
            for parts, weight in self._objectives(surface):
                loss, error = self._ascend(surface, parts)
                loss_increase += weight * loss
                error_increase = None if error is None or error_increase is None else error_increase + weight * error
        return {
            self.name: loss_increase,
            f"{self.name}_error": error_increase,
            f"{self.name}_steps": self.steps,
            f"{self.name}_batches": len(surface.batches),
        }

    def _objectives(self, surface: LossSurface) -> list[tuple[list[Part], float]]:
        """The maximizations to run and their weights: the whole subset, or every chunk of ``m``."""
        if self.m == 0:
            return [(surface.parts(), 1.0)]
        total = float(sum(batch_size(batch) for batch in surface.batches))
        objectives = []
        for inputs, targets in surface.batches:
            for chunk_inputs, chunk_targets in zip(
                torch.split(inputs, self.m), torch.split(targets, self.m), strict=True
            ):
                objectives.append(([(chunk_inputs, chunk_targets, 1.0)], chunk_targets.shape[0] / total))
        return objectives

    def _ascend(self, surface: LossSurface, parts: Sequence[Part]) -> tuple[float, float | None]:
        """(loss increase, error-rate increase) at the best iterate of the projected ascent on ``parts``."""
        clean_loss, clean_error, gradient = surface.evaluate(parts, grad=True)
        offset = surface.zeros()
        best: tuple[float, float | None] | None = None
        for step in range(1, self.steps + 1):
            norm = float(gradient.norm().item())
            if norm == 0.0:
                break
            offset.add_(gradient, alpha=self.step_size / norm)
            radius = float(offset.norm().item())
            if radius > self.rho:
                offset.mul_(self.rho / radius)
            loss, error, gradient = surface.evaluate(parts, offset, grad=step < self.steps)
            if best is None or loss > best[0]:
                best = (loss, error)
        if best is None:
            return 0.0, None if clean_error is None else 0.0
        loss, error = best
        return loss - clean_loss, None if error is None or clean_error is None else error - clean_error
