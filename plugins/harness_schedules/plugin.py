"""Registration of the perturbation schedulers of ``harness_schedules`` (cheap to import: no torch)."""

from __future__ import annotations

import math

from harness import SchedulerSpec, hookimpl

LOOKSAM = "000_821cd26b06e61c4d.txt (LookSAM)"
AE_SAM = "001_543051aac35e9f16.txt (AE-SAM)"


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
        SchedulerSpec(
            name="periodic",
            factory="harness_schedules.basic:Periodic",
            defaults={"rho": 0.05, "k": 5, "offset": 0},
            description="Perturb every k-th step, step 0 first (SAM-k, LookSAM)",
            paper=f"{LOOKSAM}, Alg. 1 and Sec. 3.1 (SAM-k)",
        ),
        SchedulerSpec(
            name="bernoulli",
            factory="harness_schedules.stochastic:Bernoulli",
            defaults={"rho": 0.05, "p": 0.5, "seed": None},
            description="Perturb with probability p at each step, from a private stream seeded by the run (SS-SAM)",
            paper=f"{AE_SAM}, Sec. 4.1 (SS-SAM baseline, p=0.5)",
        ),
        SchedulerSpec(
            name="adaptive",
            factory="harness_schedules.adaptive:Adaptive",
            defaults={
                "rho": 0.05,
                "lambda1": -1.0,
                "lambda2": 1.0,
                "delta": 0.9,
                "mu_init": 0.0,
                "var_init": math.exp(-10),
            },
            description="Perturb when ||g||^2 >= mu + c_t sigma (EMA statistics, c_t from lambda2 to lambda1) (AE-SAM)",
            paper=f"{AE_SAM}, Sec. 3.2, Eq. 4-5 and Alg. 1",
        ),
        SchedulerSpec(
            name="lr_linked",
            factory="harness_schedules.lr_linked:LrLinked",
            defaults={"rho_max": 0.04, "rho_min": 0.02, "clamp": False},
            description="Perturb every step with rho linear in the learning rate, rho_min..rho_max (GSAM)",
            paper="004_c79f6670b818170d.txt (GSAM), Alg. 1 step 0",
        ),
        SchedulerSpec(
            name="delayed",
            factory="harness_schedules.delayed:Delayed",
            defaults={"fraction": 0.1, "inner": "constant", "inner_params": {}},
            description="No perturbation for the first fraction of training, then the inner scheduler (nuSAM)",
            paper="002_aa5e854e0246be55.txt (nuSAM), Sec. 5.1.1 (perturbation delay, 10%)",
        ),
    ]
