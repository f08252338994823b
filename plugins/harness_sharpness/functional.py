"""The training loss over a fixed list of batches as a function of the trainable parameters.

Every metric of this package evaluates the loss at ``w`` or at ``w + e`` and differentiates it (once for
gradients, twice for Hessian-vector products) through ``torch.func.functional_call``: the model's own
parameters are never written, so nothing needs restoring and no ``.grad`` is ever populated
(``torch.autograd.grad`` returns gradients instead of accumulating them). Buffers are the module's own;
metrics run in eval mode (``eval_mode``), so BatchNorm reads its running statistics and never updates them.

Vectors over the parameters are flat float64 tensors on the model's device (accumulation in float64 is
cheap next to a forward/backward pass); they are cast to each parameter's dtype only to enter the model.
The subset's loss is the mean over its examples, ``L(D) = sum_b (n_b / N) L(B_b)``, so its gradient and
Hessian are the batch-size-weighted averages of the per-batch ones (the plain average for equal batches).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

Batch = tuple[torch.Tensor, torch.Tensor]
Part = tuple[torch.Tensor, torch.Tensor, float]  # inputs, targets, weight within its objective


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode (and gradients enabled) for the duration, then every submodule's own mode back.

    The harness already calls ``model.eval()`` (harness/run/metrics.py); this makes a metric safe to call
    directly on a model in training mode, where BatchNorm would otherwise update its running statistics.
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.enable_grad():
            yield
    finally:
        for module, training in modes:
            module.training = training


def batch_size(batch: Batch) -> int:
    """Number of examples in a batch: the leading dimension of the targets (or inputs), else 1."""
    for tensor in (batch[1], batch[0]):
        if isinstance(tensor, torch.Tensor) and tensor.ndim > 0:
            return int(tensor.shape[0])
    return 1


def error_rate(outputs: torch.Tensor, targets: torch.Tensor) -> float | None:
    """Fraction of examples whose arg-max logit is not the target; ``None`` when not a classification."""
    classification = (
        isinstance(outputs, torch.Tensor)
        and isinstance(targets, torch.Tensor)
        and outputs.ndim == 2
        and targets.ndim == 1
        and outputs.shape[0] == targets.shape[0]
        and not targets.is_floating_point()
    )
    if not classification:
        return None
    return float((outputs.argmax(dim=1) != targets).double().mean().item())


class LossSurface:
    """``w -> loss_fn(model(x; w), y)`` over ``batches``, with flat float64 vectors over the parameters.

    Only parameters with ``requires_grad`` count (frozen ones stay at their values); ``size`` is their
    total number of entries.
    """

    def __init__(self, model: nn.Module, batches: Sequence[Batch], loss_fn: Callable[..., torch.Tensor]) -> None:
        if not batches:
            raise ValueError("a sharpness metric needs at least one batch; got an empty list")
        named = [(name, param) for name, param in model.named_parameters() if param.requires_grad]
        if not named:
            raise ValueError(f"{type(model).__name__} has no parameter with requires_grad=True")
        self.model = model
        self.loss_fn = loss_fn
        self.names = [name for name, _ in named]
        self.base = [param.detach() for _, param in named]
        self.numels = [param.numel() for param in self.base]
        self.size = sum(self.numels)
        self.device = self.base[0].device
        self.batches = list(batches)
        sizes = [batch_size(batch) for batch in self.batches]
        total = float(sum(sizes))
        self.weights = [size / total for size in sizes]

    # -- flat vectors -------------------------------------------------------------------------------

    def zeros(self) -> torch.Tensor:
        return torch.zeros(self.size, dtype=torch.float64, device=self.device)

    def flatten(self, tensors: Sequence[torch.Tensor | None]) -> torch.Tensor:
        """Concatenate per-parameter tensors (``None`` = zeros) into one float64 vector."""
        pieces = [
            torch.zeros(numel, dtype=torch.float64, device=self.device)
            if tensor is None
            else tensor.detach().reshape(-1).to(torch.float64)
            for tensor, numel in zip(tensors, self.numels, strict=True)
        ]
        return torch.cat(pieces)

    def unflatten(self, vector: torch.Tensor) -> list[torch.Tensor]:
        """Split a flat vector into tensors shaped and typed like the parameters."""
        return [
            piece.view_as(param).to(param.dtype)
            for piece, param in zip(torch.split(vector, self.numels), self.base, strict=True)
        ]

    # -- evaluation ---------------------------------------------------------------------------------

    def leaves(self, offset: torch.Tensor | None = None, *, requires_grad: bool = True) -> list[torch.Tensor]:
        """Fresh leaf tensors at ``w`` (sharing the parameters' storage) or at ``w + offset``."""
        if offset is None:
            return [param.detach().requires_grad_(requires_grad) for param in self.base]
        return [
            (param + delta).detach().requires_grad_(requires_grad)
            for param, delta in zip(self.base, self.unflatten(offset), strict=True)
        ]

    def loss(self, leaves: Sequence[torch.Tensor], inputs: torch.Tensor, targets: torch.Tensor) -> tuple:
        """``(loss, outputs)`` of one batch at the parameter values ``leaves``."""
        outputs = functional_call(self.model, dict(zip(self.names, leaves, strict=True)), (inputs,))
        return self.loss_fn(outputs, targets), outputs

    def parts(self) -> list[Part]:
        """The whole subset as one objective: every batch with its weight ``n_b / N``."""
        return [(inputs, targets, weight) for (inputs, targets), weight in zip(self.batches, self.weights, strict=True)]

    def evaluate(
        self, parts: Sequence[Part], offset: torch.Tensor | None = None, *, grad: bool
    ) -> tuple[float, float | None, torch.Tensor | None]:
        """Weighted loss, error rate (``None`` if not a classification) and gradient (if ``grad``) of
        ``sum_p weight_p * L_p(w + offset)``; one forward (and backward) pass per part."""
        leaves = self.leaves(offset, requires_grad=grad)
        loss_sum, error_sum = 0.0, 0.0
        gradient = self.zeros() if grad else None
        for inputs, targets, weight in parts:
            with torch.set_grad_enabled(grad):
                loss, outputs = self.loss(leaves, inputs, targets)
            if gradient is not None:
                gradient.add_(self.flatten(torch.autograd.grad(loss, leaves, allow_unused=True)), alpha=weight)
            loss_sum += weight * float(loss.detach().item())
            error = error_rate(outputs.detach(), targets)
            error_sum = None if error is None or error_sum is None else error_sum + weight * error
        return loss_sum, error_sum, gradient


class HessianOperator:
    """``v -> H v`` for the Hessian ``H`` of the subset's loss, by double backward (Pearlmutter's trick).

    One call costs one Hessian-vector product per batch (``batch_hvps`` counts them): a forward pass, a
    backward pass with ``create_graph=True`` and a second backward pass. With a single batch the graph of
    the first backward pass is kept and reused (as PyHessian does for one batch); that holds no more memory
    than one product needs anyway. With several batches it is rebuilt per batch and call, so memory stays
    that of one batch.
    """

    def __init__(self, surface: LossSurface) -> None:
        self.surface = surface
        self.batch_hvps = 0
        self._cached: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None

    def graph(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Leaves at ``w`` and the batch loss's gradient with its graph (``create_graph=True``).

        Attention runs on the math kernel here: the fused ones (flash, memory-efficient) that
        ``scaled_dot_product_attention`` picks for timm's ViTs have no double backward.
        """
        leaves = self.surface.leaves()
        with sdpa_kernel(SDPBackend.MATH):
            loss, _ = self.surface.loss(leaves, inputs, targets)
            grads = torch.autograd.grad(loss, leaves, create_graph=True, allow_unused=True)
        return leaves, list(grads)

    def product(
        self, leaves: list[torch.Tensor], grads: list[torch.Tensor], vector: torch.Tensor, *, retain: bool
    ) -> torch.Tensor:
        """``H_b v`` as a flat float64 vector, from the graph of one batch's gradient."""
        self.batch_hvps += 1
        pieces = self.surface.unflatten(vector)
        terms = [(g * v).sum() for g, v in zip(grads, pieces, strict=True) if g is not None and g.requires_grad]
        if not terms:  # the gradient does not depend on the parameters: H = 0
            return self.surface.zeros()
        hv = torch.autograd.grad(torch.stack(terms).sum(), leaves, retain_graph=retain, allow_unused=True)
        return self.surface.flatten(hv)

    def __call__(self, vector: torch.Tensor) -> torch.Tensor:
        surface = self.surface
        if len(surface.batches) == 1:
            if self._cached is None:
                self._cached = self.graph(*surface.batches[0])
            return self.product(*self._cached, vector, retain=True)
        total = surface.zeros()
        for (inputs, targets), weight in zip(surface.batches, surface.weights, strict=True):
            leaves, grads = self.graph(inputs, targets)
            total.add_(self.product(leaves, grads, vector, retain=False), alpha=weight)
        return total


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU generator: random vectors are drawn on the CPU so a seed gives the same ones on every device."""
    return torch.Generator().manual_seed(int(seed))
