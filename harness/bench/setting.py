"""One setting's candidates (``Bench``): each preset as a run the runner builds and steps, and the references.

A preset is a ``RunSpec`` (the preset's optimizer and scheduler with their parameters, the model, the
batch size, precision, channels-last and compile, the suites' learning-rate schedule) over a training set
of one batch, the bench's random tensors, for ``total_steps`` epochs: ``harness.run.build.build`` builds it,
as it builds any run, and a step is ``harness.run.runner.train_step``, the training loop's own step. Its
scheduler says how many steps to spend untimed (``warmup_steps``) and what share of steps perturb
(``expected_perturbed_fraction``). A reference is built by the same ``build`` (its counterpart preset's
run, for the same model, base optimizer and precision) and steps its own loop (``harness.bench.references``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from harness.bench.candidate import Candidate
from harness.bench.config import COMMON_BASE, COUNTERPARTS, LR_SCHEDULE, REFERENCES, BenchConfig
from harness.bench.references import bare, kozistr
from harness.contract.data import ClassificationData
from harness.contract.run_spec import RunSpec
from harness.plugins import Registry
from harness.run.build import Setup, build
from harness.run.precision import Precision
from harness.run.row import RunState
from harness.run.runner import train_step

#: The ``RunSpec.dataset`` of a bench run (its data is handed to ``build``, never looked up).
DATASET = "bench-batch"


class Bench:
    """Builds the candidates of one setting (model, device, precision) on one batch of random tensors."""

    def __init__(self, config: BenchConfig, registry: Registry, model_name: str | None = None) -> None:
        self.config = config
        self.registry = registry
        self.model_name = model_name or config.model
        self.device = torch.device(config.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # one input shape throughout: let cuDNN pick its kernels
        generator = torch.Generator().manual_seed(config.seed)
        inputs = torch.randn(config.batch, *config.input_shape, generator=generator).to(self.device)
        precision = Precision(config.precision, self.device, channels_last=config.channels_last)
        self.inputs = precision.prepare_inputs(inputs)  # converted once, for every candidate alike
        self.targets = torch.randint(0, config.num_classes, (config.batch,), generator=generator).to(self.device)
        self.data = ClassificationData(
            name=DATASET,
            train_x=self.inputs,
            train_y=self.targets,
            test_x=self.inputs,
            test_y=self.targets,
            num_classes=config.num_classes,
        )
        self.notes: list[str] = []

    def run_spec(self, preset_name: str, base_settings: dict[str, Any]) -> RunSpec:
        """The run of preset ``preset_name`` on the bench's batch, ``total_steps`` epochs of one step each."""
        config, preset = self.config, self.registry.get("preset", preset_name)
        return RunSpec(
            suite="bench",
            method=preset_name,
            preset=preset_name,
            optimizer=preset.optimizer,
            optimizer_params=dict(preset.optimizer_params),
            scheduler=preset.scheduler,
            scheduler_params=dict(preset.scheduler_params),
            base_optimizer=base_settings,
            lr_schedule=dict(LR_SCHEDULE),
            model=self.model_name,
            model_params=dict(config.model_params),
            dataset=DATASET,
            dataset_params={},
            noise_rate=0.0,
            seed=config.seed,
            epochs=config.total_steps,
            batch_size=config.batch,
            eval_batch_size=config.batch,
            device=config.device,
            precision=config.precision,
            channels_last=config.channels_last,
            compile=config.compile,
        )

    def build_run(self, run: RunSpec) -> Setup:
        """``harness.run.build.build`` of ``run`` on the bench's batch."""
        return build(run, self.registry, self.data)

    def preset(self, name: str) -> Candidate:
        """A preset built and stepped by the runner (``build`` and ``train_step``)."""
        settings = self.config.base_settings(self.registry.get("preset", name))
        run = self.run_spec(name, settings)
        setup = self.build_run(run)
        scheduler = self.registry.create("scheduler", run.scheduler, **run.scheduler_params)  # asked, not stepped
        state = RunState()
        loss_sum = torch.zeros((), device=setup.device)
        inputs, targets = self.inputs, self.targets

        def step() -> None:
            nonlocal loss_sum
            loss, _ = train_step(run, setup, state, inputs, targets)
            loss_sum += loss  # the training loop's device-side loss sum

        total_steps = self.config.total_steps
        return Candidate(
            name=name,
            kind="preset",
            step=step,
            optimizer=setup.optimizer,
            model=setup.model,
            base_optimizer=setup.base_optimizer,
            optimizer_name=run.optimizer,
            scheduler_name=run.scheduler,
            base_settings=settings,
            expected_fraction=scheduler.expected_perturbed_fraction(total_steps)
            if getattr(setup.optimizer, "second_pass", True)
            else 0.0,
            warmup=max(self.config.warmup, scheduler.warmup_steps(total_steps)),
            state=state,
        )

    def reference(self, name: str) -> Candidate | None:
        """A reference implementation, or None (with a note) when it cannot run here."""
        if self.config.precision == "fp16":
            self.notes.append(f"{name}: not run with fp16 (no loss scaling in the references)")
            return None
        run = self.run_spec(COUNTERPARTS[name], dict(COMMON_BASE))
        if name.startswith("po-"):
            try:
                import pytorch_optimizer
            except ImportError:
                self.notes.append(f"{name}: pytorch-optimizer is not installed (pip install pytorch-optimizer)")
                return None
            candidate = kozistr(name, pytorch_optimizer, run, self.build_run(run), self.inputs, self.targets)
        else:
            candidate = bare(name, self.build_run(run), self.inputs, self.targets)
        return dataclasses.replace(candidate, base_settings=dict(run.base_optimizer), warmup=self.config.warmup)

    def build(self, name: str) -> Candidate | None:
        return self.reference(name) if name in REFERENCES else self.preset(name)
