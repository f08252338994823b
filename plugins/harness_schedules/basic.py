"""The stateless schedulers: perturb every step (SAM), or never (ERM)."""

from __future__ import annotations

from harness import PerturbationScheduler, StepContext


class Constant(PerturbationScheduler):
    """Perturb at every step with radius ``rho`` (003_dc502e6d0d8ca36d.txt, Alg. 1)."""

    def __init__(self, rho: float = 0.05) -> None:
        if rho < 0:
            raise ValueError(f"constant scheduler: rho must be >= 0, got {rho}")
        self.rho = float(rho)

    def decide(self, ctx: StepContext) -> tuple[bool, float]:
        return True, self.rho


class Never(PerturbationScheduler):
    """Never perturb."""

    def decide(self, ctx: StepContext) -> tuple[bool, float]:
        return False, 0.0
