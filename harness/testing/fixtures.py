"""The small, fixed things the contract rules run on: a tiny network, batches, a base optimizer, contexts.

``ContractNet`` is built to expose the classic SAM bugs in a few microseconds per step:

- a BatchNorm layer (its running statistics must be updated by the first pass of a step only);
- a frozen parameter (``requires_grad=False``) that sits in the base optimizer's parameter groups, as it
  does when a user passes ``model.parameters()`` (it must never move);
- a ``branch`` used only on odd forward calls: the kit resets the call counter before every step, so the
  branch takes part in the first pass of a step and not in the second (its weights get no gradient there,
  and must still be restored: davda54/sam's restore depends on pass-2 gradients, shared/STYLE.md).

The base optimizer is SGD with two parameter groups of different learning rates.
"""

from __future__ import annotations

import io
import math
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.contract.optim import StepContext, StepInfo
from harness.plugins import Registry
from harness.run.build import seed_everything
from harness.run.closure import BatchClosure, batchnorm_modules
from harness.run.precision import Precision
from harness.testing.base import ContractSkip, ContractViolation

FEATURES, HIDDEN, CLASSES, BATCH = 6, 8, 3, 16
FAST_LR, SLOW_LR = 0.1, 0.03
TOTAL_STEPS = 8

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class ContractNet(nn.Module):
    """Linear -> BatchNorm -> tanh, plus a frozen shift, an optional odd-call branch, and a linear head."""

    def __init__(self, branch: bool = True) -> None:
        super().__init__()
        self.trunk = nn.Linear(FEATURES, HIDDEN)
        self.norm = nn.BatchNorm1d(HIDDEN)
        self.branch = nn.Linear(HIDDEN, HIDDEN)
        self.head = nn.Linear(HIDDEN, CLASSES)
        self.frozen = nn.Parameter(0.1 * torch.randn(HIDDEN), requires_grad=False)
        self.use_branch = branch
        self.calls = 0

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        hidden = torch.tanh(self.norm(self.trunk(inputs))) + self.frozen
        if self.use_branch and self.calls % 2 == 1:
            hidden = hidden + torch.tanh(self.branch(hidden))
        return self.head(hidden)


def contract_net(seed: int = 0, *, branch: bool = True) -> ContractNet:
    """A ``ContractNet`` initialized under ``seed`` (Python, NumPy and torch seeded as the runner does)."""
    seed_everything(seed)
    return ContractNet(branch)


def batch(step: int, size: int = BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch of step ``step``: inputs and labels from a generator seeded by the step."""
    generator = torch.Generator().manual_seed(1000 + step)
    return torch.randn(size, FEATURES, generator=generator), torch.randint(0, CLASSES, (size,), generator=generator)


def base_optimizer(model: ContractNet, *, momentum: float = 0.0, weight_decay: float = 0.0) -> torch.optim.SGD:
    """SGD over every parameter (the frozen one included) in two groups: lr 0.1 (trunk) and 0.03 (head)."""
    fast = [model.trunk.weight, model.trunk.bias, model.norm.weight, model.norm.bias, model.frozen]
    slow = [model.branch.weight, model.branch.bias, model.head.weight, model.head.bias]
    return torch.optim.SGD(
        [{"params": fast, "lr": FAST_LR}, {"params": slow, "lr": SLOW_LR}],
        lr=FAST_LR,
        momentum=momentum,
        weight_decay=weight_decay,
    )


def create(registry: Registry, kind: str, name: str, *args: Any, **params: Any) -> Any:
    """``registry.create``; a factory that raises is a violation naming the call."""
    try:
        return registry.create(kind, name, *args, **params)
    except Exception as error:
        shown = ", ".join(f"{key}={value!r}" for key, value in params.items() if key != "base_optimizer")
        raise ContractViolation(
            f"building it with its defaults{' and ' + shown if shown else ''} raised {type(error).__name__}: {error}"
        ) from error


def kit_scheduler(registry: Registry, name: str, **params: Any) -> Any:
    """A scheduler the kit drives optimizers with (``constant``, ``periodic``: built into sam-harness)."""
    if name not in registry.names("scheduler"):
        raise ContractSkip(f"the kit drives optimizers with the scheduler {name!r} of sam-harness, which is not loaded")
    return registry.create("scheduler", name, **params)


def build_optimizer(
    registry: Registry,
    name: str,
    model: ContractNet,
    scheduler: Any,
    *,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    **hparams: Any,
) -> tuple[torch.optim.Optimizer, torch.optim.SGD]:
    """The optimizer ``name`` over ``model`` as the runner builds it; returns it and its base optimizer."""
    base = base_optimizer(model, momentum=momentum, weight_decay=weight_decay)
    trained = {id(p) for group in base.param_groups for p in group["params"]}
    params = [(key, p) for key, p in model.named_parameters() if id(p) in trained]
    optimizer = create(registry, "optimizer", name, params, base_optimizer=base, scheduler=scheduler, **hparams)
    optimizer.total_steps = TOTAL_STEPS
    optimizer.lr_range = (0.0, FAST_LR)
    return optimizer, base


@dataclass
class StepRecord:
    """One optimizer step as the kit saw it."""

    loss: Any
    info: Any
    calls: int
    evaluations: float
    forwards: int
    forward_only: int = 0  # the closure's forward passes without a gradient (``BatchClosure.sample_losses``)


def take_step(
    model: ContractNet,
    optimizer: torch.optim.Optimizer,
    step: int,
    loss_fn: LossFn = F.cross_entropy,
    precision: Precision | None = None,
) -> StepRecord:
    """One ``optimizer.step(closure)`` with the runner's closure on the batch of ``step``."""
    inputs, targets = batch(step)
    model.calls = 0
    closure = BatchClosure(
        model, loss_fn, inputs, targets, batchnorm_modules(model), precision=precision, params=list(model.parameters())
    )
    optimizer.last_step = None
    try:
        loss = optimizer.step(closure)
        closure.finish()  # as the runner does after every step
    except Exception as error:
        raise ContractViolation(
            f"step {step}: optimizer.step(closure) raised {type(error).__name__}: {error}"
        ) from error
    info = getattr(optimizer, "last_step", None)
    return StepRecord(loss, info, closure.calls, closure.evaluations, model.calls, closure.forward_only)


def check_step_info(info: Any, step: int) -> StepInfo:
    """``info`` as a valid ``StepInfo``, or a violation saying what is wrong with it."""
    if not isinstance(info, StepInfo):
        raise ContractViolation(
            f"after step {step}, optimizer.last_step is {info!r}; every step must set it to a "
            "harness.StepInfo(perturbed, rho, extras)"
        )
    if not isinstance(info.perturbed, bool):
        raise ContractViolation(f"step {step}: StepInfo.perturbed is {info.perturbed!r}; expected a bool")
    rho = info.rho
    if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not math.isfinite(rho) or rho < 0:
        raise ContractViolation(f"step {step}: StepInfo.rho is {rho!r}; expected a finite float >= 0")
    if not info.perturbed and rho != 0:
        raise ContractViolation(f"step {step}: an unperturbed step reports rho={rho!r}; report 0.0")
    if not isinstance(info.extras, dict):
        raise ContractViolation(f"step {step}: StepInfo.extras is {type(info.extras).__name__}; expected a dict")
    return info


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every parameter and buffer of ``model``, by name."""
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every parameter of ``model``, by name."""
    return {key: p.detach().clone() for key, p in model.named_parameters()}


def record_base_steps(base: torch.optim.Optimizer, model: nn.Module) -> list[dict[str, Any]]:
    """Wrap ``base.step`` to record, at every call, the weights, gradients and group learning rates it sees."""
    seen: list[dict[str, Any]] = []
    original = base.step

    def recording_step(*args: Any, **kwargs: Any) -> Any:
        seen.append(
            {
                "weights": parameters(model),
                "grads": {k: None if p.grad is None else p.grad.clone() for k, p in model.named_parameters()},
                "lrs": [group["lr"] for group in base.param_groups],
            }
        )
        return original(*args, **kwargs)

    base.step = recording_step
    return seen


def round_trip(state: Any, what: str) -> Any:
    """``state`` after ``torch.save`` and ``torch.load``, as a checkpoint would carry it."""
    buffer = io.BytesIO()
    try:
        torch.save(state, buffer)
    except (pickle.PicklingError, TypeError, AttributeError) as error:
        raise ContractViolation(f"{what} cannot be saved with torch.save: {type(error).__name__}: {error}") from error
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def step_contexts(total_steps: int, steps: range | None = None, *, seed: int = 0) -> list[StepContext]:
    """Contexts of ``steps`` (default: all) of a run of ``total_steps``: a cosine learning rate from 0.1 to
    0.001, and a squared gradient norm drawn per step (the same for a step whatever the range)."""
    lr_max, lr_min = 0.1, 0.001
    contexts = []
    for step in steps if steps is not None else range(total_steps):
        progress = min(step / max(total_steps, 1), 1.0)
        contexts.append(
            StepContext(
                step=step,
                total_steps=total_steps,
                lr=lr_min + 0.5 * (lr_max - lr_min) * (1 + math.cos(math.pi * progress)),
                grad_sq_norm=torch.tensor(math.exp(np.random.default_rng((seed, step)).normal())),
                lr_max=lr_max,
                lr_min=lr_min,
            )
        )
    return contexts


CIFAR_LAYOUTS = {
    "cifar-10-batches-py": ([f"data_batch_{i}" for i in range(1, 6)], "test_batch", "batches.meta", b"labels", 10),
    "cifar-100-python": (["train"], "test", "meta", b"fine_labels", 100),
}


def write_tiny_cifar(root: Path, *, train: int = 300, test: int = 120) -> Path:
    """Write tiny CIFAR-10 and CIFAR-100 in torchvision's on-disk layout under ``root``; return ``root``.

    The format is the published one (pickled dicts with bytes keys, uint8 ``data`` of shape (N, 3072));
    the images are random, so datasets that read CIFAR files can be checked without the real archives.
    """
    generator = np.random.default_rng(0)
    for folder, (train_files, test_file, meta_file, label_key, classes) in CIFAR_LAYOUTS.items():
        path = root / folder
        path.mkdir(parents=True, exist_ok=True)
        sizes = [(name, train // len(train_files)) for name in train_files] + [(test_file, test)]
        for name, count in sizes:
            entry = {
                b"batch_label": name.encode(),
                label_key: [int(v) for v in generator.integers(0, classes, size=count)],
                b"data": generator.integers(0, 256, size=(count, 3072), dtype=np.uint8),
                b"filenames": [b"kit.png"] * count,
            }
            if classes == 100:
                entry[b"coarse_labels"] = [label % 20 for label in entry[label_key]]
            with (path / name).open("wb") as stream:
                pickle.dump(entry, stream, protocol=2)
        names = [f"class{i}".encode() for i in range(classes)]
        meta = {b"label_names": names} if classes == 10 else {b"fine_label_names": names, b"coarse_label_names": []}
        with (path / meta_file).open("wb") as stream:
            pickle.dump(meta, stream, protocol=2)
    return root
