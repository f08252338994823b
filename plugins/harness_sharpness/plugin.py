"""Registration of the sharpness metrics of ``harness_sharpness`` (cheap to import: no torch).

Paper files (shared/papers/): 003 = SAM (Foret et al.), 004 = GSAM (Zhuang et al.), 001 = AE-SAM (Jiang et
al.). ``defaults`` list every keyword of each factory with its default (a test checks them against the
signatures), so suites may set exactly these keys.
"""

from __future__ import annotations

from harness import MetricSpec, hookimpl

SAM_SPECTRUM = "003_dc502e6d0d8ca36d.txt (SAM), Sec. 4.2; 004_c79f6670b818170d.txt (GSAM), Sec. 5 and Fig. 4"
SAM_SHARPNESS = "003_dc502e6d0d8ca36d.txt (SAM), eq. 1, Sec. 4.1 (m-sharpness), App. C.6 and Table 11"
GSAM_GAP = "004_c79f6670b818170d.txt (GSAM), Sec. 3, eq. 4, Lemmas 3.2-3.3"
AESAM_VARIANCE = "001_543051aac35e9f16.txt (AE-SAM), Sec. 3.1, eq. 3; Sec. 4.5, Fig. 7"


@hookimpl
def register_metrics() -> list[MetricSpec]:
    return [
        MetricSpec(
            name="hessian_max_eig",
            factory="harness_sharpness.hessian_max_eig:HessianMaxEig",
            defaults={"max_iterations": 100, "tolerance": 1e-3, "top_k": 1, "seed": 0},
            description="Top-k Hessian eigenvalues (largest magnitude) by power iteration with deflation",
            paper=SAM_SPECTRUM,
        ),
        MetricSpec(
            name="hessian_trace",
            factory="harness_sharpness.hessian_trace:HessianTrace",
            defaults={"samples": 100, "seed": 0},
            description="Hessian trace by Hutchinson's estimator (Rademacher vectors), with its standard error",
            paper="003_dc502e6d0d8ca36d.txt (SAM), Sec. 4.2 (the spectrum's bulk)",
        ),
        MetricSpec(
            name="sam_sharpness",
            factory="harness_sharpness.sam_sharpness:SamSharpness",
            defaults={"rho": 0.05, "steps": 1, "step_size": None, "m": 0},
            description="max over ||e|| <= rho of L(w+e) - L(w) by k-step projected ascent; m-sharpness with m > 0",
            paper=SAM_SHARPNESS,
        ),
        MetricSpec(
            name="surrogate_gap",
            factory="harness_sharpness.surrogate_gap:SurrogateGap",
            defaults={"rho": 0.05},
            description="GSAM's surrogate gap h = f(w_adv) - f(w) and the eigenvalue estimate 2h/rho^2",
            paper=GSAM_GAP,
        ),
        MetricSpec(
            name="grad_stats",
            factory="harness_sharpness.grad_stats:GradStats",
            description="E_B ||g_B||^2, ||g_D||^2 and the gradient variance E_B ||g_B - g_D||^2 over the batches",
            paper=AESAM_VARIANCE,
        ),
    ]
