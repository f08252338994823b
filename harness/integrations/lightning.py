"""Any registered variant in a PyTorch Lightning training: ``SharpnessAwareModule`` (extra ``sam-harness[lightning]``).

A user's LightningModule derives from ``SharpnessAwareModule`` instead of ``LightningModule`` and keeps its
ordinary ``training_step`` (return the loss) and ``configure_optimizers`` (return the optimizer
``harness.create_optimizer`` makes, with or without an lr scheduler)::

    class Classifier(SharpnessAwareModule):
        def training_step(self, batch, batch_idx):
            inputs, targets = batch
            return F.cross_entropy(self.net(inputs), targets)

        def configure_optimizers(self):
            return harness.create_optimizer("looksam", self, base={"name": "momentum", "lr": 0.05},
                                            total_steps=self.trainer.estimated_stepping_batches)

What the module does for it, as the harness's own step (``harness.run.closure.BatchClosure``):

- manual optimization (``automatic_optimization = False``, set in ``__init__``): every call of
  ``training_step`` by the Trainer is one optimizer step, ``optimizer.step(closure)``, whose closure zeroes
  the gradients, runs the user's ``training_step`` on the same batch and ``self.manual_backward`` on its loss;
  a variant's second pass runs the user's ``training_step`` again, at the perturbed weights;
- the same random draws in every pass (the RNG state is restored before each later pass: dropout draws the
  same masks), and BatchNorm running statistics updated by the first pass only;
- ``self.log`` / ``self.log_dict`` from later passes are dropped: what is logged is the clean pass's;
- the lr schedulers of ``configure_optimizers`` are stepped as Lightning steps them in automatic
  optimization: ``interval: "step"`` after every ``frequency``-th optimizer step, ``"epoch"`` after the
  epoch's last batch (a ``ReduceLROnPlateau`` with the monitored value ``trainer.callback_metrics`` has then),
  each through the module's ``lr_scheduler_step`` hook (override it for a timm scheduler).

Precision and distribution, through Lightning's own plugins:

- ``32-true``, ``bf16-mixed``, ``16-true``, ``bf16-true``: the step goes through ``LightningOptimizer.step``
  (Lightning's progress counters, profiler and ``on_before_optimizer_step`` hook, which runs after every pass);
- ``16-mixed`` (fp16 with a ``GradScaler``): ``manual_backward`` scales each pass's loss with the plugin's
  scaler, the closure unscales each pass's gradients (``GradScaler.unscale_``) and a pass with a non-finite
  gradient makes the whole step a skipped one (weights restored, no update), and the scale is updated once
  per step: ``harness.run.precision``'s semantics. ``GradScaler.step`` cannot serve a step of several passes,
  so this path calls the optimizer itself (and ``on_before_optimizer_step`` is not called);
- DDP (``strategy="ddp"`` or ``"ddp_spawn"``): every pass's ``manual_backward`` prepares DDP's reducer, so the
  gradients of every pass, the clean one included, are averaged over ranks: the harness's
  ``perturbation_scope: global`` (tested on 2 CPU ranks: the steps of one process on the whole batch).
  The local scope (a clean pass under ``no_sync``, m-sharpness per rank) is not supported.

Gradient accumulation: set ``micro_batch_size = N`` (a class attribute, or ``self.micro_batch_size = N`` in
``__init__``) and every pass runs ``training_step`` on micro-batches of N examples of the batch (each tensor of
the batch, however nested, cut along its first dimension), each loss weighted by its share of the batch and
backpropagated, so each pass's gradient is the whole batch's at one micro-batch's activation memory, as the
harness's ``micro_batch_size`` (``harness.run.sub_batches.accumulate``): BatchNorm's running statistics are
updated once per step, to the mean over the first pass's micro-batches; under DDP the gradients are all-reduced
on the last micro-batch only. What is logged, and the step's output, are the first micro-batch's of the first
pass.

Not supported: ``accumulate_grad_batches`` (use ``micro_batch_size``) and ``gradient_clip_val`` (Lightning
refuses both under manual optimization: clip in the base optimizer, ``harness.run.build.clip_before_each_step``),
several optimizers, a ``training_step`` that returns None (a step needs a loss in every pass), DeepSpeed, FSDP
and XLA strategies (untested). The harness's m-sharpness (``closure.chunks``) and ESAM's per-example losses need
``harness.BatchClosure``: variants that ask the closure for them (ESAM) fail here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from types import SimpleNamespace
from typing import Any

import torch

from harness.errors import UsageError
from harness.run.closure import RngState, batchnorm_modules, frozen_running_stats
from harness.run.sub_batches import accumulate, split_batch

try:
    import lightning.pytorch as pl
except ImportError as missing:
    raise ImportError(
        'harness.integrations.lightning needs PyTorch Lightning: pip install "sam-harness[lightning]"'
    ) from missing

TrainingStep = Callable[..., Any]


def _loss_of(output: Any) -> torch.Tensor:
    """The loss in what ``training_step`` returned: the tensor itself, or a mapping's ``"loss"``."""
    loss = output.get("loss") if isinstance(output, Mapping) else output
    if not isinstance(loss, torch.Tensor):
        raise UsageError(
            "SharpnessAwareModule: training_step must return the loss (a tensor, or a dict with 'loss'); got "
            f"{type(output).__name__}: every pass of a sharpness-aware step needs the loss to differentiate"
        )
    return loss


class _TrainingStepClosure:
    """Every pass of one step: zero gradients, the user's ``training_step`` on the batch, ``manual_backward``.

    ``output`` is what the first (clean) pass returned. With a ``GradScaler`` (``16-mixed``) each pass's
    gradients are unscaled after its backward, under a key of their own (``GradScaler.unscale_`` runs once per
    optimizer and update); ``overflowed()`` and ``finish()`` are the protocol's, as ``BatchClosure``'s.
    """

    def __init__(
        self,
        module: SharpnessAwareModule,
        training_step: TrainingStep,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler | None,
    ) -> None:
        self.module = module
        self.training_step = training_step
        self.args = args
        self.kwargs = kwargs
        self.optimizer = optimizer
        self.scaler = scaler
        self.bn_modules = batchnorm_modules(module)
        self.calls = 0
        self.output: Any = None
        self._rng = RngState(module.device)
        self._passes: list[SimpleNamespace] = []  # one unscaling key per pass, alive until the scale's update
        self._overflow = False
        self._finished = False

    def __call__(self) -> torch.Tensor:
        first = self.calls == 0
        if not first:
            self._rng.restore()
        self.module._sharpness_aware_pass = self.calls
        self.calls += 1
        self.module.zero_grad(set_to_none=True)
        size = self.module.micro_batch_size
        with nullcontext() if first else frozen_running_stats(self.bn_modules):
            if size:
                loss = self._in_micro_batches(size, first)
            else:
                loss = self._backward(self._loss_on(self.args[0] if self.args else None, first))
        if self.scaler is not None:
            self._unscale()
        return loss

    def _loss_on(self, batch: Any, keep_output: bool) -> torch.Tensor:
        """The user's ``training_step`` on ``batch`` (the step's other arguments as given); its loss."""
        output = self.training_step(self.module, *((batch,) + self.args[1:] if self.args else ()), **self.kwargs)
        if keep_output:
            self.output = output
        return _loss_of(output)

    def _backward(self, loss: torch.Tensor) -> torch.Tensor:
        self.module.manual_backward(loss)
        return loss.detach()

    def _in_micro_batches(self, size: int, first: bool) -> torch.Tensor:
        """One pass in micro-batches of ``size`` (``harness.run.sub_batches.accumulate``): only the first
        micro-batch of the first pass logs and gives the step's output."""
        if not self.args:
            raise UsageError(f"{type(self.module).__name__}: micro_batch_size needs training_step(batch, ...)")
        pieces = split_batch(self.args[0], size, type(self.module).__name__)
        model = self.module.trainer.strategy.model  # DDP's wrapper under strategy="ddp": it has no_sync

        def loss_on(piece: tuple[int, Any]) -> torch.Tensor:
            index, batch = piece
            self.module._sharpness_aware_quiet = index > 0
            return self._loss_on(batch, first and index == 0)

        indexed = [(examples, (index, batch)) for index, (examples, batch) in enumerate(pieces)]
        try:
            return accumulate(indexed, loss_on, self._backward, model, self.bn_modules if first else ())
        finally:
            self.module._sharpness_aware_quiet = False

    def _unscale(self) -> None:
        """Unscale this pass's gradients; on a non-finite one, drop them all and mark the step overflowed."""
        gradients = SimpleNamespace(param_groups=self.optimizer.param_groups)
        self._passes.append(gradients)
        self.scaler.unscale_(gradients)
        found_inf = self.scaler._per_optimizer_states[id(gradients)]["found_inf_per_device"].values()
        if any(bool(found) for found in found_inf):  # one host synchronization per pass, as GradScaler.step's
            self._overflow = True
            self.module.zero_grad(set_to_none=True)

    def overflowed(self) -> bool:
        """Whether a pass of this step had a non-finite gradient (``16-mixed`` only)."""
        return self._overflow

    def finish(self) -> None:
        """End the step: update the loss scale once, from every pass's overflow check. Idempotent."""
        if self._finished or self.calls == 0:
            return
        self._finished = True
        if self.scaler is not None:
            self.scaler.update()
        self._passes.clear()


def _sharpness_aware(training_step: TrainingStep) -> TrainingStep:
    """``training_step`` as one sharpness-aware optimizer step; the plain function inside a step's passes."""

    @functools.wraps(training_step)
    def step(self: SharpnessAwareModule, *args: Any, **kwargs: Any) -> Any:
        if self._sharpness_aware_pass is not None:  # a pass of the step (or a subclass's super() call)
            return training_step(self, *args, **kwargs)
        return self._sharpness_aware_step(training_step, args, kwargs)

    step._sharpness_aware = True
    return step


class SharpnessAwareModule(pl.LightningModule):
    """A LightningModule whose ``training_step`` is one step of the variant ``configure_optimizers`` returns.

    Subclass it as a LightningModule: write ``training_step`` (returning the loss, or a dict with ``"loss"``)
    and ``configure_optimizers`` (returning ``harness.create_optimizer(...)``, alone or with a scheduler as
    Lightning accepts it). The module docstring lists what is done for it and what is supported.
    """

    #: Gradient accumulation: N > 0 runs every pass of a step in micro-batches of N examples (the module docstring).
    micro_batch_size: int = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.automatic_optimization = False
        self._sharpness_aware_pass: int | None = None
        self._sharpness_aware_quiet = False  # a micro-batch after a pass's first: it logs nothing

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("training_step")
        if own is not None and not getattr(own, "_sharpness_aware", False):
            cls.training_step = _sharpness_aware(own)

    def log(self, *args: Any, **kwargs: Any) -> None:
        """``LightningModule.log``, except from the passes after a step's first (their values are at ``w + e``)."""
        if not self._sharpness_aware_pass and not self._sharpness_aware_quiet:
            super().log(*args, **kwargs)

    def _sharpness_aware_step(self, training_step: TrainingStep, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self.automatic_optimization:
            raise UsageError(
                f"{type(self).__name__}: automatic_optimization is True; a SharpnessAwareModule steps the optimizer "
                "itself (manual optimization): leave automatic_optimization False"
            )
        optimizer = self.optimizers()
        if isinstance(optimizer, list):
            raise UsageError(
                f"{type(self).__name__}: configure_optimizers returned {len(optimizer)} optimizers; a "
                "SharpnessAwareModule steps one (harness.create_optimizer's)"
            )
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        closure = _TrainingStepClosure(self, training_step, args, kwargs, optimizer.optimizer, scaler)
        self._sharpness_aware_pass = 0
        try:
            if scaler is None:
                optimizer.step(closure=closure)
            else:  # GradScaler.step would call optimizer.step() without the closure
                optimizer._on_before_step()
                optimizer.optimizer.step(closure)
                optimizer._on_after_step()
            closure.finish()  # optimizers that do not call it (a plain torch optimizer): the scale's one update
        finally:
            self._sharpness_aware_pass = None
        self._step_schedulers("step", self.trainer.global_step)
        if self.trainer.is_last_batch:
            self._step_schedulers("epoch", self.trainer.current_epoch + 1)
        return closure.output

    def _step_schedulers(self, interval: str, count: int) -> None:
        """Step the lr schedulers of ``interval`` whose ``frequency`` divides ``count``, as Lightning's automatic
        optimization does (``_TrainingEpochLoop._update_learning_rates``)."""
        for config in self.trainer.lr_scheduler_configs:
            if config.interval != interval or count % config.frequency:
                continue
            monitored = None
            if config.reduce_on_plateau:
                monitored = self.trainer.callback_metrics.get(config.monitor)
                if monitored is None:
                    if config.strict:
                        raise UsageError(
                            f"{type(self).__name__}: the ReduceLROnPlateau scheduler monitors {config.monitor!r}, "
                            f"which nothing logged; logged: {sorted(self.trainer.callback_metrics)}"
                        )
                    continue
            self.lr_scheduler_step(config.scheduler, monitored)
