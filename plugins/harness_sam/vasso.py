"""VaSSO (Li and Giannakis, NeurIPS 2023, arXiv 2309.15639, "Enhancing Sharpness-Aware Optimization Through
Variance Suppression"): perturb along a variance-suppressed average of the stochastic gradients.

Source: the paper's Algorithm 1 (the "stochastic linearization" of SAM's inner maximization with the gradient
replaced by a moving average) and the official code github.com/BingcongLi/VaSSO (``solver/vasso.py``,
``configs/defaulf_cfg.py``, ``train.sh``, README). SAM's adversary e = rho g_t / ||g_t|| follows one batch's
gradient, whose variance makes it "over-friendly" (it need not raise the loss on the other batches); VaSSO
smooths the direction over batches:

    d_t = (1 - theta) d_{t-1} + theta g_t,     e_t = rho d_t / ||d_t||,

then, as SAM, the base optimizer steps from w_t with the gradient at w_t + e_t (two passes per step). theta = 1
is SAM. Norms are global over all parameters; ``eps`` (1e-12, as this package's SAM; the code adds 1e-7)
guards ||d_t|| = 0.

``theta`` defaults to 0.9, the code's default (``--theta 0.9``, used by ``train.sh`` for CIFAR-100 WRN-28-10
and by the README's CIFAR-10 ResNet-18 command); the paper sweeps it: tune it. ``init`` is the first step:
``gradient`` (default) starts from d_0 = g_0 as the code does (its EMA buffer is created from the first
gradient); ``zero`` starts the average from d_{-1} = 0 (d_0 = theta g_0). Both perturb the first step along g_0
(SAM's step: the normalization removes theta), and differ afterwards, d_1 = (1 - theta) g_0 + theta g_1
against (1 - theta) theta g_0 + theta g_1.

The average is also fed the clean gradient of every unperturbed step (when a scheduler skips steps); the paper
perturbs every step. Under DDP's local perturbation scope it is fed this rank's gradient on perturbed steps.

Cost: SAM's two passes; memory: SAM's weight backup plus d (one buffer per parameter). ``torch._foreach_*``
kernels with 0-dim tensor scalars, the perturbation written into the clean gradients (pass 2 replaces them):
no allocation, no host synchronization.
"""

from __future__ import annotations

import torch

from harness_sam.ema import AlongGradientAverage, GradientEMA

INITS = ("gradient", "zero")


class VaSSO(AlongGradientAverage):
    """VaSSO: e = rho d / ||d||, d = (1 - theta) d + theta g (see the module docstring).

    theta: the weight of the new gradient in [0, 1] (1 is SAM; 0.9 the code's default).
    init: ``gradient`` (d_0 = g_0, the code) or ``zero`` (d_{-1} = 0).
    eps: the guard of the division by ||d||.
    """

    def __init__(
        self,
        params,
        *,
        base_optimizer: torch.optim.Optimizer,
        scheduler,
        theta: float = 0.9,
        init: str = "gradient",
        eps: float = 1e-12,
    ) -> None:
        super().__init__(params, base_optimizer=base_optimizer, scheduler=scheduler, theta=theta, init=init, eps=eps)
        if init not in INITS:
            raise ValueError(f"VaSSO: init must be one of {INITS}, got {init!r}")
        self.theta, self.eps = float(theta), float(eps)
        self.average = GradientEMA(self._params, self.theta, "gradient" if init == "gradient" else "zero", "VaSSO")

    def direction_in_place(self, params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        torch._foreach_copy_(grads, self.average.update(params, grads))
