"""Build a run's components from its ``RunSpec`` and the plugin registry.

The dataset, the model (precision and channels-last applied), the base optimizer (timm's optimizer
factory), the learning-rate schedule (timm's scheduler factory, stepped per update), the
perturbation scheduler and the sharpness-aware optimizer, and the seeding that makes a run
reproducible. ``Setup`` holds what the training loop needs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.contract.data import ClassificationData
from harness.contract.run_spec import RunSpec
from harness.contract.seeding import building_with
from harness.plugins import Registry
from harness.run import distributed
from harness.run.closure import LossFn, batchnorm_modules
from harness.run.metrics import Batch, Metric, metric_batches
from harness.run.precision import Precision, prepare_model
from harness.run.swa import HeldLearningRate, WeightAverage


def resolve_device(name: str) -> torch.device:
    """``auto`` is the first CUDA device when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def clip_before_each_step(base_optimizer: torch.optim.Optimizer, max_norm: float) -> None:
    """Clip the global gradient norm to ``max_norm`` right before every step of ``base_optimizer``.

    The step pre-hook sees the gradient the base optimizer is about to apply, whichever variant built it
    (SAM's perturbed gradient, GSAM's combination, LookSAM's reuse), which is where the papers clip:
    "gradient clipping (after the SAM gradient)" (seed_sam_gsam.md Part D item 7; LookSAM Tables 10-11
    and GSAM App. B.2 clip at 1.0). ``foreach`` kernels, no host synchronization.
    """
    params = [p for group in base_optimizer.param_groups for p in group["params"]]

    def clip(optimizer, args, kwargs) -> None:
        torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], max_norm, foreach=True)

    base_optimizer.register_step_pre_hook(clip)


def build_base_optimizer(model: nn.Module | list[torch.Tensor], settings: dict[str, Any]) -> torch.optim.Optimizer:
    """The base optimizer from timm's factory (``momentum``, ``sgd`` (Nesterov), ``adamw``, ``lamb``...)."""
    from timm.optim import create_optimizer_v2

    options = dict(settings)
    name = options.pop("name")
    return create_optimizer_v2(model, opt=name, **options)


def build_lr_scheduler(optimizer: torch.optim.Optimizer, settings: dict[str, Any], epochs: int, steps_per_epoch: int):
    """A timm learning-rate scheduler stepped after every update (warmup, then decay); the warm-up is
    ``warmup_epochs`` or ``warmup_steps`` (updates) long."""
    from timm.scheduler import create_scheduler_v2

    options = dict(settings)
    name = options.pop("name")
    if "warmup_steps" in options:  # timm counts warm-up in epochs, scaled to updates when stepped per update
        options["warmup_epochs"] = options.pop("warmup_steps") / steps_per_epoch
    scheduler, _ = create_scheduler_v2(
        optimizer, sched=name, num_epochs=epochs, step_on_epochs=False, updates_per_epoch=steps_per_epoch, **options
    )
    return scheduler


def training_loss(label_smoothing: float, l2: float, params: list[torch.Tensor]) -> LossFn:
    """The loss every pass of a step differentiates: cross-entropy with ``label_smoothing``, plus
    (l2/2) sum ||w||^2 over ``params`` (the trained parameters) when ``l2`` > 0.

    The L2 term is weight decay written into the loss, as SAM's reference code trains (its loss includes
    it, so the perturbation e and AE-SAM's ||g||^2 see the decay's gradient l2 w); the base optimizer's
    ``weight_decay`` is the other kind, which the perturbation does not see (shared/papers/seed_sam_gsam.md,
    Part A.2, "Weight decay": google-research/sam adds 0.5 l2_reg sum ||w||^2 to the loss, on every
    parameter). Evaluation (``test_loss``) stays plain cross-entropy. The sharpness metrics get
    ``training_loss(label_smoothing, 0.0, [])`` (``Setup.metric_loss``): they evaluate the loss at weights of
    their own through ``functional_call``, where a term over the model's parameters would stay at the
    trained weights (a constant, with no gradient). ``loss.per_sample`` gives each example's cross-entropy
    (``BatchClosure.sample_losses``, ESAM's data selection).
    """

    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        value = F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
        if l2:
            value = value + 0.5 * l2 * torch.stack([p.square().sum() for p in params]).sum()
        return value

    def per_sample(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Each example's cross-entropy (the L2 term is the same for every example, so it is left out)."""
        return F.cross_entropy(logits, targets, label_smoothing=label_smoothing, reduction="none")

    loss.per_sample = per_sample
    return loss


@dataclass
class Setup:
    """Everything a run trains with, built from the registry."""

    device: torch.device
    data: ClassificationData
    model: nn.Module
    train_model: nn.Module  # ``model``, inside DDP when the run spans several processes, compiled if asked
    first_pass: Any  # the closure's first-pass context (DDP's ``no_sync`` under the local scope) or None
    base_optimizer: torch.optim.Optimizer
    optimizer: torch.optim.Optimizer
    lr_scheduler: Any
    bn_modules: list[nn.Module]
    params: list[torch.Tensor]  # the model's parameters, whose gradients each pass clears
    loss_fn: LossFn  # the training loss (``training_loss``)
    metric_loss: LossFn  # what the metrics evaluate: the training loss without the L2 term
    precision: Precision
    shuffle: torch.Generator
    augment: torch.Generator
    metrics: list[tuple[str, Metric]]
    metric_batches: list[Batch]
    steps_per_epoch: int
    averaged: WeightAverage | None = None  # SWA (``swa_start``): the average of the epoch-end weights


def build(run: RunSpec, registry: Registry, data: ClassificationData | None = None) -> Setup:
    """Seed, then build data, model, base optimizer, schedules, optimizer and metrics for ``run``.

    ``data``: the run's data when the caller holds it already (``harness bench``: one batch of random
    tensors, so a run of ``epochs`` steps); None builds ``run.dataset`` from the registry. Components
    are built under ``run.seed`` (``harness.component_seed`` derives their default seeds from it).
    """
    with building_with(run.seed):
        return _build(run, registry, data)


def _build(run: RunSpec, registry: Registry, data: ClassificationData | None) -> Setup:
    device = resolve_device(run.device)
    if device.type == "cuda":
        if distributed.active():
            device = torch.device("cuda", distributed.rank())
        if device.index is not None:  # CUDA events (the step timer) record on the current device's stream
            torch.cuda.set_device(device)
    seed_everything(run.seed)
    if data is None:
        data = registry.create("dataset", run.dataset, device=device, **run.dataset_params)
    model: nn.Module = registry.create(
        "model", run.model, num_classes=data.num_classes, input_shape=data.input_shape, **run.model_params
    ).to(device)
    prepare_model(model, channels_last=run.channels_last)
    base_optimizer = build_base_optimizer(model, dict(run.base_optimizer))
    if run.grad_clip_norm is not None:
        clip_before_each_step(base_optimizer, run.grad_clip_norm)
    scheduler = registry.create("scheduler", run.scheduler, **run.scheduler_params)
    if distributed.active() and run.perturbation_scope == "local":
        scheduler = distributed.SyncedScheduler(scheduler)
    trained = {id(p) for group in base_optimizer.param_groups for p in group["params"]}
    params = [(name, p) for name, p in model.named_parameters() if id(p) in trained]
    optimizer = registry.create(
        "optimizer", run.optimizer, params, base_optimizer=base_optimizer, scheduler=scheduler, **run.optimizer_params
    )
    if distributed.active() and run.perturbation_scope == "local":
        optimizer.rank_mean = distributed.mean_over_ranks_
    steps_per_epoch = data.steps_per_epoch(run.batch_size)
    optimizer.total_steps = run.epochs * steps_per_epoch
    optimizer.lr_range = (float(run.lr_schedule.get("min_lr", 0.0)), float(run.base_optimizer["lr"]))
    metrics = [(name, registry.create("metric", name, **params)) for name, params in run.metrics]
    wrapped = distributed.wrap(model, device)
    lr_scheduler = build_lr_scheduler(base_optimizer, dict(run.lr_schedule), run.epochs, steps_per_epoch)
    averaged = WeightAverage(model, swa_start=run.swa_start, epochs=run.epochs) if run.swa_start is not None else None
    if averaged is not None and run.swa_lr is not None:
        first_update = (averaged.first_epoch - 1) * steps_per_epoch
        lr_scheduler = HeldLearningRate(lr_scheduler, base_optimizer, lr=run.swa_lr, from_update=first_update)
        if first_update == 0:  # averaging from the first epoch: its first step already takes the held rate
            lr_scheduler.step_update(0)
    return Setup(
        device=device,
        data=data,
        model=model,
        train_model=prepare_model(wrapped, compile=run.compile),
        first_pass=distributed.first_pass_context(wrapped, run.perturbation_scope),
        base_optimizer=base_optimizer,
        optimizer=optimizer,
        lr_scheduler=lr_scheduler,
        # the layers the closure keeps from updating twice; none with bn_stats_pass: every (every pass updates)
        bn_modules=batchnorm_modules(model) if run.bn_stats_pass == "first" else [],
        params=list(model.parameters()),
        loss_fn=training_loss(run.label_smoothing, run.l2_in_loss, [p for _, p in params]),
        metric_loss=training_loss(run.label_smoothing, 0.0, []),
        precision=Precision(run.precision, device, channels_last=run.channels_last),
        shuffle=torch.Generator().manual_seed(run.seed),
        augment=torch.Generator(device=device).manual_seed(run.seed),
        metrics=metrics,
        metric_batches=metric_batches(data, batches=run.metric_batches, batch_size=run.metric_batch_size, seed=run.seed)
        if metrics
        else [],
        steps_per_epoch=steps_per_epoch,
        averaged=averaged,
    )
