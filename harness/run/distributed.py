"""One run across several processes: data-parallel training with DDP (``--nproc N`` or torchrun).

The large-batch settings of LookSAM / LayerSAM (000 Sec. 4.3) train one run on many devices. Every
rank draws the same global batch (same seeded order and augmentation) and trains on its own slice;
DDP averages gradients across ranks in backward. ``perturbation_scope`` says which gradient the
perturbation is computed from:

- ``global``: the all-reduced gradient, so the step equals single-process SAM on the global batch;
- ``local``: each rank's own gradient (the first pass runs under DDP's ``no_sync``), so each rank is
  perturbed separately and the perturbed gradients are averaged: SAM's m-sharpness with m the
  per-rank batch, what the SAM paper's data parallelism does (003 Sec. 4.1, footnote 5).

With ``local`` the schedulers' decisions must agree across ranks, so ``SyncedScheduler`` averages the
squared gradient norm over ranks before a scheduler sees it (AE-SAM reads it: the mean of the ranks'
||g_r||^2, the local-scope analogue of AE-SAM's statistic, not ||g||^2 of the global batch). Only the
perturbation is local: wherever the clean gradient is used beyond it (the update of an unperturbed step
of SAM-k, SS-SAM, AE-SAM, LookSAM or ERM; GSAM's and LookSAM's decompositions) the optimizer averages
it over ranks first (``SharpnessAwareOptimizer.rank_mean`` = ``mean_over_ranks_``), so every rank
applies the same update and the replicas stay identical.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from harness.contract.optim import PerturbationScheduler, StepContext


def free_port() -> int:
    """A TCP port free on this host for the process group's rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def init(rank: int, world_size: int, port: int, device: torch.device) -> None:
    """Join the process group (gloo on CPU, NCCL on CUDA) through a TCP rendezvous on localhost."""
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ["MASTER_PORT"] = str(port)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=rank, world_size=world_size)


def active() -> bool:
    """Whether this process is one rank of a process group."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` inside DistributedDataParallel when running in a process group."""
    if not active():
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def local_slice(inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's equal share of a global batch."""
    if not active():
        return inputs, targets
    size = inputs.shape[0] // world_size()
    start = rank() * size
    return inputs[start : start + size], targets[start : start + size]


def first_pass_context(model: nn.Module, scope: str) -> Callable[[], AbstractContextManager] | None:
    """``no_sync`` for the first pass under the local scope; nothing otherwise."""
    if active() and scope == "local" and isinstance(model, nn.parallel.DistributedDataParallel):
        return model.no_sync
    return None


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """The mean of a tensor across ranks (itself outside a process group)."""
    if not active():
        return value
    value = value.clone()
    dist.all_reduce(value)
    return value / world_size()


def mean_over_ranks_(tensors: list[torch.Tensor]) -> None:
    """Average ``tensors`` across ranks in place, in one all-reduce over a flat buffer.

    Every rank must pass tensors of the same shapes in the same order (``SharpnessAwareOptimizer``
    passes one per trainable parameter, zeros where a rank has no gradient), or the collective hangs.
    """
    if not active():
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= world_size()
    torch._foreach_copy_(
        tensors, [piece.view_as(t) for piece, t in zip(flat.split([t.numel() for t in tensors]), tensors, strict=True)]
    )


class SyncedScheduler(PerturbationScheduler):
    """A scheduler that sees the squared gradient norm averaged over ranks, so every rank decides alike."""

    def __init__(self, inner: PerturbationScheduler) -> None:
        self.inner = inner

    def decide(self, ctx: StepContext) -> tuple[bool, float]:
        synced = StepContext(
            step=ctx.step,
            total_steps=ctx.total_steps,
            lr=ctx.lr,
            grad_sq_norm=mean_over_ranks(ctx.grad_sq_norm),
            lr_max=ctx.lr_max,
            lr_min=ctx.lr_min,
        )
        return self.inner.decide(synced)

    def warmup_steps(self, total_steps: int) -> int:
        return self.inner.warmup_steps(total_steps)

    def expected_perturbed_fraction(self, total_steps: int) -> float | None:
        return self.inner.expected_perturbed_fraction(total_steps)

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)


def shutdown() -> None:
    """Leave the process group."""
    if active():
        dist.destroy_process_group()
