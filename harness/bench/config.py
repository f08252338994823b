"""What ``harness bench`` measures (``BenchConfig``) and the settings every candidate shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from harness.contract.run_spec import RUN_DEFAULTS
from harness.errors import UsageError
from harness.plugins import Registry
from harness.run.precision import MODES

DEFAULT_METHODS = ("erm", "sam", "looksam", "sam-k", "ae-sam", "ss-sam", "gsam", "nusam")
#: Reference implementations: kozistr's pytorch-optimizer SAM and GSAM, bare hand-written loops.
REFERENCES = ("po-sam", "po-gsam", "bare-erm", "bare-sam")
#: The harness method each reference is compared with (harness time / reference time).
COUNTERPARTS = {"po-sam": "sam", "po-gsam": "gsam", "bare-erm": "erm", "bare-sam": "sam"}
#: The base optimizer every candidate shares unless ``preset_base``: the suites' default.
COMMON_BASE: dict[str, Any] = dict(RUN_DEFAULTS["base_optimizer"])
#: The learning-rate schedule of every preset's run: the suites' default, over the bench's steps.
LR_SCHEDULE: dict[str, Any] = dict(RUN_DEFAULTS["lr_schedule"])
#: The radius of the bare SAM loop and of pytorch-optimizer's SAM (the ``sam`` preset's).
SAM_RHO = 0.05


@dataclass
class BenchConfig:
    """What to measure. ``threads`` empty: the current ``torch.get_num_threads()`` (CPU only)."""

    model: str = "resnet18-cifar"
    model_params: dict[str, Any] = field(default_factory=dict)
    batch: int = 64
    methods: tuple[str, ...] = DEFAULT_METHODS
    references: tuple[str, ...] = REFERENCES
    threads: tuple[int, ...] = ()
    device: str = "cpu"
    repeats: int = 5
    warmup: int = 3
    steps: int = 5
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    preset_base: bool = False
    input_shape: tuple[int, ...] = (3, 32, 32)
    num_classes: int = 10
    seed: int = 0

    @property
    def total_steps(self) -> int:
        """The length of every candidate's run: its warm-up and timed steps (a delay may add untimed ones)."""
        return self.warmup + self.repeats * self.steps

    def check(self, registry: Registry) -> None:
        """Refuse bad settings before anything is built (``UsageError``)."""
        if self.batch < 1 or self.repeats < 1 or self.steps < 1 or self.warmup < 0:
            raise UsageError(
                f"bench: need batch, repeats and steps >= 1 and warmup >= 0, got batch={self.batch}, "
                f"repeats={self.repeats}, steps={self.steps}, warmup={self.warmup}"
            )
        if self.precision not in MODES:
            raise UsageError(f"bench: precision must be one of {MODES}, got {self.precision!r}")
        if any(t < 1 for t in self.threads):
            raise UsageError(f"bench: thread counts must be >= 1, got {list(self.threads)}")
        if not self.methods:
            raise UsageError("bench: no methods to measure")
        for name in self.methods:
            registry.get("preset", name)  # UnknownNameError (a HarnessError) with a suggestion
        registry.get("model", self.model)
        unknown = [name for name in self.references if name not in REFERENCES]
        if unknown:
            raise UsageError(f"bench: unknown reference(s) {unknown}; known: {', '.join(REFERENCES)}")
        device = torch.device(self.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UsageError("bench: --device cuda, but torch sees no CUDA device")

    def base_settings(self, preset: Any) -> dict[str, Any]:
        """The base optimizer of a preset's candidate: ``COMMON_BASE``, or with ``preset_base`` the preset's own.

        A preset's own base optimizer of another name replaces ``COMMON_BASE`` (momentum does not carry
        over to AdamW); without a name it updates it. References (``preset`` None) always share ``COMMON_BASE``.
        """
        if self.preset_base and preset is not None and preset.base_optimizer:
            if "name" in preset.base_optimizer:
                return dict(preset.base_optimizer)
            return {**COMMON_BASE, **preset.base_optimizer}
        return dict(COMMON_BASE)
