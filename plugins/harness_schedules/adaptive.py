"""AE-SAM's adaptive policy: perturb when the squared gradient norm is high for the current phase of training."""

from __future__ import annotations

import math
from typing import Any

from harness import PerturbationScheduler, StepContext
from harness_schedules.checks import check_rho, require_total_steps


def _weighted(weight: float, value: float) -> float:
    """``weight * value``, taken as 0 when the weight is 0 (so an infinite lambda with no weight drops out)."""
    return 0.0 if weight == 0 else weight * value


class Adaptive(PerturbationScheduler):
    """Perturb iff ``||g_t||^2 >= mu_t + c_t sigma_t`` (AE-SAM, AE-LookSAM).

    001_543051aac35e9f16.txt (AE-SAM), Sec. 3.2, Eq. 4-5 and Alg. 1; shared/papers/seed_looksam_aesam.md,
    Part B.2-B.4. With ``s_t = ||g_t||^2`` the squared norm of the clean mini-batch gradient:

    - ``mu_t = delta mu_{t-1} + (1 - delta) s_t`` (Eq. 4);
    - ``var_t = delta var_{t-1} + (1 - delta) (s_t - mu_t)^2`` (Eq. 5, with the already updated ``mu_t``);
    - ``c_t = (t / T) lambda1 + (1 - t / T) lambda2``: the threshold falls linearly from ``lambda2`` at
      ``t = 0`` to ``lambda1`` at ``t = T``, so SAM is used more often late in training.

    Defaults are the paper's: ``delta = 0.9``, ``mu_{-1} = 0``, ``var_{-1} = e^-10`` (Alg. 1) and
    ``(lambda1, lambda2) = (-1, 1)``, the AE-SAM setting of Sec. 4.1-4.3, which uses SAM on about half
    of the steps (AE-LookSAM uses (0, 2) in Sec. 4.1-4.2, about 20%; the closed-form estimate of %SAM is
    in the seed notes B.4). Infinite lambdas are allowed: ``-inf`` everywhere is SAM,
    ``+inf`` everywhere is ERM, and a lambda whose weight is 0 (``lambda1`` at ``t = 0``) has no effect.
    Lambdas of opposite infinite signs are refused (the threshold would be undefined mid-run).

    Reading ``s_t`` is the one host synchronization the step protocol allows (DESIGN.md section 4). The
    schedule needs ``T``, so ``total_steps`` must be set. After each ``decide`` the attributes ``grad_sq_norm``
    (``s_t``), ``mu``, ``var``, ``c_t`` and ``threshold`` hold the values of that step; ``diagnostics`` returns
    them, so a run's step trace can draw 001 Figs. 1-2 (``||g_t||^2`` against the threshold).
    """

    def __init__(
        self,
        rho: float = 0.05,
        lambda1: float = -1.0,
        lambda2: float = 1.0,
        delta: float = 0.9,
        mu_init: float = 0.0,
        var_init: float = math.exp(-10),
    ) -> None:
        self.rho = check_rho("adaptive", "rho", rho)
        self.lambda1, self.lambda2 = float(lambda1), float(lambda2)
        if math.isnan(self.lambda1) or math.isnan(self.lambda2):
            raise ValueError(f"adaptive scheduler: lambda1 and lambda2 must be numbers, got {lambda1!r}, {lambda2!r}")
        if math.isinf(self.lambda1) and math.isinf(self.lambda2) and self.lambda1 != self.lambda2:
            raise ValueError(
                f"adaptive scheduler: lambda1={self.lambda1} and lambda2={self.lambda2} are infinite with opposite "
                "signs, which leaves the threshold c_t undefined between the ends of the run; use finite values, or "
                "the same infinity for both (-inf: always SAM, inf: never)"
            )
        self.delta = float(delta)
        if not 0.0 <= self.delta < 1.0:
            raise ValueError(f"adaptive scheduler: delta (the EMA forgetting rate) must lie in [0, 1), got {delta!r}")
        self.mu = float(mu_init)
        self.var = float(var_init)
        if not math.isfinite(self.mu):
            raise ValueError(f"adaptive scheduler: mu_init must be finite, got {mu_init!r}")
        if not (math.isfinite(self.var) and self.var >= 0):
            raise ValueError(f"adaptive scheduler: var_init must be a finite number >= 0, got {var_init!r}")
        self.grad_sq_norm = math.nan
        self.c_t = math.nan
        self.threshold = math.nan

    def threshold_coefficient(self, step: int, total_steps: int) -> float:
        """``c_t = (t/T) lambda1 + (1 - t/T) lambda2``, with infinite lambdas of weight 0 dropped.

        ``t/T`` is capped at 1, so steps past ``total_steps`` keep ``c_t = lambda1`` rather than
        extrapolating the line.
        """
        progress = min(step / total_steps, 1.0)
        return _weighted(progress, self.lambda1) + _weighted(1.0 - progress, self.lambda2)

    def decide(self, ctx: StepContext) -> tuple[bool, float]:
        total_steps = require_total_steps("adaptive", ctx.total_steps)
        s = self.grad_sq_norm = float(ctx.grad_sq_norm)
        self.mu = self.delta * self.mu + (1.0 - self.delta) * s
        self.var = self.delta * self.var + (1.0 - self.delta) * (s - self.mu) ** 2
        self.c_t = self.threshold_coefficient(ctx.step, total_steps)
        if math.isinf(self.c_t):  # decides on its own: inf * sigma would be nan when sigma is 0
            self.threshold = self.c_t
            perturb = self.c_t < 0
        else:
            self.threshold = self.mu + self.c_t * math.sqrt(self.var)
            perturb = s >= self.threshold
        return (True, self.rho) if perturb else (False, 0.0)

    def diagnostics(self) -> dict[str, float]:
        """``grad_sq_norm`` (s_t), ``threshold`` (mu_t + c_t sigma_t), ``mu``, ``sigma`` and ``c_t`` of the last
        decision."""
        return {
            "grad_sq_norm": self.grad_sq_norm,
            "threshold": self.threshold,
            "mu": self.mu,
            "sigma": math.sqrt(self.var),
            "c_t": self.c_t,
        }

    def expected_perturbed_fraction(self, total_steps: int) -> float | None:
        """1 or 0 when both lambdas are the same infinity (always SAM, never); None otherwise: the share
        follows the gradient norms (seed notes B.4 estimate it, but only a run can measure it)."""
        if self.lambda1 == self.lambda2 and math.isinf(self.lambda1):
            return 1.0 if self.lambda1 < 0 else 0.0
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"mu": self.mu, "var": self.var}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mu = float(state["mu"])
        self.var = float(state["var"])
