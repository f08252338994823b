"""Registration (cheap to import: the optimizer is named by its "module:attr" path, not imported)."""

from harness import OptimizerSpec, PresetSpec, hookimpl


@hookimpl
def register_optimizers():
    return [
        OptimizerSpec(
            "example-random-sam",
            "harness_example_random_sam.optim:NoisySAM",
            defaults={"noise": 1.0, "seed": None},
            description="SAM whose ascent direction is the gradient plus Gaussian noise of the gradient's norm",
        )
    ]


@hookimpl
def register_presets():
    return [PresetSpec("example-random-sam", optimizer="example-random-sam", scheduler_params={"rho": 0.05})]
