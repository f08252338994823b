"""``hessian_max_eig``: the dominant Hessian eigenvalues of the training loss, by power iteration.

SAM (shared/papers/003_dc502e6d0d8ca36d.txt, Sec. 4.2; seed_sam_gsam.md A.6 item 4) reports the largest
eigenvalue lambda_max and the bulk ratio lambda_max / lambda_5 (set ``top_k`` >= 5 for the ratio column);
GSAM (004_c79f6670b818170d.txt, Sec. 5 and Fig. 4; seed_sam_gsam.md B.6 item 5) computes the dominant
eigenvalue "by power iteration" over "a subset [of the training data] to save computation", with
Hessian-vector products by double backpropagation. Neither paper states the iteration count, tolerance or
subset size: they are this metric's parameters, and its columns record what was spent.

Power iteration converges to the eigenvalue of largest MAGNITUDE, which is what GSAM's Lemma 3.3 calls
sigma_max ("largest absolute value", seed_sam_gsam.md B.1). At a minimum the Hessian is positive
semi-definite and that is the largest eigenvalue; away from one (early in training, or for a model that
is not at a minimum) a negative eigenvalue can dominate, and the value returned is then negative. Further
eigenvalues come by deflation (every iterate is orthogonalized against the eigenvectors already found, as
PyHessian does), so ``hessian_max_eig_k`` is the k-th largest in magnitude; the columns are sorted by
magnitude. An eigenvalue pair of equal magnitude and opposite signs makes the iteration oscillate: it
then stops at ``max_iterations`` and ``hessian_max_eig_converged`` is 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from harness_sharpness.functional import Batch, HessianOperator, LossSurface, eval_mode, seeded_generator


class HessianMaxEig:
    """Top-``top_k`` Hessian eigenvalues (by magnitude) of the mean loss over the metric batches.

    max_iterations: power-iteration steps per eigenvalue at most (each one Hessian-vector product over
        the whole subset, i.e. one per batch).
    tolerance: stop when the Rayleigh quotient changes by at most this fraction of its previous value.
    top_k: how many eigenvalues; beyond the first by deflation.
    seed: seed of the Gaussian start vectors (drawn on the CPU, identical on every device).

    Columns: ``hessian_max_eig`` (the dominant eigenvalue), ``hessian_max_eig_2`` ... ``_k``,
    ``hessian_max_eig_ratio_5`` (lambda_1 / lambda_5, SAM Sec. 4.2, when ``top_k`` >= 5),
    ``hessian_max_eig_iterations`` (power-iteration steps, summed over the k eigenvalues),
    ``hessian_max_eig_hvps`` (per-batch Hessian-vector products = iterations x batches),
    ``hessian_max_eig_batches``, and ``hessian_max_eig_converged`` (1 if every eigenvalue met the
    tolerance, else 0).
    """

    name = "hessian_max_eig"

    def __init__(self, *, max_iterations: int = 100, tolerance: float = 1e-3, top_k: int = 1, seed: int = 0) -> None:
        if not isinstance(max_iterations, int) or max_iterations < 1:
            raise ValueError(f"hessian_max_eig: max_iterations must be an integer >= 1, got {max_iterations!r}")
        if not tolerance >= 0:
            raise ValueError(f"hessian_max_eig: tolerance must be >= 0, got {tolerance!r}")
        if not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"hessian_max_eig: top_k must be an integer >= 1, got {top_k!r}")
        self.max_iterations = max_iterations
        self.tolerance = float(tolerance)
        self.top_k = top_k
        self.seed = seed

    def __call__(
        self, model: nn.Module, batches: Sequence[Batch], loss_fn: Callable[..., torch.Tensor]
    ) -> dict[str, Any]:
        with eval_mode(model):
            surface = LossSurface(model, batches, loss_fn)
            hessian = HessianOperator(surface)
            generator = seeded_generator(self.seed)
            eigenvalues: list[float] = []
            eigenvectors: list[torch.Tensor] = []
            iterations, converged = 0, True
            for _ in range(self.top_k):
                start = torch.randn(surface.size, generator=generator, dtype=torch.float64).to(surface.device)
                value, vector, steps, done = self._power_iteration(hessian, start, eigenvectors)
                eigenvalues.append(value)
                eigenvectors.append(vector)
                iterations += steps
                converged = converged and done
        eigenvalues.sort(key=abs, reverse=True)
        columns: dict[str, Any] = {self.name: eigenvalues[0]}
        columns.update({f"{self.name}_{k}": value for k, value in enumerate(eigenvalues[1:], start=2)})
        if self.top_k >= 5:
            columns[f"{self.name}_ratio_5"] = eigenvalues[0] / eigenvalues[4] if eigenvalues[4] != 0 else None
        columns.update(
            {
                f"{self.name}_iterations": iterations,
                f"{self.name}_hvps": hessian.batch_hvps,
                f"{self.name}_batches": len(surface.batches),
                f"{self.name}_converged": int(converged),
            }
        )
        return columns

    def _power_iteration(
        self, hessian: HessianOperator, vector: torch.Tensor, found: Sequence[torch.Tensor]
    ) -> tuple[float, torch.Tensor, int, bool]:
        """Power iteration in the orthogonal complement of ``found``: (eigenvalue, unit eigenvector,
        iterations, converged). The estimate is the Rayleigh quotient ``v^T H v`` of the unit iterate."""
        start = _orthonormalize(vector, found)
        if start is None:  # no room left (top_k exceeds the number of parameters)
            return 0.0, torch.zeros_like(vector), 0, True
        vector = start
        previous: float | None = None
        value = 0.0
        for step in range(1, self.max_iterations + 1):
            product = hessian(vector)
            value = float(torch.dot(product, vector).item())
            if not math.isfinite(value):  # a non-finite loss or curvature: report it, do not iterate on
                return value, vector, step, False
            following = _orthonormalize(product, found)
            if following is None:  # H v = 0 in the complement: the remaining eigenvalue is 0
                return 0.0, vector, step, True
            vector = following
            if previous is not None and abs(value - previous) <= self.tolerance * abs(previous):
                return value, vector, step, True
            previous = value
        return value, vector, self.max_iterations, False


def _orthonormalize(vector: torch.Tensor, basis: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """Gram-Schmidt against the orthonormal ``basis`` (twice, for stability), then unit norm; ``None`` if
    nothing is left."""
    for _ in range(2 if basis else 1):
        for direction in basis:
            vector = vector - torch.dot(vector, direction) * direction
    norm = float(vector.norm().item())
    if norm == 0.0:
        return None
    return vector / norm
