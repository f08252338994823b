"""A batch in sub-batches: splitting it, accumulating their gradients, and BatchNorm's statistics over them.

Two mechanisms run a step's batch in pieces: m-sharpness's chunks (``BatchClosure.chunks``, SAM paper Sec. 4.1)
and gradient accumulation's micro-batches (the run setting ``micro_batch_size``; the adapters'
``micro_batch_size``). Both leave BatchNorm's running statistics as one update per step with the pieces' mean
batch statistics (``SubBatchStatistics``). ``accumulate`` is the micro-batch loop that ``BatchClosure`` and the
Lightning and Hugging Face adapters share; ``split_batch`` cuts a batch of any nesting (a tensor, a tuple or
list, a dict of tensors, as a ``training_step`` or a Trainer receives it) along its first dimension.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from harness.errors import UsageError


class SubBatchStatistics:
    """BatchNorm running statistics of one m-sharpness step: the mean of what each chunk's clean pass gives.

    Before each chunk's clean pass the buffers go back to the step's starting values; after it they
    are set to the mean over the chunks seen so far, weighted by chunk size (as ``SAM`` weights the
    sub-batch gradients), so after the last chunk they hold that mean over all chunks, with
    ``num_batches_tracked`` advanced once. For the exponential average this equals
    one update with the chunks' mean batch statistics, as the SAM reference code's cross-device mean of
    batch statistics gives (003 Sec. 4.1; seed_sam_gsam.md A.2).
    """

    def __init__(self, modules: Sequence[_BatchNorm]) -> None:
        self.modules = modules
        self.start: list[list[torch.Tensor]] | None = None
        self.total: list[torch.Tensor] = []
        self.examples = 0

    def _buffers(self) -> list[torch.Tensor]:
        return [b for m in self.modules for b in (m.running_mean, m.running_var) if b is not None]

    def _counters(self) -> list[torch.Tensor]:
        return [m.num_batches_tracked for m in self.modules if m.num_batches_tracked is not None]

    @contextmanager
    def pass_of_one_chunk(self, examples: int) -> Iterator[None]:
        if not self.modules:
            yield
            return
        buffers = self._buffers()
        if self.start is None:
            self.start = [[b.clone() for b in buffers], [c.clone() for c in self._counters()]]
            self.total = [torch.zeros_like(b) for b in buffers]
        else:
            torch._foreach_copy_(buffers, self.start[0])
            torch._foreach_copy_(self._counters(), self.start[1])
        yield
        self.examples += examples
        torch._foreach_add_(self.total, buffers, alpha=examples)
        torch._foreach_copy_(buffers, torch._foreach_div(self.total, float(self.examples)))


def _tensors(batch: Any) -> Iterator[torch.Tensor]:
    if isinstance(batch, torch.Tensor):
        yield batch
    elif isinstance(batch, Mapping):
        for value in batch.values():
            yield from _tensors(value)
    elif isinstance(batch, (tuple, list)):
        for value in batch:
            yield from _tensors(value)


def _sliced(batch: Any, start: int, stop: int) -> Any:
    """``batch`` with every tensor of one or more dimensions cut to ``[start:stop]``; everything else as is."""
    if isinstance(batch, torch.Tensor):
        return batch[start:stop] if batch.dim() > 0 else batch
    if isinstance(batch, Mapping):
        return type(batch)({key: _sliced(value, start, stop) for key, value in batch.items()})
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a named tuple
        return type(batch)(*(_sliced(value, start, stop) for value in batch))
    if isinstance(batch, (tuple, list)):
        return type(batch)(_sliced(value, start, stop) for value in batch)
    return batch


def split_batch(batch: Any, size: int, owner: str) -> list[tuple[int, Any]]:
    """``batch`` as consecutive micro-batches of ``size`` examples (the last may be smaller): (examples, piece).

    Every tensor of one or more dimensions is cut along its first; they must agree on its length, the batch size.
    Scalars and non-tensors go to every piece unchanged.
    """
    lengths = {int(tensor.shape[0]) for tensor in _tensors(batch) if tensor.dim() > 0}
    if len(lengths) != 1:
        raise UsageError(
            f"{owner}: micro_batch_size={size} splits a batch along the first dimension of its tensors, which must "
            f"all have one length (the batch size); found {sorted(lengths) or 'no tensor'}"
        )
    (batch_size,) = lengths
    return [
        (min(size, batch_size - start), _sliced(batch, start, start + size)) for start in range(0, batch_size, size)
    ]


def accumulate(
    pieces: Sequence[tuple[int, Any]],
    loss_on: Callable[[Any], torch.Tensor],
    backward: Callable[[torch.Tensor], torch.Tensor],
    model: nn.Module,
    statistics_of: Sequence[_BatchNorm] = (),
) -> torch.Tensor:
    """One pass over ``pieces`` ((examples, piece) pairs): each piece's loss weighted by its share of the batch and
    backpropagated, so the gradients add up to the whole batch's; returns the batch loss, detached.

    backward: backpropagates a loss and returns it detached (a scaler's scaling goes there).
    model: with ``no_sync`` (DDP), the gradients are all-reduced once, on the last piece.
    statistics_of: the BatchNorm layers whose running statistics this pass updates (the step's first pass),
        left as one update with the pieces' mean statistics (``SubBatchStatistics``); () updates nothing more.
    """
    batch_size = sum(examples for examples, _ in pieces)
    statistics = SubBatchStatistics(statistics_of) if statistics_of else None
    no_sync = getattr(model, "no_sync", None)
    total = None
    for index, (examples, piece) in enumerate(pieces):
        last = index == len(pieces) - 1
        with statistics.pass_of_one_chunk(examples) if statistics is not None else nullcontext():
            with no_sync() if no_sync is not None and not last else nullcontext():
                loss = backward(loss_on(piece) * (examples / batch_size))
        total = loss if total is None else total + loss
    return total
