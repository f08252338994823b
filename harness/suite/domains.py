"""A preset's domain (the models its paper trains) and the ``extension`` a suite states to leave it.

A preset may declare the model names of its paper's experiments (``PresetSpec.models``): nuSAM's paper
trains ViTs and MLP-Mixers only and perturbs weight matrices (shared/papers/seed_nusam.md 1: "no
ResNet, and no CNN experiment"; 3: conv kernels reshaped to matrices "would be a harness extension").
A run of such a preset on another model is the suite's extension, not the paper's method, and the
suite says so: an ``extension: "<why>"`` on the method entry, or one set by a condition
(``harness.suite.conditions``). The run carries the text (``RunSpec.extension``, a label outside the
config, so it changes no run id) into its result row, ``harness validate`` and the report. Without one,
``check_domains`` refuses the suite, so no such run can pass as the paper's method. A method that swaps
the preset's optimizer or scheduler for another (``{preset: layersam, name: lamb, scheduler: {name:
never}}``, the base optimizer alone) is not the paper's method on any model, and is not checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness.contract.run_spec import RunSpec
from harness.plugins import Registry
from harness.suite.checks import MISSING, Checker


def check_domains(
    checker: Checker, registry: Registry, runs: Sequence[RunSpec], methods: Sequence[dict[str, Any]]
) -> None:
    """Refuse a run of a preset outside its paper's models that states no ``extension``."""
    index = {method["name"]: i for i, method in enumerate(methods)}
    for run in runs:
        preset = registry.get("preset", run.preset) if run.preset and not run.extension else None
        if preset is None or (run.optimizer, run.scheduler) != (preset.optimizer, preset.scheduler):
            continue  # no preset, an extension stated, or another method built from a preset's parts
        if preset.models and run.model not in preset.models:
            raise checker.fail(
                f"methods[{index[run.method]}].extension",
                MISSING,
                f"a text saying why {run.method!r} runs on model {run.model!r}: preset {run.preset!r} is its "
                f"paper's method on {', '.join(preset.models)} only ({preset.paper or 'its paper'}), so on "
                f"{run.model!r} it is an extension, never the paper's method. State it on the method entry "
                f'(extension: "<why>") or in a condition (when: {{method: {run.method}, model: {run.model}}}, '
                f'set: {{extension: "<why>"}})',
            )
