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

It also counts its calls: the harness derives gradient evaluations from this count, not from the
plugin.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        bn_modules: Sequence[_BatchNorm] = (),
    ) -> None:
        self.model = model
        self.loss_fn = loss_fn
        self.inputs = inputs
        self.targets = targets
        self.bn_modules = bn_modules
        self.calls = 0
        self._rng = RngState(inputs.device)

    def __call__(self) -> torch.Tensor:
        first = self.calls == 0
        self.calls += 1
        if not first:
            self._rng.restore()
        self.model.zero_grad(set_to_none=True)
        if first:
            loss = self._forward_backward()
        else:
            with frozen_running_stats(self.bn_modules):
                loss = self._forward_backward()
        return loss

    def _forward_backward(self) -> torch.Tensor:
        loss = self.loss_fn(self.model(self.inputs), self.targets)
        loss.backward()
        return loss.detach()
