"""``hessian_trace``: the trace of the training loss's Hessian by Hutchinson's estimator.

``tr(H) = E_v[v^T H v]`` for Rademacher ``v`` (entries +-1 with probability 1/2), averaged over
``samples`` draws; the standard error of that mean is returned beside it. The trace is the sum of all
eigenvalues, the bulk of the spectrum that SAM's lambda_max / lambda_5 ratio only hints at
(shared/papers/003_dc502e6d0d8ca36d.txt, Sec. 4.2; seed_sam_gsam.md A.6 item 4). Hessian-vector products
use double backward (harness_sharpness.functional.HessianOperator), over the mean loss of the subset.

Each draw uses one vector for the whole subset (``v^T (sum_b w_b H_b) v``), so a sample is an unbiased
estimate of the subset's trace. The batches are visited once: per batch one forward and first backward
pass build the gradient's graph, then ``samples`` second backward passes reuse it; the same vectors are
redrawn for every batch from the seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from harness_sharpness.functional import Batch, HessianOperator, LossSurface, eval_mode, seeded_generator


class HessianTrace:
    """Hutchinson's estimate of ``tr(H)`` over the metric batches.

    samples: number of Rademacher vectors (each one Hessian-vector product per batch).
    seed: seed of the vectors (drawn on the CPU, identical on every device).

    Columns: ``hessian_trace`` (mean of ``v^T H v``), ``hessian_trace_stderr`` (their standard deviation
    over sqrt(samples); ``None`` for one sample), ``hessian_trace_samples``, ``hessian_trace_hvps``
    (per-batch Hessian-vector products = samples x batches), ``hessian_trace_batches``.
    """

    name = "hessian_trace"

    def __init__(self, *, samples: int = 100, seed: int = 0) -> None:
        if not isinstance(samples, int) or samples < 1:
            raise ValueError(f"hessian_trace: samples must be an integer >= 1, got {samples!r}")
        self.samples = samples
        self.seed = seed

    def __call__(
        self, model: nn.Module, batches: Sequence[Batch], loss_fn: Callable[..., torch.Tensor]
    ) -> dict[str, Any]:
        with eval_mode(model):
            surface = LossSurface(model, batches, loss_fn)
            hessian = HessianOperator(surface)
            quadratic = [0.0] * self.samples
            for (inputs, targets), weight in zip(surface.batches, surface.weights, strict=True):
                leaves, grads = hessian.graph(inputs, targets)
                generator = seeded_generator(self.seed)
                for sample in range(self.samples):
                    vector = rademacher(surface.size, generator, surface.device)
                    product = hessian.product(leaves, grads, vector, retain=sample < self.samples - 1)
                    quadratic[sample] += weight * float(torch.dot(vector, product).item())
        mean = math.fsum(quadratic) / self.samples
        stderr = None
        if self.samples > 1:
            variance = math.fsum((value - mean) ** 2 for value in quadratic) / (self.samples - 1)
            stderr = math.sqrt(variance / self.samples)
        return {
            self.name: mean,
            f"{self.name}_stderr": stderr,
            f"{self.name}_samples": self.samples,
            f"{self.name}_hvps": hessian.batch_hvps,
            f"{self.name}_batches": len(surface.batches),
        }


def rademacher(size: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """A float64 vector of independent +-1 entries on ``device``.

    The random bits are drawn on the CPU from ``generator`` (so a seed gives the same vectors on every
    device), eight per byte, and unpacked on the device: one byte of random draw and transfer per eight
    entries instead of a float64 per entry, which made the draw cost more than the product on a GPU.
    """
    packed = torch.randint(0, 256, ((size + 7) // 8,), generator=generator, dtype=torch.uint8).to(device)
    shifts = torch.arange(8, dtype=torch.uint8, device=device)
    bits = (packed.unsqueeze(1) >> shifts).bitwise_and_(1).reshape(-1)[:size]
    return bits.to(torch.float64).mul_(2).sub_(1)
