"""Any registered variant in a Hugging Face ``Trainer``: ``SharpnessAwareTrainer`` (extra ``sam-harness[hf]``).

``SharpnessAwareTrainer`` is a ``transformers.Trainer`` whose training step is one step of a sharpness-aware
optimizer::

    trainer = SharpnessAwareTrainer(model=model, args=args, train_dataset=data, method="looksam",
                                    method_settings={"rho": 0.1})
    trainer.train()

The optimizer is ``harness.create_optimizer(method, model, base=..., total_steps=<the Trainer's max steps>,
**method_settings)``; ``base`` defaults to the ``TrainingArguments``' AdamW (``learning_rate``,
``weight_decay``, ``adam_beta1/2``, ``adam_epsilon``; no decay on biases and normalization weights, as
timm's factory builds it). ``optimizers=(harness.create_optimizer(...), scheduler_or_None)`` passes one
built by hand instead. The Trainer's lr scheduler (``lr_scheduler_type``, warm-up) is built on it and
stepped after every step, as for any optimizer.

Each step, in ``training_step``, is ``optimizer.step(closure)``, whose closure zeroes the gradients, runs
``compute_loss(model, inputs)`` (under ``compute_loss_context_manager``) and ``accelerator.backward`` on the
same inputs in every pass, with the random state restored before each later pass (dropout draws the same
masks) and BatchNorm running statistics updated by the first pass only, as ``harness.BatchClosure``. The
Trainer's own ``optimizer.step()`` that follows is then a no-op (``_SteppedInTrainingStep``), and callbacks'
``on_pre_optimizer_step`` run after the update. ``max_grad_norm`` (default 1.0) clips the gradient the base
optimizer applies (SAM's perturbed gradient, LookSAM's reused one: ``harness.run.build.clip_before_each_step``,
where the papers clip), not the clean gradient; the ``grad_norm`` the Trainer logs is the last pass's.

Supported: fp32 and ``bf16=True`` (accelerate's autocast), DDP through accelerate (every pass's backward
averages the gradients over ranks: the harness's ``perturbation_scope: global``; untested here), one GPU or
CPU. Gradient accumulation: ``micro_batch_size=N`` runs every pass of a step in micro-batches of N examples
(each tensor of the inputs cut along its first dimension; ``harness.run.sub_batches.accumulate``), each
micro-batch's loss weighted by its share of the examples and backpropagated, so each pass's gradient is the
whole batch's at one micro-batch's activation memory; BatchNorm's running statistics are updated once per step
(the mean over the first pass's micro-batches) and DDP all-reduces on the last micro-batch only. The weights are
exact for a loss averaged over examples (classification); a loss averaged over tokens (language modelling with
padding) is then weighted by examples, not tokens (``num_items_in_batch`` is not passed to the micro-batches).
The returned loss is the clean pass's sum of weighted micro-batch losses. Refused with an error:
``gradient_accumulation_steps > 1`` (a step's passes need the whole batch: use ``micro_batch_size``) and
``fp16=True`` (accelerate's ``GradScaler.step`` cannot serve a step of several passes: use ``bf16``).
Untested: DeepSpeed, FSDP, XLA, ``torch.nn.DataParallel``; ESAM (its per-example losses need
``harness.BatchClosure``) fails.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from harness.errors import UsageError
from harness.run.build import clip_before_each_step
from harness.run.closure import RngState, batchnorm_modules, frozen_running_stats
from harness.run.create import create_optimizer
from harness.run.sub_batches import accumulate, split_batch

try:
    import transformers
except ImportError as missing:
    raise ImportError(
        'harness.integrations.huggingface needs Hugging Face transformers: pip install "sam-harness[hf]"'
    ) from missing


class _SteppedInTrainingStep(torch.optim.Optimizer):
    """The Trainer's view of a sharpness-aware optimizer: ``step(closure)`` is its step, ``step()`` nothing.

    The Trainer calls ``optimizer.step()`` after ``training_step``; the step was taken there, with the closure.
    Parameter groups (so the lr scheduler), state and ``state_dict`` are the wrapped optimizer's.
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        super().__init__([p for group in optimizer.param_groups for p in group["params"]], {})
        self.param_groups = optimizer.param_groups
        self.state = optimizer.state
        self.defaults = optimizer.defaults
        self.sharpness_aware = optimizer

    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        return None if closure is None else self.sharpness_aware.step(closure)

    def state_dict(self) -> dict[str, Any]:
        return self.sharpness_aware.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.sharpness_aware.load_state_dict(state_dict)
        self.param_groups = self.sharpness_aware.param_groups


class SharpnessAwareTrainer(transformers.Trainer):
    """A ``transformers.Trainer`` that trains with a registered variant (see the module docstring).

    method: a preset or an optimizer's registry name (``harness plugins``), as for ``harness.create_optimizer``;
        None only with ``optimizers=(optimizer, scheduler)``.
    base: the base optimizer's timm settings; None: AdamW from the ``TrainingArguments``.
    method_settings: the variant's settings (``{"rho": 0.1}``), routed as ``create_optimizer`` routes them.
    micro_batch_size: N > 0 runs every pass in micro-batches of N examples (the module docstring); 0 does not.
    The other arguments are ``Trainer``'s.
    """

    def __init__(
        self,
        *args: Any,
        method: str | None = None,
        base: Mapping[str, Any] | None = None,
        method_settings: Mapping[str, Any] | None = None,
        micro_batch_size: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if isinstance(micro_batch_size, bool) or not isinstance(micro_batch_size, int) or micro_batch_size < 0:
            raise UsageError(
                f"SharpnessAwareTrainer: micro_batch_size must be an integer >= 0 (0: no accumulation), got "
                f"{micro_batch_size!r}"
            )
        self.micro_batch_size = micro_batch_size
        if self.args.gradient_accumulation_steps != 1:
            raise UsageError(
                f"SharpnessAwareTrainer: gradient_accumulation_steps={self.args.gradient_accumulation_steps}; every "
                "pass of a sharpness-aware step runs on the whole batch: set it to 1, and micro_batch_size=N to "
                "accumulate within each pass"
            )
        if self.args.fp16:
            raise UsageError(
                "SharpnessAwareTrainer: fp16=True; accelerate's GradScaler steps once per backward and cannot serve "
                "a step of several passes: use bf16=True"
            )
        if method is None and self.optimizer is None:
            raise UsageError(
                "SharpnessAwareTrainer: name a method (method='sam') or pass optimizers=(harness.create_optimizer("
                "...), None)"
            )
        self.method = method
        self.base = dict(base) if base is not None else None
        self.method_settings = dict(method_settings or {})

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """The variant's optimizer, for the run's length (``state.max_steps``), as the Trainer sees it."""
        if self.optimizer is None:
            total_steps = self.state.max_steps or max(self.args.max_steps, 0)
            base = self.base or {
                "name": "adamw",
                "lr": self.args.learning_rate,
                "weight_decay": self.args.weight_decay,
                "betas": (self.args.adam_beta1, self.args.adam_beta2),
                "eps": self.args.adam_epsilon,
            }
            self.optimizer = create_optimizer(
                self.method, model or self.model, base=base, total_steps=total_steps, **self.method_settings
            )
        if not isinstance(self.optimizer, _SteppedInTrainingStep):
            if self.args.max_grad_norm and self.args.max_grad_norm > 0:
                base = getattr(self.optimizer, "base_optimizer", self.optimizer)
                clip_before_each_step(base, self.args.max_grad_norm)
            self.optimizer = _SteppedInTrainingStep(self.optimizer)
        return self.optimizer

    def training_step(
        self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: torch.Tensor | int | None = None
    ) -> torch.Tensor:
        """One step of the variant on ``inputs``; returns the clean pass's loss, detached."""
        model.train()
        inputs = self._prepare_inputs(inputs)
        rng = RngState(self.args.device)
        bn_modules = batchnorm_modules(model)
        losses: list[torch.Tensor] = []

        pieces = split_batch(inputs, self.micro_batch_size, "SharpnessAwareTrainer") if self.micro_batch_size else ()

        def loss_on(batch: dict[str, Any], items: torch.Tensor | int | None) -> torch.Tensor:
            with self.compute_loss_context_manager():  # a copy: compute_loss pops "labels" with a label smoother
                loss = self.compute_loss(model, dict(batch), num_items_in_batch=items)
            return loss.mean() if self.args.n_gpu > 1 else loss  # torch.nn.DataParallel: one loss per device

        def backward(loss: torch.Tensor) -> torch.Tensor:
            self.accelerator.backward(loss)
            return loss.detach()

        def closure() -> torch.Tensor:
            if losses:
                rng.restore()
            model.zero_grad(set_to_none=True)
            with frozen_running_stats(bn_modules) if losses else nullcontext():
                if len(pieces) > 1:  # each micro-batch's mean loss weighted by its share of the examples
                    statistics = () if losses else bn_modules
                    loss = accumulate(pieces, lambda piece: loss_on(piece, None), backward, model, statistics)
                else:
                    loss = backward(loss_on(inputs, num_items_in_batch))
            losses.append(loss)
            return loss

        self.optimizer.step(closure)  # accelerate's wrapper returns nothing: the clean loss is the first pass's
        return losses[0]
