"""The deterministic, stateless schedulers: perturb every step (SAM), never (ERM), or every k-th step (SAM-k)."""

from __future__ import annotations

from harness import PerturbationScheduler, StepContext
from harness_schedules.checks import check_integer, check_rho


class Constant(PerturbationScheduler):
    """Perturb at every step with radius ``rho`` (003_dc502e6d0d8ca36d.txt, Alg. 1)."""

    def __init__(self, rho: float = 0.05) -> None:
        self.rho = check_rho("constant", "rho", rho)

    def decide(self, ctx: StepContext) -> tuple[bool, float]:
        return True, self.rho

    def expected_perturbed_fraction(self, total_steps: int) -> float:
        return 1.0


class Never(PerturbationScheduler):
    """Never perturb."""

    def decide(self, ctx: StepContext) -> tuple[bool, float]:
        return False, 0.0

    def expected_perturbed_fraction(self, total_steps: int) -> float:
        return 0.0


class Periodic(PerturbationScheduler):
    """Perturb every ``k``-th step with radius ``rho``: SAM-k and LookSAM-k.

    000_821cd26b06e61c4d.txt (LookSAM), Alg. 1 ("if t % k = 0") and Sec. 3.1 (the SAM-k baseline);
    shared/papers/seed_looksam_aesam.md, Part A.1-A.2. Step ``t`` (counted from 0) perturbs iff
    ``(t - offset) % k == 0``.

    Alg. 1 counts ``t`` from 1, so taken literally the first SAM step is the k-th one and LookSAM
    would have no g_v to reuse on the k - 1 steps before it; the paper is silent on those steps
    (seed notes A.2). The default ``offset=0`` makes step 0 a SAM step, so reuse always has a g_v;
    ``offset=k - 1`` reproduces the literal 1-based indexing. ``k=1`` is ``constant``.
    """

    def __init__(self, rho: float = 0.05, k: int = 5, offset: int = 0) -> None:
        self.rho = check_rho("periodic", "rho", rho)
        self.k = check_integer("periodic", "k", k, minimum=1)
        self.offset = check_integer("periodic", "offset", offset)

    def decide(self, ctx: StepContext) -> tuple[bool, float]:
        if (ctx.step - self.offset) % self.k == 0:
            return True, self.rho
        return False, 0.0

    def expected_perturbed_fraction(self, total_steps: int) -> float:
        """``1 / k`` whatever the offset (a block of ``k`` consecutive steps holds one SAM step)."""
        return 1.0 / self.k
