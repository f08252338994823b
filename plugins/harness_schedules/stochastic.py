"""The Bernoulli scheduler of SS-SAM: each step perturbs with probability p, from its own random stream."""

from __future__ import annotations

import random
from typing import Any

from harness import PerturbationScheduler, StepContext, component_seed
from harness_schedules.checks import check_rho, check_unit_interval


class Bernoulli(PerturbationScheduler):
    """Perturb with probability ``p`` at each step, independently of the other steps (SS-SAM).

    SS-SAM "randomly selects SAM or ERM according to a Bernoulli trial with success probability 0.5".
    001_543051aac35e9f16.txt (AE-SAM), Sec. 4.1 (baselines) and Sec. 3.3 (xi_t drawn from a Bernoulli
    distribution); shared/papers/seed_looksam_aesam.md, Part B.1.

    The draws come from a private ``random.Random``, never from the global Python or torch generators,
    so switching schedulers does not change the model's initialisation, the data order or dropout
    masks. Its seed is ``harness.component_seed(seed, "bernoulli")``: with ``seed`` None (the default)
    each run seed draws its own decisions, so the spread over seeds includes the scheduler's; an
    integer ``seed`` pins them whatever the run seed. ``state_dict`` carries the generator's state, so
    a resumed run draws the same decisions as an uninterrupted one. One draw is taken per step whatever
    ``p`` is, so ``p=1`` always and ``p=0`` never perturbs.
    """

    def __init__(self, rho: float = 0.05, p: float = 0.5, seed: int | None = None) -> None:
        self.rho = check_rho("bernoulli", "rho", rho)
        self.p = check_unit_interval("bernoulli", "p", p)
        self.seed = component_seed(seed, "bernoulli")
        self._random = random.Random(self.seed)

    def decide(self, ctx: StepContext) -> tuple[bool, float]:
        if self._random.random() < self.p:
            return True, self.rho
        return False, 0.0

    def expected_perturbed_fraction(self, total_steps: int) -> float | None:
        """1 for ``p=1`` and 0 for ``p=0``; None otherwise: ``p`` is only the share's expectation, and a
        run's own share (a binomial draw) is what its cost follows."""
        return self.p if self.p in (0.0, 1.0) else None

    def state_dict(self) -> dict[str, Any]:
        return {"random_state": self._random.getstate()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        version, internal, gauss_next = state["random_state"]
        # A state that went through JSON or YAML comes back with lists where getstate() had tuples.
        self._random.setstate((version, tuple(internal), gauss_next))
