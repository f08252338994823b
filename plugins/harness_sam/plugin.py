"""Registration of the optimizers and presets of ``harness_sam`` (cheap to import: no torch)."""

from __future__ import annotations

from harness import OptimizerSpec, PresetSpec, hookimpl

SAM_PAPER = "003_dc502e6d0d8ca36d.txt (Foret et al., SAM), Alg. 1 and eq. 2-3"


@hookimpl
def register_optimizers() -> list[OptimizerSpec]:
    return [
        OptimizerSpec(
            name="erm",
            factory="harness_sam.erm:ERM",
            description="Empirical risk minimization: the base optimizer alone, one gradient evaluation per step",
        ),
        OptimizerSpec(
            name="sam",
            factory="harness_sam.sam:SAM",
            defaults={"eps": 1e-12},
            description="Sharpness-aware minimization, p=2 perturbation rho g / (||g|| + eps)",
            paper=SAM_PAPER,
        ),
    ]


@hookimpl
def register_presets() -> list[PresetSpec]:
    return [
        PresetSpec(
            name="erm",
            optimizer="erm",
            scheduler="never",
            description="Baseline: the base optimizer with no perturbation",
        ),
        PresetSpec(
            name="sam",
            optimizer="sam",
            scheduler="constant",
            scheduler_params={"rho": 0.05},
            description="SAM with rho=0.05, the paper's 'solid default value'",
            paper="003_dc502e6d0d8ca36d.txt, Sec. 3 and App. C.3 (rho=0.05)",
        ),
    ]
