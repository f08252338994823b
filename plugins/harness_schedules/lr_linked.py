"""GSAM's radius schedule: rho follows the learning rate linearly between rho_min and rho_max."""

from __future__ import annotations

from harness import PerturbationScheduler, StepContext
from harness_schedules.checks import check_rho


class LrLinked(PerturbationScheduler):
    """Perturb at every step with ``rho_t = rho_min + (rho_max - rho_min) (lr_t - lr_min) / (lr_max - lr_min)``.

    004_c79f6670b818170d.txt (GSAM), Alg. 1 step 0, and Thm. 5.1 ("rho_t proportional to the learning
    rate"); shared/papers/seed_sam_gsam.md, Part B.2-B.3. ``lr_t``, ``lr_max`` and ``lr_min`` come from
    the step context (the runner sets the range from the base learning rate and the schedule's floor).
    When ``lr_max == lr_min`` the schedule is flat and ``rho_t = rho_max``; ``rho_max == rho_min`` gives
    SAM's constant radius.

    During warmup ``lr_t`` may lie below ``lr_min``, and then the formula gives ``rho_t < rho_min``
    (negative when ``rho_min`` is small). The paper does not discuss it and the reference code
    (big_vision) does not clamp, so the default ``clamp=False`` follows it; ``clamp=True`` keeps
    ``rho_t`` within ``[rho_min, rho_max]``.
    """

    def __init__(self, rho_max: float = 0.04, rho_min: float = 0.02, clamp: bool = False) -> None:
        self.rho_max = check_rho("lr_linked", "rho_max", rho_max)
        self.rho_min = check_rho("lr_linked", "rho_min", rho_min)
        if self.rho_min > self.rho_max:
            raise ValueError(
                f"lr_linked scheduler: rho_min={self.rho_min} is above rho_max={self.rho_max}; "
                "rho_t grows with the learning rate, so rho_min must be <= rho_max"
            )
        self.clamp = bool(clamp)

    def rho_at(self, lr: float, lr_max: float, lr_min: float) -> float:
        """The radius for learning rate ``lr`` on a schedule that runs between ``lr_min`` and ``lr_max``."""
        if lr_max == lr_min:
            return self.rho_max
        rho = self.rho_min + (self.rho_max - self.rho_min) * (lr - lr_min) / (lr_max - lr_min)
        if self.clamp:
            rho = min(max(rho, self.rho_min), self.rho_max)
        return rho

    def decide(self, ctx: StepContext) -> tuple[bool, float]:
        return True, self.rho_at(ctx.lr, ctx.lr_max, ctx.lr_min)

    def expected_perturbed_fraction(self, total_steps: int) -> float:
        return 1.0
