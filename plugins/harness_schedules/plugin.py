"""Registration of the perturbation schedulers of ``harness_schedules`` (cheap to import)."""

from __future__ import annotations

from harness import SchedulerSpec, hookimpl


@hookimpl
def register_schedulers() -> list[SchedulerSpec]:
    return [
        SchedulerSpec(
            name="constant",
            factory="harness_schedules.basic:Constant",
            defaults={"rho": 0.05},
            description="Perturb every step with the same rho (SAM)",
            paper="003_dc502e6d0d8ca36d.txt (SAM), Alg. 1",
        ),
        SchedulerSpec(
            name="never",
            factory="harness_schedules.basic:Never",
            description="Never perturb (ERM through the sharpness-aware protocol)",
        ),
    ]
