"""The references ``harness bench`` compares the harness's steps with, each stepping its own loop.

kozistr's pytorch-optimizer ``SAM`` and ``GSAM`` with the same base optimizer class and hyperparameters,
rho and alpha, and two bare hand-written PyTorch loops with the same base optimizer: ERM (zero_grad,
forward, backward, step) and SAM (the textbook two passes with ``torch._foreach_*`` kernels and a
persistent weight backup). Each gets the model, base optimizer and precision that
``harness.run.build.build`` built for its counterpart preset's run, so the harness's overhead is the
harness step over the bare step. A reference counts its steps in a ``RunState`` as the runner does.
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.bench.candidate import Candidate
from harness.bench.config import SAM_RHO
from harness.contract.run_spec import RunSpec
from harness.run.build import Setup, build_base_optimizer
from harness.run.row import RunState


def kozistr_sam(po: Any, module: nn.Module, settings: dict[str, Any]) -> Any:
    """pytorch-optimizer's ``SAM`` (module ``po``) over ``module`` with the base optimizer the runner builds
    from ``settings`` (timm's parameter groups, class and hyperparameters) and rho ``SAM_RHO``."""
    shape = build_base_optimizer(module, dict(settings))
    groups = [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in shape.param_groups]
    options = {k: v for k, v in shape.defaults.items() if k != "weight_decay"}
    return po.SAM(groups, base_optimizer=type(shape), rho=SAM_RHO, **options)


def kozistr(name: str, po: Any, run: RunSpec, setup: Setup, inputs: torch.Tensor, targets: torch.Tensor) -> Candidate:
    """``po-sam`` or ``po-gsam`` (pytorch-optimizer, module ``po``) on the model ``setup`` holds.

    ``run`` is the counterpart preset's: SAM takes its base optimizer, GSAM its rho range and alpha too.
    """
    call, precision, state = setup.train_model, setup.precision, RunState()
    if name == "po-sam":
        optimizer = kozistr_sam(po, setup.model, dict(run.base_optimizer))
        base_optimizer = optimizer.base_optimizer

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            with precision.autocast():
                loss = F.cross_entropy(call(inputs), targets)
            loss.backward()
            return loss

        def step() -> None:
            closure()  # its step() expects the clean gradient already computed
            optimizer.step(closure)
            _count(state, perturbed=True)
    else:
        base_optimizer = setup.base_optimizer
        rho = po.ProportionScheduler(
            types.SimpleNamespace(optimizer=base_optimizer),
            max_lr=float(run.base_optimizer["lr"]),
            min_lr=0.0,
            max_value=run.scheduler_params.get("rho_max", 0.04),
            min_value=run.scheduler_params.get("rho_min", 0.02),
        )
        optimizer = po.GSAM(
            setup.model.parameters(),
            base_optimizer=base_optimizer,
            model=call,
            rho_scheduler=rho,
            alpha=run.optimizer_params.get("alpha", 0.01),
        )

        def step() -> None:
            optimizer.set_closure(F.cross_entropy, inputs, targets)
            with precision.autocast():
                optimizer.step()
            optimizer.update_rho_t()
            _count(state, perturbed=True)

    return Candidate(
        name=name,
        kind="reference",
        step=step,
        optimizer=optimizer,
        model=setup.model,
        base_optimizer=base_optimizer,
        optimizer_name=f"pytorch_optimizer.{type(optimizer).__name__}",
        expected_fraction=1.0,
        state=state,
    )


def bare(name: str, setup: Setup, inputs: torch.Tensor, targets: torch.Tensor) -> Candidate:
    """``bare-erm`` or ``bare-sam``: a hand-written loop over the model and base optimizer ``setup`` holds."""
    call, precision, base_optimizer, state = setup.train_model, setup.precision, setup.base_optimizer, RunState()
    params = [p for group in base_optimizer.param_groups for p in group["params"]]
    backup: list[torch.Tensor] = []

    def forward_backward() -> torch.Tensor:
        with precision.autocast():
            loss = F.cross_entropy(call(inputs), targets)
        loss.backward()
        return loss

    if name == "bare-erm":

        def step() -> None:
            base_optimizer.zero_grad(set_to_none=True)
            forward_backward()
            base_optimizer.step()
            _count(state, perturbed=False)
    else:
        backup = [torch.empty_like(p) for p in params]

        @torch.no_grad()
        def step() -> None:
            base_optimizer.zero_grad(set_to_none=True)
            with torch.enable_grad():
                forward_backward()
            grads = [p.grad for p in params]
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
            torch._foreach_copy_(backup, params)
            torch._foreach_mul_(grads, SAM_RHO / (norm + 1e-12))
            torch._foreach_add_(params, grads)
            base_optimizer.zero_grad(set_to_none=True)
            with torch.enable_grad():
                forward_backward()
            torch._foreach_copy_(params, backup)
            base_optimizer.step()
            _count(state, perturbed=True)

    return Candidate(
        name=name,
        kind="bare",
        step=step,
        optimizer=base_optimizer,
        model=setup.model,
        base_optimizer=base_optimizer,
        optimizer_name=f"bare loop, {type(base_optimizer).__name__}",
        expected_fraction=0.0 if name == "bare-erm" else 1.0,
        state=state,
        extra_held=backup,
    )


def _count(state: RunState, *, perturbed: bool) -> None:
    """Count one step in ``state`` as ``train_step`` does: one gradient evaluation, two when perturbed."""
    state.steps += 1
    state.perturbed_steps += int(perturbed)
    state.grad_evals += 2 if perturbed else 1
