"""One ``RunSpec`` -> one training run -> one result row and its history.

``train`` builds the dataset, model, base optimizer (timm's optimizer factory), learning-rate
schedule (timm's scheduler factory, stepped per update), perturbation scheduler and
sharpness-aware optimizer from the registry, then trains with the runner-built ``BatchClosure``.

Measurement (shared/DESIGN.md section 7): ``train_time_s`` covers the training loop only;
evaluation is timed separately (``eval_time_s``). Gradient evaluations are the closure's call
count and %SAM the share of steps whose ``StepInfo.perturbed`` is true: the harness counts both
rather than trusting the plugin, and a perturbed step with a single gradient evaluation is a
``ProtocolError``.

``execute`` wraps ``train``: a run whose loss becomes non-finite ends ``diverged``, one that raises
ends ``failed`` with the error text, and either way its row is written and the suite goes on.
"""

from __future__ import annotations

import json
import math
import platform
import random
import resource
import socket
import statistics
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import harness
from harness import distributed
from harness.closure import BatchClosure, batchnorm_modules
from harness.columns import RUN_COLUMNS, identity
from harness.data import ClassificationData
from harness.divergence import Diverged, DivergenceWatch
from harness.errors import ProtocolError
from harness.evaluation import evaluate, training_set_accuracies
from harness.metrics import Batch, Metric, metric_batches, run_metrics
from harness.optim import StepInfo, optimizer_state_bytes
from harness.plugins import Registry
from harness.precision import Precision, prepare_model
from harness.results import write_run
from harness.run_spec import RunSpec
from harness.timing import StepTimer, Stopwatch

EpochCallback = Callable[[RunSpec, int, float], None]


@dataclass
class RunState:
    """Counters and measurements accumulated while a run trains.

    A field named as a run column (``harness.columns.RUN_COLUMNS``) is that column of the result row as it
    is (``_STATE_COLUMNS``); ``result_row`` turns the others into columns.
    """

    steps: int = 0
    grad_evals: float = 0.0
    perturbed_steps: int = 0
    epochs_completed: int = 0
    train_time_s: float = 0.0
    eval_time_s: float = 0.0
    train_loss: float = math.nan
    test_loss: float = math.nan
    test_acc: float = math.nan
    best_test_acc: float = math.nan
    val_acc: float | None = None
    best_val_acc: float | None = None
    time_to_target_s: float | None = None
    metric_time_s: float = 0.0
    metric_values: dict[str, Any] = field(default_factory=dict)
    train_accuracies: dict[str, float | None] = field(default_factory=dict)
    step_times: list[float] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    optimizer_state_bytes: int = 0
    peak_device_bytes: int | None = None


#: The ``RunState`` fields that ``result_row`` copies into the columns of the same name.
_STATE_COLUMNS = tuple(f.name for f in fields(RunState) if f.name in {column.name for column in RUN_COLUMNS})


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


def build_base_optimizer(model: nn.Module, settings: dict[str, Any]) -> torch.optim.Optimizer:
    """The base optimizer from timm's factory (``momentum``, ``sgd`` (Nesterov), ``adamw``, ``lamb``...)."""
    from timm.optim import create_optimizer_v2

    options = dict(settings)
    name = options.pop("name")
    return create_optimizer_v2(model, opt=name, **options)


def build_lr_scheduler(optimizer: torch.optim.Optimizer, settings: dict[str, Any], epochs: int, steps_per_epoch: int):
    """A timm learning-rate scheduler stepped after every update (warmup, then decay)."""
    from timm.scheduler import create_scheduler_v2

    options = dict(settings)
    name = options.pop("name")
    scheduler, _ = create_scheduler_v2(
        optimizer, sched=name, num_epochs=epochs, step_on_epochs=False, updates_per_epoch=steps_per_epoch, **options
    )
    return scheduler


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
    precision: Precision
    shuffle: torch.Generator
    augment: torch.Generator
    metrics: list[tuple[str, Metric]]
    metric_batches: list[Batch]
    steps_per_epoch: int


def build(run: RunSpec, registry: Registry, data: ClassificationData | None = None) -> Setup:
    """Seed, then build data, model, base optimizer, schedules, optimizer and metrics for ``run``.

    ``data``: the run's data when the caller holds it already (``harness bench``: one batch of random
    tensors, so a run of ``epochs`` steps); None builds ``run.dataset`` from the registry.
    """
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
    return Setup(
        device=device,
        data=data,
        model=model,
        train_model=prepare_model(wrapped, compile=run.compile),
        first_pass=distributed.first_pass_context(wrapped, run.perturbation_scope),
        base_optimizer=base_optimizer,
        optimizer=optimizer,
        lr_scheduler=build_lr_scheduler(base_optimizer, dict(run.lr_schedule), run.epochs, steps_per_epoch),
        # the layers the closure keeps from updating twice; none with bn_stats_pass: every (every pass updates)
        bn_modules=batchnorm_modules(model) if run.bn_stats_pass == "first" else [],
        params=list(model.parameters()),
        precision=Precision(run.precision, device, channels_last=run.channels_last),
        shuffle=torch.Generator().manual_seed(run.seed),
        augment=torch.Generator(device=device).manual_seed(run.seed),
        metrics=metrics,
        metric_batches=metric_batches(data, batches=run.metric_batches, batch_size=run.metric_batch_size, seed=run.seed)
        if metrics
        else [],
        steps_per_epoch=steps_per_epoch,
    )


def train(
    run: RunSpec, registry: Registry, *, state: RunState | None = None, on_epoch: EpochCallback | None = None
) -> RunState:
    """Train ``run`` and return its measurements. Raises ``Diverged`` or whatever training raised.

    Measurements accumulate in ``state`` as training goes, so a caller that passes its own keeps
    the epochs finished before a failure.
    """
    state = state if state is not None else RunState()
    setup = build(run, registry)
    hooks = registry.manager.hook
    cuda = setup.device.type == "cuda"
    hooks.run_started(run=run)
    timer = StepTimer(setup.device)
    watch = DivergenceWatch(setup.device)
    for epoch in range(1, run.epochs + 1):
        if cuda:  # the peak of the training epochs only: evaluation and metrics have their own
            torch.cuda.reset_peak_memory_stats(setup.device)
        last_rho = _train_epoch(run, setup, state, timer, hooks, watch, epoch)
        if cuda:
            peak = int(torch.cuda.max_memory_allocated(setup.device))
            state.peak_device_bytes = max(peak, state.peak_device_bytes or 0)
        if not math.isfinite(state.train_loss):
            raise Diverged(f"the training loss became non-finite ({state.train_loss}) in epoch {epoch}")
        row = _evaluate_epoch(run, setup, state, epoch)
        state.history.append(
            {
                "epoch": epoch,
                "step": state.steps,
                "lr": float(setup.base_optimizer.param_groups[0]["lr"]),
                "rho": last_rho,
                "train_loss": state.train_loss,
                "train_time_s": state.train_time_s,
                "sam_fraction": state.perturbed_steps / state.steps,
                "grad_evals": round(state.grad_evals),
                **row,
            }
        )
        if on_epoch is not None:
            on_epoch(run, epoch, state.test_acc)
    state.step_times = timer.durations
    state.optimizer_state_bytes = optimizer_state_bytes(setup.optimizer)
    return state


def _train_epoch(
    run: RunSpec, setup: Setup, state: RunState, timer: StepTimer, hooks: Any, watch: DivergenceWatch, epoch: int
) -> float:
    """One epoch of optimizer steps inside the train-time clock; returns the last step's rho.

    Raises ``Diverged`` within a few steps of a non-finite loss (``harness.divergence``), not at the
    end of the epoch.
    """
    per_step_hook = bool(hooks.step_finished.get_hookimpls())
    loss_sum = torch.zeros((), device=setup.device)
    watch.epoch_started(state.steps)
    last_rho = 0.0
    setup.model.train()
    with Stopwatch(setup.device) as clock:
        for batch in setup.data.train_batches(run.batch_size, setup.shuffle, setup.augment):
            loss, info = train_step(run, setup, state, *distributed.local_slice(*batch), timer)
            last_rho = info.rho
            loss_sum += loss
            if per_step_hook:
                hooks.step_finished(run=run, step=state.steps - 1, info=info)
            watch.check(loss_sum, state.steps, epoch)
    timer.flush()
    state.train_time_s += clock.total
    state.train_loss = float(distributed.mean_over_ranks(loss_sum)) / setup.steps_per_epoch
    return last_rho


def train_step(
    run: RunSpec,
    setup: Setup,
    state: RunState,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    timer: StepTimer | None = None,
) -> tuple[torch.Tensor, StepInfo]:
    """One optimizer step on one batch, as training takes it; returns the loss (on the device) and ``StepInfo``.

    A new ``BatchClosure`` for the batch, ``optimizer.step(closure)`` and the closure's ``finish()`` (what
    ``timer`` times, when given), the learning-rate schedule's update, the protocol check (a perturbed step
    needs two gradient evaluations: ``ProtocolError``) and the counts in ``state``. The training loop and
    ``harness bench`` both step through this function, so the bench times the runner's own step.
    """
    closure = BatchClosure(
        setup.train_model,
        F.cross_entropy,
        inputs,
        targets,
        setup.bn_modules,
        setup.first_pass,
        precision=setup.precision,
        params=setup.params,
    )
    if timer is not None:
        timer.start()
    loss = setup.optimizer.step(closure)
    closure.finish()  # fp16: one loss-scale update per step (optimizers that call it make this a no-op)
    if timer is not None:
        timer.stop()
    setup.lr_scheduler.step_update(num_updates=state.steps + 1)
    info = setup.optimizer.last_step
    if info.perturbed and closure.evaluations < 2 - 1e-6:
        raise ProtocolError(
            f"optimizer {run.optimizer!r} reported a perturbed step after "
            f"{closure.evaluations:g} gradient evaluation(s); a perturbed step needs two"
        )
    state.grad_evals += closure.evaluations
    state.perturbed_steps += int(info.perturbed)
    state.steps += 1
    return loss, info


def _evaluate_epoch(run: RunSpec, setup: Setup, state: RunState, epoch: int) -> dict[str, Any]:
    """Test (and validation, training-set, metric) evaluation after an epoch, outside the train clock.

    Evaluation runs the uncompiled model in float32 whatever the run's ``precision``: accuracies are then
    comparable across precision settings, and its cost is outside the measured train time anyway.
    """
    data, model = setup.data, setup.model
    last = epoch == run.epochs
    row: dict[str, Any] = {}
    with Stopwatch(setup.device) as clock:
        state.test_loss, state.test_acc = evaluate(
            model, data.test_x, data.test_y, run.eval_batch_size, data.model_input
        )
        row.update(test_loss=state.test_loss, test_acc=state.test_acc)
        if data.val_x is not None:
            _, state.val_acc = evaluate(model, data.val_x, data.val_y, run.eval_batch_size, data.model_input)
            state.best_val_acc = max(state.val_acc, state.best_val_acc or 0.0)
            row["val_acc"] = state.val_acc
        if run.train_eval == "epoch" or last:
            state.train_accuracies = training_set_accuracies(model, data, run.eval_batch_size)
            if run.train_eval == "epoch":
                row.update(state.train_accuracies)
    state.eval_time_s += clock.total
    state.best_test_acc = state.test_acc if epoch == 1 else max(state.test_acc, state.best_test_acc)
    if run.target_acc is not None and state.time_to_target_s is None and state.test_acc >= run.target_acc:
        state.time_to_target_s = state.train_time_s
    state.epochs_completed = epoch
    if setup.metrics and (last or (run.metric_every and epoch % run.metric_every == 0)):
        with Stopwatch(setup.device) as clock:
            state.metric_values = run_metrics(model, setup.metrics, setup.metric_batches, F.cross_entropy)
        state.metric_time_s += clock.total
        row.update(state.metric_values)
    return row


def _harness_version() -> str:
    try:
        return metadata.version("sam-harness")
    except metadata.PackageNotFoundError:
        return harness.__version__


def _plugin_versions(run: RunSpec, registry: Registry) -> str:
    used = {
        "optimizer": registry.get("optimizer", run.optimizer),
        "scheduler": registry.get("scheduler", run.scheduler),
        "model": registry.get("model", run.model),
        "dataset": registry.get("dataset", run.dataset),
    }
    return json.dumps({kind: f"{spec.provider} {spec.version}".strip() for kind, spec in used.items()}, sort_keys=True)


def result_row(
    run: RunSpec, state: RunState, status: str, error: str, started: datetime, registry: Registry
) -> dict[str, Any]:
    """The run's result row: every column of ``harness.columns.RUN_COLUMNS`` but ``schema_version`` (the
    writer's), and the metric plugins' values. The ``spec`` columns come from ``identity``, a ``RunState``
    field named as a column fills it as it is, and the entries below are the others."""
    device = resolve_device(run.device)
    quantiles = _step_quantiles(state.step_times)
    return {
        **identity(run),
        **{name: getattr(state, name) for name in _STATE_COLUMNS},
        "status": status,
        "error": error,
        "test_acc": _finite_or_none(state.test_acc),
        "best_test_acc": _finite_or_none(state.best_test_acc),
        "test_loss": _finite_or_none(state.test_loss),
        "train_loss": _finite_or_none(state.train_loss),
        "train_acc": state.train_accuracies.get("train_acc"),
        "train_acc_clean": state.train_accuracies.get("train_acc_clean"),
        "train_acc_noisy_given": state.train_accuracies.get("train_acc_noisy_given"),
        "train_acc_noisy_true": state.train_accuracies.get("train_acc_noisy_true"),
        "step_time_median_s": quantiles[1],
        "step_time_p10_s": quantiles[0],
        "step_time_p90_s": quantiles[2],
        "throughput_samples_per_s": (state.steps * run.batch_size / state.train_time_s) if state.train_time_s else None,
        "sam_fraction": state.perturbed_steps / state.steps if state.steps else None,
        "grad_evals": round(state.grad_evals),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "host": socket.gethostname(),
        "torch_version": torch.__version__,
        "harness_version": _harness_version(),
        "plugin_versions": _plugin_versions(run, registry),
        **state.metric_values,
        "started_at": started,
        "finished_at": datetime.now(timezone.utc),
    }


def _step_quantiles(times: list[float]) -> tuple[float | None, float | None, float | None]:
    """p10, median and p90 of the step times (``statistics.quantiles``, inclusive method)."""
    if not times:
        return None, None, None
    if len(times) == 1:
        return times[0], times[0], times[0]
    deciles = statistics.quantiles(times, n=10, method="inclusive")
    return deciles[0], statistics.median(times), deciles[-1]


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def execute(
    run: RunSpec, registry: Registry, results_dir: str | Path, *, on_epoch: EpochCallback | None = None
) -> dict[str, Any]:
    """Train ``run`` in this process, record its status whatever happens, write its files, return its row.

    A data-parallel run (``nproc > 1``) calls it in each of its ranks, which the worker starts
    (``harness.worker``); rank 0 writes the files.
    """
    if run.nproc > 1 and not distributed.active():
        raise ValueError(
            f"run {run.run_id} has nproc={run.nproc}: execute() trains one rank of it, in a process group "
            "of that size; harness.execution.run_worker starts the ranks"
        )
    started = datetime.now(timezone.utc)
    status, error = "ok", ""
    state = RunState()
    try:
        train(run, registry, state=state, on_epoch=on_epoch)
    except Diverged as diverged:
        status, error = "diverged", str(diverged)
    except Exception as failure:  # a failing run is recorded; the suite goes on
        status = "failed"
        error = f"{type(failure).__name__}: {failure}\n{traceback.format_exc(limit=-6)}"
    row = result_row(run, state, status, error, started, registry)
    if distributed.rank() == 0:
        registry.manager.hook.run_finished(run=run, result=row)
        write_run(results_dir, run.suite, row, state.history)
    return row
