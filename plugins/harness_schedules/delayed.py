"""Perturbation delay: no perturbation for the first fraction of training, then another scheduler decides."""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from harness import PerturbationScheduler, Registry, StepContext
from harness.errors import UnknownNameError
from harness_schedules.checks import check_unit_interval, require_total_steps

_NO_PARAMS: Mapping[str, Any] = MappingProxyType({})


class Delayed(PerturbationScheduler):
    """ERM for the first ``fraction`` of the run, then the scheduler named ``inner`` decides.

    002_aa5e854e0246be55.txt (nuSAM), Sec. 5.1.1 ("we delay perturbation for both methods until after
    10% of the epochs (after the learning rate warmup)"), Sec. 5.2.2 and Table 12 (10% for SAM and nuSAM,
    0% for SAM-ON); shared/papers/seed_nusam.md, section 3.7.

    Step ``t`` perturbs only from the first step with ``t >= fraction * total_steps`` on (with
    ``fraction=0.1`` and 100 steps: from step 10); from there the inner scheduler receives the same
    step context, global step number included, so an inner ``periodic`` keeps its phase and an inner
    ``adaptive`` its ``c_t`` schedule. The inner scheduler is not consulted during the delay, so its
    state (AE-SAM's moving averages, a Bernoulli stream) starts when perturbation does.

    ``inner`` is a registered scheduler name and ``inner_params`` its parameters (``rho`` lives there).
    The inner scheduler is built at construction through the registry of the installed plugins.
    """

    def __init__(
        self, fraction: float = 0.1, inner: str = "constant", inner_params: Mapping[str, Any] = _NO_PARAMS
    ) -> None:
        self.fraction = check_unit_interval("delayed", "fraction", fraction)
        self.inner_name = inner
        self.inner_params = dict(inner_params)
        self.inner = _build_inner(inner, self.inner_params)
        self._deciding = False  # whether the last decide() was the inner scheduler's

    def first_step(self, total_steps: int) -> int:
        """The first step the inner scheduler decides, ``ceil(fraction * total_steps)``."""
        if self.fraction == 0:
            return 0
        # Rounding first keeps float noise (0.07 * 100 = 7.000000000000001) from delaying one step more.
        return math.ceil(round(self.fraction * require_total_steps("delayed", total_steps), 9))

    def decide(self, ctx: StepContext) -> tuple[bool, float]:
        self._deciding = ctx.step >= self.first_step(ctx.total_steps)
        if not self._deciding:
            return False, 0.0
        return self.inner.decide(ctx)

    def warmup_steps(self, total_steps: int) -> int:
        """The delay, or the inner scheduler's own warm-up if it ends later (it counts global steps too)."""
        return max(self.first_step(total_steps), self.inner.warmup_steps(total_steps))

    def expected_perturbed_fraction(self, total_steps: int) -> float | None:
        """The inner scheduler's: after the delay it decides every step."""
        return self.inner.expected_perturbed_fraction(total_steps)

    def diagnostics(self) -> dict[str, float]:
        """The inner scheduler's (of its last decision: during the delay, none)."""
        return self.inner.diagnostics() if self._deciding else {}

    def state_dict(self) -> dict[str, Any]:
        return {"inner": self.inner.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state["inner"])


def _build_inner(name: str, params: dict[str, Any]) -> PerturbationScheduler:
    registry = Registry.from_plugins()
    try:
        return registry.create("scheduler", name, **params)
    except UnknownNameError as error:
        raise ValueError(f"delayed scheduler: inner={name!r} is not a registered scheduler: {error}") from None
    except TypeError as error:
        accepted = ", ".join(registry.get("scheduler", name).defaults) or "none"
        raise TypeError(
            f"delayed scheduler: inner_params {params!r} do not fit the scheduler {name!r} "
            f"(its parameters: {accepted}): {error}"
        ) from None
