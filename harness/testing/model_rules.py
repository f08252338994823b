"""The contract of models (``register_models``): ``factory(*, num_classes, input_shape, **params) -> nn.Module``.

A model spec declares no input of its own, so the kit takes the datasets' declarations: the input shapes
and class counts that the registered datasets' ``describe`` returns (with their defaults), smallest first,
and uses the first one the model's ``check`` accepts (without a ``check``: the first the model builds and
runs on). Shapes and parameter counts are taken on the meta device (no memory, no compute), so the largest
models cost no more than a build; only models up to ``REAL_FORWARD_PARAMS`` parameters also run a real
forward pass, whose logits must be finite.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
from torch import nn

from harness.plugins import Registry
from harness.testing.base import ContractViolation, first_difference, rule
from harness.testing.fixtures import create, seed_everything

REAL_FORWARD_PARAMS = 5_000_000
FALLBACK_INPUT = ((3, 32, 32), 10)
BATCH = 2
_STATED_COUNT = re.compile(r"(\d+(?:\.\d+)?)\s*([MK])\s*param", re.IGNORECASE)


def declared_inputs(registry: Registry) -> list[tuple[tuple[int, ...], int]]:
    """Distinct ``(input_shape, num_classes)`` of the registered datasets' ``describe``, smallest first."""
    found = {FALLBACK_INPUT}
    for name in registry.names("dataset"):
        spec = registry.get("dataset", name)
        describe = spec.load_describe()
        if describe is None:
            continue
        try:
            shape, classes = describe(**spec.defaults)
        except Exception:  # a broken describe is the dataset's rule to report, not the model's
            continue
        found.add((tuple(int(size) for size in shape), int(classes)))
    return sorted(found, key=lambda item: (math.prod(item[0]), item[1], item[0]))


def _meta_build(registry: Registry, name: str, shape: tuple[int, ...], classes: int) -> nn.Module:
    with torch.device("meta"):
        return registry.create("model", name, num_classes=classes, input_shape=shape)


def _meta_logits(
    registry: Registry, name: str, shape: tuple[int, ...], classes: int
) -> tuple[torch.Tensor, int] | None:
    """Logits and parameter count from a build and a forward pass on the meta device; ``None`` if unsupported."""
    try:
        model = _meta_build(registry, name, shape, classes)
        return model(torch.empty((BATCH, *shape), device="meta")), _count(model)
    except Exception:  # an operation without a meta kernel: the caller runs it for real
        return None


def _real_logits(registry: Registry, name: str, shape: tuple[int, ...], classes: int) -> torch.Tensor:
    seed_everything(0)
    model = create(registry, "model", name, num_classes=classes, input_shape=shape).eval()
    try:
        with torch.no_grad():
            return model(torch.randn(BATCH, *shape))
    except Exception as error:
        raise ContractViolation(
            f"a forward pass on input {(BATCH, *shape)} raised {type(error).__name__}: {error}"
        ) from error


def model_input(registry: Registry, name: str) -> tuple[tuple[int, ...], int]:
    """The input shape and class count the kit checks ``name`` on (see the module docstring)."""
    spec = registry.get("model", name)
    check = spec.load_check()
    refusals = []
    for shape, classes in declared_inputs(registry):
        try:
            if check is not None:
                check(num_classes=classes, input_shape=shape, **spec.defaults)
            elif _meta_logits(registry, name, shape, classes) is None:
                _real_logits(registry, name, shape, classes)
        except Exception as error:
            refusals.append(f"{shape} x {classes} classes: {error}")
            continue
        return shape, classes
    raise ContractViolation(
        "the model takes none of the inputs the registered datasets describe; " + "; ".join(refusals)
    )


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@rule("model", "output_shape", "logits of shape (batch, num_classes) for a declared input; finite when run")
def output_shape(registry: Registry, name: str) -> None:
    shape, classes = model_input(registry, name)
    expected = (BATCH, classes)
    meta = _meta_logits(registry, name, shape, classes)
    if meta is not None and meta[1] > REAL_FORWARD_PARAMS:
        logits = meta[0]
    else:
        logits = _real_logits(registry, name, shape, classes)
        if not bool(logits.isfinite().all()):
            raise ContractViolation(f"input {(BATCH, *shape)} gave non-finite logits")
    if tuple(logits.shape) != expected:
        raise ContractViolation(
            f"input {(BATCH, *shape)} gave output of shape {tuple(logits.shape)}; expected {expected}"
        )


@rule("model", "deterministic_init", "two builds under the same seed have the same weights and buffers, bit for bit")
def deterministic_init(registry: Registry, name: str) -> None:
    shape, classes = model_input(registry, name)
    states = []
    for _ in range(2):
        seed_everything(0)
        model = create(registry, "model", name, num_classes=classes, input_shape=shape)
        states.append({key: value.detach().clone() for key, value in model.state_dict().items()})
        del model
    found = first_difference(states[0], states[1])
    if found is not None:
        raise ContractViolation(
            f"two builds under seed 0 differ in {found[0]!r} (by {found[1]:.3g}); initialize from the global "
            "torch generator (which the runner seeds) or from a generator seeded by a parameter"
        )


def stated_count(description: str) -> tuple[float, float] | None:
    """The parameter count a description states ("(36.5M params)") and half a unit of its last digit."""
    match = _STATED_COUNT.search(description)
    if match is None:
        return None
    number, unit = match.groups()
    scale = 1e6 if unit.upper() == "M" else 1e3
    decimals = len(number.partition(".")[2])
    return float(number) * scale, 0.5 * 10.0**-decimals * scale


@rule("model", "parameter_count", "it has trainable floating-point parameters, as many as its description states")
def parameter_count(registry: Registry, name: str) -> None:
    shape, classes = model_input(registry, name)
    try:
        model: Any = _meta_build(registry, name, shape, classes)
    except Exception:  # a build that needs real tensors
        seed_everything(0)
        model = create(registry, "model", name, num_classes=classes, input_shape=shape)
    params = list(model.parameters())
    trainable = sum(p.numel() for p in params if p.requires_grad)
    if trainable == 0:
        raise ContractViolation("the model has no trainable parameters")
    odd = [key for key, p in model.named_parameters() if not p.dtype.is_floating_point]
    if odd:
        raise ContractViolation(f"parameters {odd} are not floating point")
    stated = stated_count(registry.get("model", name).description)
    if stated is not None:
        count, half_unit = stated
        slack = max(half_unit, 0.01 * count)  # the stated figure is for CIFAR inputs; ours may differ a little
        if abs(_count(model) - count) > slack:
            raise ContractViolation(
                f"its description states {count:,.0f} parameters but it has {_count(model):,} "
                f"(input {shape}, {classes} classes)"
            )


RULES = (output_shape, deterministic_init, parameter_count)
