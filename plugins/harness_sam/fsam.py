"""Friendly SAM (F-SAM; Li, Zhou, He, Cheng, Huang, CVPR 2024, arXiv 2403.12350): perturb along the
stochastic gradient noise, the batch gradient with an estimate of the full gradient removed.

Source: the paper's method section (its Algorithm 1), as transcribed with its symbols, and the official code
github.com/nblt/F-SAM (``utils.py``, class ``FriendlySAM``; ``run.sh``). F-SAM decomposes SAM's ascent
direction, the batch gradient g_t, into a full-gradient component and the batch's stochastic gradient noise,
finds the first harmful to generalization, and perturbs along the second. The full gradient is estimated by an
exponential moving average of the batch gradients:

    m_t = lambda m_{t-1} + (1 - lambda) g_t,     d_t = g_t - sigma m_t,     e_t = rho d_t / ||d_t||,

then, as SAM, the base optimizer steps from w_t with the gradient at w_t + e_t (two passes per step). Norms
are global over all parameters; ``eps`` (1e-12, the code's) guards ||d_t|| = 0.

Where the paper and its code differ, ``form`` chooses:

- ``paper`` (default): the update above, m_{-1} = 0, and d_t subtracts the average *including* g_t. The first
  step therefore perturbs along (1 - sigma (1 - lambda)) g_0, SAM's direction.
- ``code``: the reference code subtracts the average *before* g_t is folded in, d_t = g_t - sigma m_{t-1},
  and starts the average from the first gradient (m_0 = g_0), so its first step is SAM's. With sigma = 1 the
  two give the same direction up to a positive factor (d_t = lambda (g_t - m_{t-1}) in the paper's form)
  except for the start of the average (m_0 = (1 - lambda) g_0 against g_0), which the normalization does not
  hide; with sigma != 1 the directions differ at every step.

Defaults: sigma = 1 (the paper fixes it; the code's default), lambda = 0.95 (the code's command-line default
and ``run.sh``, CIFAR-100 ResNet-18; the class default is 0.9 and the shipped logs also run 0.6: sweep it).
rho is the scheduler's: the reference code runs SAM and F-SAM at one rho (0.2 on CIFAR-100), so the preset
takes SAM's 0.05.

The average is also fed the clean gradient of every unperturbed step (when a scheduler skips steps), so it
keeps estimating the full gradient; the paper perturbs every step. Under DDP's local perturbation scope it is
fed this rank's gradient on perturbed steps, as the perturbation is.

Cost: SAM's two passes; memory: SAM's weight backup plus the average (one buffer per parameter). The update
runs in place in the clean gradients (pass 2 replaces them): lerp, add, norm, scale, add, all
``torch._foreach_*`` kernels with 0-dim tensor scalars, no allocation and no host synchronization.
"""

from __future__ import annotations

import torch

from harness_sam.ema import AlongGradientAverage, GradientEMA

FORMS = ("paper", "code")


class FriendlySAM(AlongGradientAverage):
    """F-SAM: e = rho d / ||d||, d = g - sigma m, m the EMA of the batch gradients (see the module docstring).

    sigma: how much of the full-gradient estimate is removed (1 in the paper).
    lmbda: lambda, the EMA's decay, in [0, 1] (0.95: the code's command line).
    form: ``paper`` or ``code``, where the two differ (the module docstring).
    eps: the guard of the division by ||d||.
    """

    def __init__(
        self,
        params,
        *,
        base_optimizer: torch.optim.Optimizer,
        scheduler,
        sigma: float = 1.0,
        lmbda: float = 0.95,
        form: str = "paper",
        eps: float = 1e-12,
    ) -> None:
        super().__init__(
            params, base_optimizer=base_optimizer, scheduler=scheduler, sigma=sigma, lmbda=lmbda, form=form, eps=eps
        )
        if form not in FORMS:
            raise ValueError(f"FriendlySAM: form must be one of {FORMS}, got {form!r}")
        self.sigma, self.lmbda, self.form, self.eps = float(sigma), float(lmbda), form, float(eps)
        start = "zero" if form == "paper" else "gradient"
        self.average = GradientEMA(self._params, 1.0 - self.lmbda, start, "FriendlySAM (lmbda)")  # the full gradient

    direction_name = "noise"

    def direction_in_place(self, params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        """Fold g into m and turn ``grads`` into d = g - sigma m (m_t for ``paper``, m_{t-1} for ``code``)."""
        average = self.average
        if self.form == "paper":
            torch._foreach_add_(grads, average.update(params, grads), alpha=-self.sigma)
        elif average.updates == 0:  # code form, first step: m_0 = g_0 and d_0 = g_0 (SAM's step)
            average.update(params, grads)
        else:
            # code form: d = g - sigma m_{t-1}, then m_t = lambda m_{t-1} + (1 - lambda) g with g = d + sigma
            # m_{t-1}: m_t = (lambda + (1 - lambda) sigma) m_{t-1} + (1 - lambda) d, in place (no copy of g)
            m = average.select(params)
            torch._foreach_add_(grads, m, alpha=-self.sigma)
            torch._foreach_mul_(m, self.lmbda + (1.0 - self.lmbda) * self.sigma)
            torch._foreach_add_(m, grads, alpha=1.0 - self.lmbda)
            average.updates += 1
