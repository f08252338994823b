"""Momentum-SAM (MSAM; Becker, Altrock, Risse, 2024, arXiv 2401.12033, "Momentum-SAM: Sharpness Aware
Minimization without Computational Overhead"): perturb along the negative momentum, one gradient per step.

Source: the paper's MSAM algorithm and the official code github.com/MarlonBecker/MSAM (``optimizer/msam.py``,
``optimizer/adamW_msam.py``, ``configs/default.ini``, README). SAM's ascent direction needs a gradient at w
first; MSAM uses the base optimizer's momentum v_t instead, which is already there, and takes its single
gradient at the perturbed point:

    w~_t = w_t - rho v_t / ||v_t||,     g_t = grad L_B(w~_t),     base optimizer step from w_t with g_t

(v_t: the momentum before this step's update; with SGD, v_{t+1} = mu v_t + g_t, w_{t+1} = w_t - lr v_{t+1}).
The code keeps the weights at w~ between steps and moves them back for evaluation (``move_back_from_momentum
Ascent``); here the weights are copied back to w_t, bit for bit, before the base optimizer steps, so the base
optimizer, evaluation and checkpoints always see w. The trajectory is the code's except that the base
optimizer's weight decay reads w_t where the code's SGD adds it at w~_t.

Which momentum (``buffer``): ``auto`` reads the base optimizer's state, ``momentum_buffer`` (SGD: the code's
``MSAM``) or else ``exp_avg`` (Adam, AdamW, LAMB: the code's ``AdamW_MSAM`` perturbs along Adam's first moment
m_t, normalized the same way); either can be named. The first step has no momentum yet (the code starts from
a zero buffer, so its first step is the base optimizer's), and neither has a base optimizer without one (SGD
with momentum 0): those steps take the plain gradient at w. Norms are global; ``eps`` (1e-12, the code's)
guards ||v|| = 0.

The step protocol: MSAM takes ONE pass through the closure per step and no clean gradient, so its
``StepInfo`` says ``perturbed=False`` and ``rho=0.0`` (no second pass, no extra gradient cost: %SAM counts
steps with a second pass, and the runner requires two passes of a perturbed step). What it did is in
``extras``: ``perturbation_norm`` (rho, or 0 on a step without momentum), ``msam_rho`` (the scheduler's rho)
and ``grad_norm`` (of the gradient at w~). The scheduler is asked before the pass, with
``StepContext.grad_sq_norm`` = ||v_t||^2 (there is no clean gradient): a constant rho is what the paper uses
(3 with SGD and with AdamW, ``configs/default.ini`` and the README's commands, CIFAR-100 and ImageNet; the
perturbation is a descent direction, so its rho is far larger than SAM's 0.05). BatchNorm's running statistics
are updated by that single pass, at w~ (as in the code, whose weights sit at w~).

Cost: one gradient evaluation per step; memory: one weight backup (the momentum is the base optimizer's).
The perturbation is written straight into the weights from the backup (w~ = backup + (-rho/||v||) v), with
``torch._foreach_*`` kernels and a 0-dim tensor scale: no allocation, no host synchronization. The momentum
buffers are looked up in the base optimizer's state once and reused while they are the same tensors.
"""

from __future__ import annotations

from typing import Any

import torch

from harness import ProtocolError, SharpnessAwareOptimizer, StepInfo
from harness_sam.sam import GradientMemory

BUFFERS = ("auto", "momentum_buffer", "exp_avg")


class MomentumSAM(SharpnessAwareOptimizer):
    """MSAM: the one gradient of each step at w - rho v / ||v||, v the base optimizer's momentum.

    buffer: which state of the base optimizer is the momentum (``auto``, ``momentum_buffer``, ``exp_avg``).
    eps: the guard of the division by ||v||.
    """

    second_pass = False  # one gradient per step: %SAM 0 (StepInfo unperturbed) whatever the scheduler says

    def __init__(
        self,
        params,
        *,
        base_optimizer: torch.optim.Optimizer,
        scheduler,
        buffer: str = "auto",
        eps: float = 1e-12,
    ) -> None:
        super().__init__(params, base_optimizer=base_optimizer, scheduler=scheduler, buffer=buffer, eps=eps)
        if buffer not in BUFFERS:
            raise ValueError(f"MomentumSAM: buffer must be one of {BUFFERS}, got {buffer!r}")
        self.keys = ("momentum_buffer", "exp_avg") if buffer == "auto" else (buffer,)
        self.eps = float(eps)
        self._weights = GradientMemory(self._params)  # the backup of w
        self._found: tuple[list[torch.Tensor], list[torch.Tensor], int] | None = None

    def momentum(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The parameters that have a momentum in the base optimizer's state, and those momenta.

        Looked up once and reused while the base optimizer's state holds the same tensors (its size and the
        first buffer are checked every step: SGD creates its buffers at the first step, ``load_state_dict``
        replaces them).
        """
        state = self.base_optimizer.state
        if self._found is not None:
            params, buffers, size = self._found
            if size == len(state) and (not params or self._buffer_of(state.get(params[0], {})) is buffers[0]):
                return params, buffers
        params, buffers = [], []
        for p in self._params:
            buffer = self._buffer_of(state.get(p, {}))
            if buffer is not None:
                params.append(p)
                buffers.append(buffer)
        self._found = (params, buffers, len(state))
        return params, buffers

    def _buffer_of(self, state: dict[str, Any]) -> torch.Tensor | None:
        for key in self.keys:
            if state.get(key) is not None:
                return state[key]
        return None

    @torch.no_grad()
    def step(self, closure=None) -> torch.Tensor:  # type: ignore[override]
        """One pass at w - rho v / ||v||, the weights copied back to w, then the base optimizer's step."""
        if closure is None:
            raise ProtocolError(
                "MomentumSAM needs a closure: optimizer.step(closure), where closure() zeroes gradients, runs "
                "forward and backward on the current batch and returns the loss"
            )
        params, momenta = self.momentum()
        norm = self.global_norm(momenta) if momenta else torch.zeros((), device=self._params[0].device)
        perturb, rho = self.scheduler.decide(self.context(norm))
        moved = bool(perturb) and float(rho) > 0 and bool(momenta)
        perturbation_norm = torch.zeros((), device=norm.device)
        if moved:
            backup = self._weights.select(params)
            torch._foreach_copy_(backup, params)
            scale = -float(rho) / (norm + self.eps)
            torch._foreach_copy_(params, momenta)
            torch._foreach_mul_(params, scale)
            torch._foreach_add_(params, backup)  # w~ = w - rho v / ||v||
            perturbation_norm = -scale * norm
        with torch.enable_grad():
            loss = closure()
        if moved:
            torch._foreach_copy_(params, backup)
        overflowed = getattr(closure, "overflowed", None)
        skipped = bool(overflowed()) if overflowed is not None else False
        extras: dict[str, Any] = {"perturbation_norm": perturbation_norm, "msam_rho": float(rho) if moved else 0.0}
        if skipped:  # fp16: the pass overflowed; the weights are w again and the base optimizer does not step
            extras["skipped"] = True
        else:
            if self.rank_mean is not None:  # DDP local scope: the pass ran under no_sync, average it here
                self.average_over_ranks(*self.params_with_grads())
            extras["grad_norm"] = self.global_norm(self.params_with_grads()[1])
            self.base_optimizer.step()
        self.steps_taken += 1
        self.last_step = StepInfo(perturbed=False, rho=0.0, extras=extras)
        finish = getattr(closure, "finish", None)
        if finish is not None:
            finish()
        return loss

    def load_variant_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing of its own to restore (the momentum is the base optimizer's); forget the looked-up buffers."""
        self._found = None
