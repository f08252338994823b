"""The runner-built closure: every forward/backward pass of one optimizer step.

``BatchClosure`` is what the runner hands to ``optimizer.step(closure)`` (shared/DESIGN.md
section 4). It guarantees, for every pass after the first within one step:

- the same batch (it holds the inputs and targets);
- the same random draws: the RNG state captured when the closure was built is restored before each
  later pass, so dropout and stochastic depth draw the same masks (google-research/sam uses the
  same random key in both passes);
- BatchNorm running statistics untouched: they are updated by the first (clean) pass only, as in
  the JAX reference, never twice per step (a known bug of davda54/sam). Later passes still
  normalize with batch statistics; only the running-average update is suppressed.

It also counts its calls and its gradient evaluations in full-batch equivalents: the harness
derives gradient evaluations from this count, not from the plugin. ``chunks(n)`` splits the batch
into sub-batch closures that share the counters (m-sharpness, SAM paper Sec. 4.1); each pass on a
chunk of size m counts m / batch_size evaluations. Each chunk's clean pass stands for one device of
the paper's data parallelism, whose batch statistics the reference code averages over devices: every
chunk's clean pass starts from the step's running statistics and the step ends with their mean
(weighted by chunk size), so the statistics see the whole batch (counted once), not only the first m
examples.

Per-example losses (ESAM's sharpness-sensitive data selection, Du et al. ICLR 2022, Alg. 1): a pass by
``with_sample_losses()`` also returns each example's loss from the same logits; ``sample_losses()`` is a
forward pass alone at the current weights (no gradient, so not a gradient evaluation; the same RNG
state, BatchNorm statistics untouched); ``subset(indices)`` is a closure over the chosen examples that
shares the counters, its pass counting ``len(indices) / batch_size`` evaluations. A per-example loss is
the training loss without its L2 term (``training_loss(...).per_sample``), which is the same for every
example and so changes no comparison between them.

Precision (``harness.run.precision``): with a ``Precision`` every forward pass runs under its autocast
(bf16, fp16) and, for fp16, the loss is scaled before ``backward`` and the gradients are unscaled
in place after *every* pass, each pass's overflow check accumulating into one flag per step. A pass
with a non-finite gradient drops the gradients (``p.grad = None``) and marks the step
``overflowed()``: the sharpness-aware optimizers then restore the weights and skip the update,
and a base optimizer stepped anyway (ERM) finds no gradient. ``finish()``, called once the step
is over, updates the loss scale exactly once per step (lowered if either pass overflowed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from harness.errors import ProtocolError
from harness.run.precision import Precision
from harness.run.sub_batches import SubBatchStatistics, accumulate

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def per_example_loss(loss_fn: LossFn) -> LossFn | None:
    """The per-example form of ``loss_fn``: its ``per_sample`` attribute (``training_loss`` sets one), or
    unreduced cross-entropy for ``F.cross_entropy`` itself; None when the loss does not say."""
    if loss_fn is F.cross_entropy:
        return lambda logits, targets: F.cross_entropy(logits, targets, reduction="none")
    return getattr(loss_fn, "per_sample", None)


def batchnorm_modules(model: nn.Module) -> list[_BatchNorm]:
    """The BatchNorm layers of ``model`` that keep running statistics."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


@contextmanager
def frozen_running_stats(modules: Sequence[_BatchNorm]) -> Iterator[None]:
    """Normalize with batch statistics but leave running mean, variance and counters unchanged.

    With ``track_running_stats`` off in training mode, ``BatchNorm.forward`` passes no running
    buffers to ``F.batch_norm`` and does not count the batch, which is exactly "use this batch's
    statistics, update nothing".
    """
    for module in modules:
        module.track_running_stats = False
    try:
        yield
    finally:
        for module in modules:
            module.track_running_stats = True


def _at_least_float32(logits: torch.Tensor) -> torch.Tensor:
    """Logits of an autocast pass (bf16, fp16) in float32, others as they are, before a per-example loss."""
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


class RngState:
    """A snapshot of the CPU and (where used) CUDA generators, restorable any number of times."""

    def __init__(self, device: torch.device) -> None:
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        self.device = device

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)


class BatchClosure:
    """Zero gradients, forward and backward on one batch, return the detached loss.

    model, loss_fn: the network and the loss (mean over the batch).
    inputs, targets: the batch, already on the device.
    bn_modules: the model's BatchNorm layers (``batchnorm_modules(model)``, computed once per run).
    first_pass: a context-manager factory entered around the first pass only; with DDP,
        ``model.no_sync`` keeps the clean gradient local to the rank (``perturbation_scope: local``).
    precision: a ``harness.run.precision.Precision`` (autocast, fp16 loss scaling, channels-last
        inputs); None runs in the model's own dtype.
    params: the model's parameters (``list(model.parameters())``, computed once per run like
        ``bn_modules``), whose gradients each pass sets to None; without them each pass calls
        ``model.zero_grad``, which walks the module tree (milliseconds for a deep model, on the
        host, twice per SAM step: it shows on a GPU when the step is launch-bound).
    micro_batch_size: gradient accumulation (the run setting ``micro_batch_size``): every pass runs the
        batch in micro-batches of this many examples, each loss weighted by its share of the batch, and
        accumulates their gradients, so each pass's gradient is the whole batch's (to rounding) at the
        activation memory of one micro-batch. The perturbation is computed from the accumulated gradient, and
        the second pass accumulates again at the perturbed weights. With DDP, gradients are synchronized on
        the last micro-batch only (``no_sync`` before). BatchNorm normalizes each micro-batch with its own
        statistics (as with smaller batches: the step then differs from the unsplit one), and the first pass
        updates the running statistics once, to the mean over its micro-batches (``SubBatchStatistics``,
        as m-sharpness's chunks). 0: every pass on the whole batch.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        bn_modules: Sequence[_BatchNorm] = (),
        first_pass: Callable[[], AbstractContextManager] | None = None,
        precision: Precision | None = None,
        params: Sequence[torch.Tensor] | None = None,
        micro_batch_size: int = 0,
    ) -> None:
        self.model = model
        self.micro_batch_size = micro_batch_size
        self.params = params
        self.loss_fn = loss_fn
        self.precision = precision
        if precision is not None:
            inputs = precision.prepare_inputs(inputs)
        self.inputs = inputs
        self.targets = targets
        self.bn_modules = bn_modules
        self.calls = 0
        self.evaluations = 0.0
        self.forward_only = 0  # passes by ``sample_losses``: a forward pass, no gradient
        self._rng = RngState(inputs.device)
        self._parent: BatchClosure | None = None
        self._first_pass = first_pass
        self._statistics: SubBatchStatistics | None = None  # set on the chunks of ``chunks``
        self._own_calls = 0
        self._found_inf: torch.Tensor | None = None  # fp16: set by any pass with a non-finite gradient
        self._overflow = False
        self._finished = False
        self._keep_sample_losses = False
        self._sample_losses: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return int(self.inputs.shape[0])

    def chunks(self, size: int) -> list[BatchClosure]:
        """Closures over consecutive sub-batches of ``size`` examples (the last may be smaller).

        They share this closure's counters and RNG snapshot. Each chunk's first (clean) pass updates the
        BatchNorm running statistics from the step's starting values, and the statistics end as the mean
        over chunks (``SubBatchStatistics``); later passes leave them untouched. A chunk runs whole
        (no ``micro_batch_size``): m-sharpness's sub-batches are the small ones already.
        """
        statistics = SubBatchStatistics(self.bn_modules)
        pieces = []
        for start in range(0, self.batch_size, size):
            piece = BatchClosure(
                self.model,
                self.loss_fn,
                self.inputs[start : start + size],
                self.targets[start : start + size],
                self.bn_modules,
                precision=self.precision,
                params=self.params,
            )
            piece._rng, piece._parent, piece._statistics = self._rng, self, statistics
            pieces.append(piece)
        return pieces

    def subset(self, indices: torch.Tensor) -> BatchClosure:
        """A closure over the examples ``indices`` of this batch, for a pass after the first of the step.

        It shares this closure's counters (a pass counts ``len(indices) / batch_size`` evaluations) and RNG
        snapshot, and leaves the BatchNorm running statistics untouched, as every later pass does.
        """
        piece = BatchClosure(
            self.model,
            self.loss_fn,
            self.inputs[indices],
            self.targets[indices],
            self.bn_modules,
            precision=self.precision,
            params=self.params,
            micro_batch_size=self.micro_batch_size,
        )
        piece._rng, piece._parent = self._rng, self
        return piece

    def with_sample_losses(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A pass like ``closure()`` that also returns each example's loss, detached, from the same logits."""
        self._per_example_fn()
        self._keep_sample_losses = True
        try:
            loss = self()
        finally:
            self._keep_sample_losses = False
        return loss, self._sample_losses

    @torch.no_grad()
    def sample_losses(self) -> torch.Tensor:
        """Each example's loss at the current weights: a forward pass only, not a gradient evaluation.

        It replays the step's RNG state (dropout draws the masks of the other passes) and leaves the
        BatchNorm running statistics untouched.
        """
        per_example = self._per_example_fn()
        self._root().forward_only += 1
        self._rng.restore()
        autocast = self.precision.autocast() if self.precision is not None else nullcontext()
        with frozen_running_stats(self.bn_modules), autocast:
            logits = self.model(self.inputs)
        return per_example(_at_least_float32(logits), self.targets)

    def _per_example_fn(self) -> LossFn:
        per_example = per_example_loss(self.loss_fn)
        if per_example is None:
            raise ProtocolError(
                "per-example losses need a loss function with a per_sample attribute (the harness's "
                f"training_loss has one) or F.cross_entropy; got {self.loss_fn!r}"
            )
        return per_example

    def _count(self, examples: int) -> bool:
        """Count one pass over ``examples`` examples; True when it is the first pass of the step."""
        if self._parent is not None:
            return self._parent._count(examples)
        first = self.calls == 0
        self.calls += 1
        self.evaluations += examples / self.batch_size
        return first

    def _root(self) -> BatchClosure:
        return self if self._parent is None else self._parent._root()

    def overflowed(self) -> bool:
        """Whether a pass of this step had a non-finite gradient (fp16 only; no host sync: a Python flag)."""
        return self._root()._overflow

    def finish(self) -> None:
        """End the step: update the fp16 loss scale once (lowered if a pass overflowed). Idempotent."""
        root = self._root()
        if root._finished or root.calls == 0:
            return
        root._finished = True
        scaler = root.precision.scaler if root.precision is not None else None
        if scaler is not None:
            found_inf = root._found_inf if root._found_inf is not None else torch.zeros((), device=scaler.device)
            scaler.update(found_inf)

    def __call__(self) -> torch.Tensor:
        first = self._count(self.batch_size)
        clean_chunk = self._statistics is not None and self._own_calls == 0
        self._own_calls += 1
        if not first:
            self._rng.restore()
        self._zero_grad()
        if clean_chunk:
            with self._statistics.pass_of_one_chunk(self.batch_size):
                loss = self._forward_backward()
        elif first:
            with self._first_pass() if self._first_pass is not None else nullcontext():
                loss = self._forward_backward(update_statistics=True)
        else:
            with frozen_running_stats(self.bn_modules):
                loss = self._forward_backward()
        return loss

    def _zero_grad(self) -> None:
        if self.params is None:
            self.model.zero_grad(set_to_none=True)
            return
        for p in self.params:
            p.grad = None

    def _forward_backward(self, *, update_statistics: bool = False) -> torch.Tensor:
        """Forward and backward on the batch, in micro-batches when ``micro_batch_size`` splits it; the loss.

        update_statistics: this is the step's first pass, whose micro-batches each update BatchNorm's running
        statistics (kept as their mean: one update per step). Later passes run with them frozen already.
        """
        size = self.micro_batch_size
        if not size or size >= self.batch_size:
            loss = self._backward(self._loss_on(self.inputs, self.targets))
            self._unscale_pass()
            return loss
        pieces = [
            (self.inputs[start : start + size], self.targets[start : start + size])
            for start in range(0, self.batch_size, size)
        ]
        sample_losses = []

        def loss_on(piece: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
            loss = self._loss_on(*piece)
            if self._keep_sample_losses:
                sample_losses.append(self._sample_losses)
            return loss

        sizes = [int(inputs.shape[0]) for inputs, _ in pieces]
        statistics = self.bn_modules if update_statistics else ()
        total = accumulate(list(zip(sizes, pieces, strict=True)), loss_on, self._backward, self.model, statistics)
        if self._keep_sample_losses:
            self._sample_losses = torch.cat(sample_losses)
        self._unscale_pass()
        return total

    def _loss_on(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The training loss on ``inputs`` (under the precision's autocast); keeps per-example losses if asked."""
        with self.precision.autocast() if self.precision is not None else nullcontext():
            logits = self.model(inputs)
            if self._keep_sample_losses:
                self._sample_losses = self._per_example_fn()(_at_least_float32(logits.detach()), targets)
            return self.loss_fn(logits, targets)

    def _backward(self, loss: torch.Tensor) -> torch.Tensor:
        """Backpropagate ``loss`` (scaled first under fp16); return it detached."""
        scaler = self.precision.scaler if self.precision is not None else None
        (loss if scaler is None else scaler.scale_loss(loss)).backward()
        return loss.detach()

    def _unscale_pass(self) -> None:
        if self.precision is not None and self.precision.scaler is not None:
            self._unscale(self.precision)

    def _unscale(self, precision: Precision) -> None:
        """Unscale this pass's gradients; on a non-finite one, drop them all and mark the step overflowed."""
        root = self._root()
        params = self.params if self.params is not None else self.model.parameters()
        grads = [p.grad for p in params if p.grad is not None]
        if root._found_inf is None:
            device = grads[0].device if grads else precision.scaler.device
            root._found_inf = torch.zeros((), dtype=torch.float32, device=device)
        precision.scaler.unscale_(grads, root._found_inf)
        if bool(root._found_inf):  # the one host synchronization per fp16 pass (GradScaler.step has it too)
            root._overflow = True
            self._zero_grad()
