"""The contract of optimizers (``register_optimizers``): the step protocol of ``harness.contract.optim``.

Every rule builds the optimizer with its registered defaults on ``ContractNet`` (``harness.testing.fixtures``)
and steps it with the runner's ``BatchClosure``, so a plugin is checked exactly as it will be driven.

Tolerances: weights are compared bit for bit, with two documented allowances.

- Exact restore: an optimizer whose restore is exact only up to rounding (nuSAM adds and then subtracts its
  rank-1 perturbation in place, by design) declares the largest difference it guarantees as a class or
  instance attribute ``restore_tolerance`` (a float; 0, bit for bit, when absent).
- rho=0: after three steps the weights equal the base optimizer's within ``RHO_ZERO_ATOL`` (1e-6), because a
  variant may rebuild the gradient it hands to the base optimizer (GSAM's projection, m-sharpness's sub-batch
  sums) and get the clean gradient back only to rounding. The faults this rule is for (weight decay applied
  twice, a perturbation that is not zero, the wrong learning rate) are orders of magnitude larger.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F

from harness.contract.held import held_tensors, reachable_generators
from harness.plugins import Registry
from harness.run.closure import BatchClosure, batchnorm_modules
from harness.run.precision import Precision, fp16_autocast_available
from harness.testing.base import ContractSkip, ContractViolation, first_difference, is_finite_number, rule
from harness.testing.fixtures import (
    FAST_LR,
    SLOW_LR,
    base_optimizer,
    batch,
    build_optimizer,
    check_step_info,
    contract_net,
    kit_scheduler,
    parameters,
    record_base_steps,
    round_trip,
    snapshot,
    take_step,
)

RHO_ZERO_ATOL = 1e-6


def restore_tolerance(optimizer: Any) -> float:
    """The largest weight difference ``optimizer`` allows itself in a restore (0: bit for bit)."""
    return float(getattr(optimizer, "restore_tolerance", 0.0))


def _setup(
    registry: Registry,
    name: str,
    scheduler: str = "constant",
    *,
    scheduler_params: dict[str, Any] | None = None,
    seed: int = 0,
    branch: bool = True,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
) -> tuple[Any, Any, torch.optim.SGD]:
    """``ContractNet`` under ``seed``, the optimizer ``name`` on it (driven by ``scheduler``, rho 0.05 unless
    given), and its base optimizer."""
    model = contract_net(seed, branch=branch)
    driver = kit_scheduler(registry, scheduler, **{"rho": 0.05, **(scheduler_params or {})})
    optimizer, base = build_optimizer(registry, name, model, driver, momentum=momentum, weight_decay=weight_decay)
    return model, optimizer, base


def _alternating(registry: Registry) -> tuple[str, dict[str, Any]]:
    """A scheduler whose perturbed and unperturbed steps alternate (``periodic``, k=2), else ``constant``."""
    return ("periodic", {"k": 2}) if "periodic" in registry.names("scheduler") else ("constant", {})


def _differs(what: str, expected: dict, actual: dict, tolerance: float) -> None:
    found = first_difference(expected, actual, tolerance)
    if found is not None:
        key, amount = found
        allowed = "bit for bit" if tolerance == 0 else f"within {tolerance:g}"
        raise ContractViolation(f"{what}: {key!r} differs by {amount:.3g} (expected equal {allowed})")


@rule("optimizer", "step_info", "step(closure) returns the loss and sets last_step to a valid StepInfo")
def step_info(registry: Registry, name: str) -> None:
    model, optimizer, _ = _setup(registry, name)
    for step in range(3):
        record = take_step(model, optimizer, step)
        check_step_info(record.info, step)
        loss = record.loss
        if not (torch.is_tensor(loss) and loss.numel() == 1) and not is_finite_number(loss):
            raise ContractViolation(f"step {step}: step(closure) returned {loss!r}; return the loss (a scalar)")
        if not math.isfinite(float(loss)):
            raise ContractViolation(f"step {step}: step(closure) returned a non-finite loss {float(loss)}")


@rule(
    "optimizer",
    "gradient_evaluations",
    "the closure runs exactly the passes the StepInfo implies (2 perturbed, 1 not), and no pass outside it",
)
def gradient_evaluations(registry: Registry, name: str) -> None:
    scheduler, params = _alternating(registry)
    model, optimizer, _ = _setup(registry, name, scheduler, scheduler_params=params)
    for step in range(4):
        record = take_step(model, optimizer, step)
        info = check_step_info(record.info, step)
        expected = info.extras.get("gradient_evaluations", 2 if info.perturbed else 1)
        if abs(record.evaluations - float(expected)) > 1e-6:
            said = "perturbed" if info.perturbed else "unperturbed"
            raise ContractViolation(
                f"step {step}: StepInfo says {said}, which is {float(expected):g} gradient evaluation(s), but the "
                f"closure counted {record.evaluations:g} ({record.calls} call(s)); a perturbed step runs the "
                "closure twice and an unperturbed one once (an optimizer that needs more reports "
                "extras['gradient_evaluations'])"
            )
        if record.forwards != record.calls + record.forward_only:
            raise ContractViolation(
                f"step {step}: the model ran {record.forwards} forward pass(es) but the closure only "
                f"{record.calls + record.forward_only}; "
                "every pass must go through the closure, which counts it and keeps BatchNorm and the RNG in order"
            )


@rule("optimizer", "rho_zero", "with a constant rho=0 the optimizer takes the base optimizer's steps")
def rho_zero(registry: Registry, name: str) -> None:
    settings = {"momentum": 0.9, "weight_decay": 5e-4}
    reference = contract_net(0, branch=False)
    base = base_optimizer(reference, **settings)
    model, optimizer, _ = _setup(registry, name, scheduler_params={"rho": 0.0}, branch=False, **settings)
    for step in range(3):
        inputs, targets = batch(step)
        BatchClosure(reference, F.cross_entropy, inputs, targets, batchnorm_modules(reference))()
        base.step()
        take_step(model, optimizer, step)
    _differs(
        "with rho=0, after 3 steps the weights are not those of the base optimizer alone",
        snapshot(reference),
        snapshot(model),
        RHO_ZERO_ATOL,
    )


@rule(
    "optimizer",
    "exact_restore",
    "the base optimizer steps from the unperturbed weights: every parameter restored, frozen ones untouched",
)
def exact_restore(registry: Registry, name: str) -> None:
    model, optimizer, base = _setup(registry, name, scheduler_params={"rho": 0.5})
    seen = record_base_steps(base, model)
    tolerance = restore_tolerance(optimizer)
    frozen = model.frozen.detach().clone()
    for step in range(2):
        before = parameters(model)
        seen.clear()
        take_step(model, optimizer, step)
        if len(seen) != 1:
            raise ContractViolation(
                f"step {step}: the base optimizer's step ran {len(seen)} times; the protocol runs it exactly once, "
                "after restoring the weights"
            )
        _differs(
            f"step {step}: the weights the base optimizer stepped from are not the weights before the step "
            "(restore every perturbed parameter from a saved copy, whether or not it got a gradient in the "
            "second pass)",
            before,
            seen[0]["weights"],
            tolerance,
        )
        if not torch.equal(model.frozen, frozen):
            raise ContractViolation(f"step {step}: the frozen parameter (requires_grad=False) changed")


@rule("optimizer", "state_dict", "a state_dict round trip (torch.save/load, fresh objects) continues bit for bit")
def state_dict_round_trip(registry: Registry, name: str) -> None:
    scheduler, params = _alternating(registry)
    options = {"scheduler_params": params, "momentum": 0.9}

    def trajectory(split: int | None) -> dict[str, torch.Tensor]:
        model, optimizer, _ = _setup(registry, name, scheduler, **options)
        for step in range(6):
            if step == split:
                saved = round_trip(
                    {"model": model.state_dict(), "optimizer": optimizer.state_dict()}, "optimizer.state_dict()"
                )
                model, optimizer, _ = _setup(registry, name, scheduler, seed=1, **options)
                model.load_state_dict(saved["model"])
                try:
                    optimizer.load_state_dict(saved["optimizer"])
                except Exception as error:
                    raise ContractViolation(
                        f"load_state_dict(state_dict()) raised {type(error).__name__}: {error}"
                    ) from error
                base = getattr(optimizer, "base_optimizer", None)
                if base is not None and optimizer.param_groups is not base.param_groups:
                    raise ContractViolation(
                        "after load_state_dict, optimizer.param_groups is no longer base_optimizer.param_groups "
                        "(torch's load_state_dict replaces the list): a learning-rate scheduler on the base optimizer "
                        "no longer reaches the variant (stale lr, e.g. GSAM's rho_t)"
                    )
            take_step(model, optimizer, step)
        return snapshot(model)

    _differs(
        "6 steps straight and 3 + 3 steps resumed from state_dict() (into a new model and optimizer, under "
        "another global seed) end at different weights; save every tensor and generator state the step uses",
        trajectory(None),
        trajectory(3),
        0.0,
    )


@rule(
    "optimizer",
    "memory_counted",
    "optimizer_state_bytes counts at least the tensors its state_dict() saves (none held out of the walk's reach)",
)
def memory_counted(registry: Registry, name: str) -> None:
    scheduler, params = _alternating(registry)
    model, optimizer, _ = _setup(registry, name, scheduler, scheduler_params=params, momentum=0.9)
    for step in range(4):
        take_step(model, optimizer, step)
    weights = list(model.parameters())
    held = held_tensors(optimizer, params=weights)
    held += [generator.get_state() for generator in reachable_generators(optimizer)]
    for saved in held_tensors(optimizer.state_dict(), params=weights):
        if not any(_same_tensor(saved, tensor) for tensor in held):
            raise ContractViolation(
                f"state_dict() saves a {saved.dtype} tensor of shape {tuple(saved.shape)} that optimizer_state_bytes "
                "does not count (no tensor the optimizer holds is it or equals it): the optimizer keeps it where "
                "the walk of harness.contract.held cannot reach (a global, a closure, a weak reference); keep it "
                "in an attribute of the optimizer, its state or its scheduler"
            )


def _same_tensor(saved: torch.Tensor, held: torch.Tensor) -> bool:
    """Whether ``saved`` is ``held`` (one storage) or a copy of it (``state_dict`` may save clones)."""
    if saved.untyped_storage().data_ptr() == held.untyped_storage().data_ptr():
        return True
    return saved.shape == held.shape and saved.dtype == held.dtype and torch.equal(saved, held.to(saved.device))


@rule("optimizer", "deterministic", "two runs under the same seed end at the same weights, bit for bit")
def deterministic(registry: Registry, name: str) -> None:
    def trajectory() -> dict[str, torch.Tensor]:
        model, optimizer, _ = _setup(registry, name, momentum=0.9)
        for step in range(3):
            take_step(model, optimizer, step)
        return snapshot(model)

    first = trajectory()
    _differs("two runs under seed 0 end at different weights", first, trajectory(), 0.0)


@rule("optimizer", "zero_gradients", "an all-zero gradient gives finite weights, loss and StepInfo extras (no NaN)")
def zero_gradients(registry: Registry, name: str) -> None:
    model, optimizer, _ = _setup(registry, name)

    def flat_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return (logits * 0.0).sum()

    # each example's loss, for optimizers that select examples (ESAM; harness.run.closure.per_example_loss)
    flat_loss.per_sample = lambda logits, targets: (logits * 0.0).sum(dim=1)

    for step in range(2):
        record = take_step(model, optimizer, step, flat_loss)
        for key, value in snapshot(model).items():
            if value.is_floating_point() and not bool(value.isfinite().all()):
                raise ContractViolation(f"step {step} with zero gradients made {key!r} non-finite")
        info = check_step_info(record.info, step)
        for key, value in info.extras.items():
            number = float(value) if torch.is_tensor(value) and value.numel() == 1 else value
            if isinstance(number, float) and not math.isfinite(number):
                raise ContractViolation(f"step {step} with zero gradients reports extras[{key!r}] = {number}")


@rule("optimizer", "batchnorm_once", "BatchNorm running statistics are updated once per step, by the first pass")
def batchnorm_once(registry: Registry, name: str) -> None:
    model, optimizer, _ = _setup(registry, name)
    for step in range(2):
        reference = copy.deepcopy(model)
        with torch.no_grad():
            reference(batch(step)[0])
        take_step(model, optimizer, step)
        expected = {key: value for key, value in snapshot(reference).items() if key.startswith("norm.running")}
        expected["norm.num_batches_tracked"] = reference.norm.num_batches_tracked.clone()
        _differs(
            f"step {step}: BatchNorm statistics are not those of one update by the clean first pass "
            "(run every pass through the closure, which freezes them after the first)",
            expected,
            snapshot(model),
            0.0,
        )


@rule("optimizer", "per_group_lr", "the update is the base optimizer's, with each parameter group's learning rate")
def per_group_lr(registry: Registry, name: str) -> None:
    model, optimizer, base = _setup(registry, name)
    seen = record_base_steps(base, model)
    group_of = {id(p): i for i, group in enumerate(base.param_groups) for p in group["params"]}
    names = dict(model.named_parameters())
    for step in range(2):
        seen.clear()
        take_step(model, optimizer, step)
        if len(seen) != 1:
            raise ContractViolation(f"step {step}: the base optimizer's step ran {len(seen)} times; expected once")
        if seen[0]["lrs"] != [FAST_LR, SLOW_LR]:
            raise ContractViolation(
                f"step {step}: the base optimizer stepped with group learning rates {seen[0]['lrs']}; "
                f"they were set to {[FAST_LR, SLOW_LR]} and the optimizer must not change them"
            )
        for key, p in names.items():
            lr = (FAST_LR, SLOW_LR)[group_of[id(p)]]
            weights, grad = seen[0]["weights"][key], seen[0]["grads"][key]
            expected = weights if grad is None or not p.requires_grad else weights.add(grad, alpha=-lr)
            if not torch.allclose(p.detach(), expected, rtol=1e-5, atol=1e-7):
                raise ContractViolation(
                    f"step {step}: {key!r} (group lr {lr}) did not move by -lr * grad from where the base optimizer "
                    "stepped; update every parameter through the base optimizer and its parameter groups"
                )


def _overflowing_loss(bad_pass: int):
    """Cross-entropy whose ``bad_pass``-th call (1-based) is infinite: that pass's gradients overflow."""
    passes = 0

    def loss_fn(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        nonlocal passes
        passes += 1
        loss = F.cross_entropy(outputs, targets)
        return loss * math.inf if passes == bad_pass else loss

    loss_fn.per_sample = lambda outputs, targets: F.cross_entropy(outputs, targets, reduction="none")
    return loss_fn


#: The loss scale of the fp16 rule: small, so that only the injected overflow overflows.
FP16_INIT_SCALE = 2.0**10


@rule(
    "optimizer",
    "fp16_overflow",
    "under fp16, a step with an overflowing pass changes no weight and lowers the loss scale exactly once",
)
def fp16_overflow(registry: Registry, name: str) -> None:
    if not fp16_autocast_available():
        raise ContractSkip("this torch build has no CPU float16 autocast")
    for bad_pass in (1, 2):
        model, optimizer, _ = _setup(registry, name, scheduler_params={"rho": 0.5}, momentum=0.9)
        precision = Precision("fp16", "cpu", scaler_options={"init_scale": FP16_INIT_SCALE})
        take_step(model, optimizer, 0, precision=precision)  # a normal step first: momentum and buffers exist
        before, scale = parameters(model), precision.scaler.get_scale()
        record = take_step(model, optimizer, 1, _overflowing_loss(bad_pass), precision=precision)
        if record.calls < bad_pass:
            continue  # a one-pass step (ERM): there is no second pass to overflow
        _differs(
            f"fp16 step whose pass {bad_pass} overflowed (non-finite gradients): the weights changed; when "
            "closure.overflowed() is true, restore the weights and skip the update",
            before,
            parameters(model),
            restore_tolerance(optimizer),
        )
        if record.calls > bad_pass and bad_pass == 1:
            raise ContractViolation(
                "fp16: after the first pass overflowed the step still ran a second pass; check "
                "closure.overflowed() after the first pass and skip the ascent"
            )
        if precision.scaler.get_scale() != scale * 0.5:
            raise ContractViolation(
                f"fp16: the loss scale went from {scale:g} to {precision.scaler.get_scale():g} over a step with an "
                "overflow; it must be halved exactly once (call closure.finish() once, at the end of the step)"
            )


RULES = (
    step_info,
    gradient_evaluations,
    rho_zero,
    exact_restore,
    state_dict_round_trip,
    memory_counted,
    deterministic,
    zero_gradients,
    batchnorm_once,
    per_group_lr,
    fp16_overflow,
)
