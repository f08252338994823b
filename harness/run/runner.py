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
ends ``failed`` with the error text, a tuning trial its pruner stops ends ``pruned``
(``harness.run.pruning``), and either way its row is written and the suite goes on.
"""

from __future__ import annotations

import math
import sys
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from harness.contract.held import optimizer_state_bytes, perturbation_state_bytes
from harness.contract.optim import StepInfo
from harness.contract.run_spec import RunSpec
from harness.errors import ProtocolError
from harness.plugins import Registry
from harness.results.store import write_run
from harness.run import distributed
from harness.run.build import Setup, build
from harness.run.checkpoint import Checkpoint, Position
from harness.run.closure import BatchClosure
from harness.run.divergence import Diverged, DivergenceWatch
from harness.run.evaluation import evaluate, training_set_accuracies
from harness.run.metrics import run_metrics
from harness.run.pruning import Pruned, TrialPruning, for_run
from harness.run.row import RunState, result_row
from harness.run.stop import StopRequested, stop_requested, stoppable
from harness.run.timing import StepTimer, Stopwatch
from harness.run.trace import StepTrace

EpochCallback = Callable[[RunSpec, int, float], None]


def train(
    run: RunSpec,
    registry: Registry,
    *,
    state: RunState | None = None,
    on_epoch: EpochCallback | None = None,
    pruning: TrialPruning | None = None,
    checkpoint: Checkpoint | None = None,
) -> RunState:
    """Train ``run`` and return its measurements. Raises ``Diverged``, ``Pruned`` (after an epoch that
    ``pruning``'s pruner judged hopeless), ``StopRequested`` (``harness.run.checkpoint.request_stop``: at a step
    boundary, after writing ``checkpoint``) or whatever training raised.

    Measurements accumulate in ``state`` as training goes, so a caller that passes its own keeps
    the epochs finished before a failure. With ``checkpoint``, training resumes from it when it exists and writes it
    every ``checkpoint_every`` epochs and when asked to stop.
    """
    state = state if state is not None else RunState()
    setup = build(run, registry)
    hooks = registry.manager.hook
    hooks.run_started(run=run)
    timer = StepTimer(setup.device)
    watch = DivergenceWatch(setup.device)
    trace = StepTrace(run.trace_every, setup.optimizer.scheduler) if run.trace_every else None
    if trace is not None:
        state.step_trace = trace.rows  # the epochs traced so far stay with the state if a later one fails
    position = checkpoint.restore(setup, state, timer, trace) if checkpoint is not None else Position()
    with stoppable():
        _train_epochs(run, setup, state, timer, hooks, watch, trace, position, on_epoch, pruning, checkpoint)
    state.step_times = timer.durations
    state.optimizer_state_bytes = optimizer_state_bytes(setup.optimizer)
    state.perturbation_state_bytes = perturbation_state_bytes(setup.optimizer)
    return state


def _train_epochs(
    run: RunSpec,
    setup: Setup,
    state: RunState,
    timer: StepTimer,
    hooks: Any,
    watch: DivergenceWatch,
    trace: StepTrace | None,
    position: Position,
    on_epoch: EpochCallback | None,
    pruning: TrialPruning | None,
    checkpoint: Checkpoint | None,
) -> None:
    """The epochs from ``position`` on: train, evaluate, record; checkpoint when due or asked to stop."""
    cuda = setup.device.type == "cuda"
    for epoch in range(position.epoch, run.epochs + 1):
        if cuda:  # the peak of the training epochs only: evaluation and metrics have their own
            torch.cuda.reset_peak_memory_stats(setup.device)
        start = position if epoch == position.epoch else Position(epoch)
        last_rho = _train_epoch(run, setup, state, timer, hooks, watch, epoch, trace, start, checkpoint)
        if cuda:
            peak = int(torch.cuda.max_memory_allocated(setup.device))
            state.peak_device_bytes = max(peak, state.peak_device_bytes or 0)
        if not math.isfinite(state.train_loss):
            raise Diverged(f"the training loss became non-finite ({state.train_loss}) in epoch {epoch}")
        if setup.averaged is not None and setup.averaged.due(epoch):
            _average(run, setup, state, epoch)
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
        if pruning is not None:
            pruning.epoch_ended(epoch, row)
        signum = stop_requested()
        if epoch < run.epochs and checkpoint is not None and (signum is not None or checkpoint.due(epoch)):
            checkpoint.save(setup, state, timer, trace, Position(epoch + 1), setup.shuffle.get_state())
        if signum is not None and epoch < run.epochs:
            raise StopRequested(signum)


def _average(run: RunSpec, setup: Setup, state: RunState, epoch: int) -> None:
    """SWA (``harness.run.swa``): add the epoch's weights to the average; after the last epoch, put the average
    into the model and recompute its BatchNorm statistics (train time: SWA's own cost)."""
    with Stopwatch(setup.device) as clock:
        setup.averaged.update(setup.model)
        if epoch == run.epochs:
            setup.averaged.install(setup.model, setup.data, run.batch_size, setup.precision, run.seed)
    state.train_time_s += clock.total


def _train_epoch(
    run: RunSpec,
    setup: Setup,
    state: RunState,
    timer: StepTimer,
    hooks: Any,
    watch: DivergenceWatch,
    epoch: int,
    trace: StepTrace | None = None,
    start: Position | None = None,
    checkpoint: Checkpoint | None = None,
) -> float:
    """One epoch of optimizer steps inside the train-time clock; returns the last step's rho. ``trace`` keeps
    its traced steps and copies them to the host after the clock (``harness.run.trace``). ``start``: where in the
    epoch training goes on (a resumed run; default its start).

    Raises ``Diverged`` within a few steps of a non-finite loss (``harness.run.divergence``), not at the
    end of the epoch, and ``StopRequested`` after the step during which a stop was asked for, when batches remain
    (the checkpoint written first, outside the train time).
    """
    start = start if start is not None else Position(epoch)
    per_step_hook = bool(hooks.step_finished.get_hookimpls())
    loss_sum = start.loss_sum if start.loss_sum is not None else torch.zeros((), device=setup.device)
    shuffle = setup.shuffle.get_state()  # the order's generator as at the epoch's start, for a mid-epoch checkpoint
    watch.epoch_started(state.steps)
    last_rho = 0.0
    setup.model.train()
    with Stopwatch(setup.device) as clock:
        batches = setup.data.train_batches(run.batch_size, setup.shuffle, setup.augment, start=start.batch)
        for done, batch in enumerate(batches, start=start.batch + 1):
            loss, info = train_step(run, setup, state, *distributed.local_slice(*batch), timer)
            last_rho = info.rho
            loss_sum += loss
            if trace is not None and trace.wants(state.steps):
                trace.record(state.steps, epoch, info, state.perturbed_steps)
            if per_step_hook:
                hooks.step_finished(run=run, step=state.steps - 1, info=info)
            watch.check(loss_sum, state.steps, epoch)
            signum = stop_requested()
            if signum is not None and done < setup.steps_per_epoch:
                state.train_time_s += clock.running_total()
                if checkpoint is not None:
                    checkpoint.save(setup, state, timer, trace, Position(epoch, done, loss_sum), shuffle)
                raise StopRequested(signum)
    timer.flush()
    if trace is not None:
        trace.flush()
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
    runs a second pass through the closure, on the batch or part of it: ``ProtocolError``) and the counts in
    ``state``. The training loop and ``harness bench`` both step through this function, so the bench times the
    runner's own step.
    """
    closure = BatchClosure(
        setup.train_model,
        setup.loss_fn,
        inputs,
        targets,
        setup.bn_modules,
        setup.first_pass,
        precision=setup.precision,
        params=setup.params,
        micro_batch_size=run.micro_batch_size,
    )
    if timer is not None:
        timer.start()
    loss = setup.optimizer.step(closure)
    closure.finish()  # fp16: one loss-scale update per step (optimizers that call it make this a no-op)
    if timer is not None:
        timer.stop()
    setup.lr_scheduler.step_update(num_updates=state.steps + 1)
    info = setup.optimizer.last_step
    if info.perturbed and closure.calls < 2:
        raise ProtocolError(
            f"optimizer {run.optimizer!r} reported a perturbed step after {closure.calls} pass(es) through the "
            f"closure ({closure.evaluations:g} gradient evaluation(s)); a perturbed step runs a second pass at w + e"
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
            state.metric_values = run_metrics(model, setup.metrics, setup.metric_batches, setup.metric_loss)
        state.metric_time_s += clock.total
        row.update(state.metric_values)
    return row


def execute(
    run: RunSpec, registry: Registry, results_dir: str | Path, *, on_epoch: EpochCallback | None = None
) -> dict[str, Any]:
    """Train ``run`` in this process, record its status whatever happens, write its files, return its row.

    A data-parallel run (``nproc > 1``) calls it in each of its ranks, which the worker starts
    (``harness.execution.worker``); rank 0 writes the files.
    """
    if run.nproc > 1 and not distributed.active():
        raise ValueError(
            f"run {run.run_id} has nproc={run.nproc}: execute() trains one rank of it, in a process group "
            "of that size; harness.execution.run_worker starts the ranks"
        )
    started = datetime.now(timezone.utc)
    status, error = "ok", ""
    state = RunState()
    pruning = None
    checkpoint = Checkpoint(results_dir, run) if run.nproc == 1 else None  # ranks are not checkpointed
    try:
        pruning = for_run(run, results_dir)
        train(run, registry, state=state, on_epoch=on_epoch, pruning=pruning, checkpoint=checkpoint)
    except Diverged as diverged:
        status, error = "diverged", str(diverged)
    except Pruned as pruned:
        status, error = "pruned", str(pruned)
    except Exception as failure:  # a failing run is recorded; the suite goes on
        status = "failed"
        error = f"{type(failure).__name__}: {failure}\n{traceback.format_exc(limit=-6)}"
    row = result_row(run, state, status, error, started, registry)
    if distributed.rank() == 0:
        registry.manager.hook.run_finished(run=run, result=row)
        write_run(results_dir, run.suite, row, state.history, state.step_trace)
        if checkpoint is not None:
            checkpoint.remove()  # the run is recorded: a rerun trains it from the start
    if pruning is not None:
        try:
            pruning.finished(row)
        except Exception as failure:  # the driver tells the trial from the row instead
            print(f"warning: could not tell trial {run.trial_number} of {run.study!r}: {failure}", file=sys.stderr)
    return row
