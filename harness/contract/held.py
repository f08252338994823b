"""What an optimizer really holds in memory: every tensor reachable from it, counted once per storage.

``optimizer_state_bytes`` in the results (shared/DESIGN.md section 7) must not depend on a plugin
declaring its buffers: a variant that keeps its own gradient EMA in an attribute (Friendly SAM), in
``self.state`` or in its scheduler holds that memory whether or not it says so, and the memory a
variant costs is what the nuSAM paper (shared/papers/002, section 1) is about. So the count walks the
optimizer object: its attributes, the containers in them (dicts, lists, tuples, sets, dataclasses and
plain objects, such as the scheduler and buffer helpers), and the base optimizer's ``state``.

What is not optimizer memory is left out:

- the parameters themselves, their gradients, and any view of them (told apart by storage);
- modules (``torch.nn.Module``): a model reference reaches weights and BatchNorm statistics, which
  are the model's memory, not the optimizer's;
- functions, classes and modules of code (a reference to a loss function holds no state);
- the last step's diagnostics (``StepInfo``: a few scalars, replaced every step), a report, not state.

Tensors are counted by storage (``untyped_storage``): two views of one buffer count once, and a view
counts the whole buffer it keeps alive.
"""

from __future__ import annotations

import types
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from harness.contract.optim import SharpnessAwareOptimizer, StepInfo

#: How deep the walk follows references from the optimizer (attribute -> container -> ...).
MAX_DEPTH = 12

_SKIPPED = (
    torch.nn.Module,
    type,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.ModuleType,
    str,
    bytes,
    int,
    float,
    complex,
    bool,
    torch.device,
    torch.dtype,
    StepInfo,
)


def held_tensors(*roots: Any, params: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """The distinct tensors reachable from ``roots`` (optimizers, buffers, lists of them), one per storage,
    leaving out ``params``, their gradients and views of either."""
    excluded = {_storage_key(t) for p in params for t in ([p] if p.grad is None else [p, p.grad])}
    held: dict[tuple[str, int], torch.Tensor] = {}
    for tensor in _reachable(list(roots)):
        if not isinstance(tensor, torch.Tensor):
            continue
        key = _storage_key(tensor)
        if key not in excluded:
            held.setdefault(key, tensor)
    return list(held.values())


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of every distinct tensor ``optimizer`` holds between steps, beyond its parameters and gradients."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    return storage_bytes(held_tensors(optimizer, params=params))


def perturbation_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes a sharpness-aware optimizer holds beyond its base optimizer: what its perturbation costs in memory
    (SAM's weight backup, LookSAM's g_v, nuSAM's u and v; 002 is about this number). 0 otherwise."""
    if not isinstance(optimizer, SharpnessAwareOptimizer):
        return 0
    return optimizer_state_bytes(optimizer) - optimizer_state_bytes(optimizer.base_optimizer)


def storage_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (two views of one buffer count once)."""
    sizes = {_storage_key(t): t.untyped_storage().nbytes() for t in tensors}
    return sum(sizes.values())


def _storage_key(tensor: torch.Tensor) -> tuple[str, int]:
    return str(tensor.device), tensor.untyped_storage().data_ptr()


def reachable_generators(*roots: Any) -> list[torch.Generator]:
    """The random generators reachable from ``roots`` (their state is not counted as tensor memory)."""
    return [obj for obj in _reachable(list(roots)) if isinstance(obj, torch.Generator)]


def _reachable(root: Any) -> Iterator[Any]:
    """Every tensor and generator reachable from ``root`` through attributes and containers, each object once."""
    seen: set[int] = set()
    stack: list[tuple[Any, int]] = [(root, 0)]
    while stack:
        obj, depth = stack.pop()
        if id(obj) in seen or obj is None or isinstance(obj, _SKIPPED):
            continue
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            if obj.numel() and not obj.is_meta:
                yield obj
            continue
        if isinstance(obj, torch.Generator):
            yield obj
            continue
        if depth >= MAX_DEPTH:
            continue
        stack.extend((child, depth + 1) for child in _children(obj))


def _children(obj: Any) -> Iterable[Any]:
    if isinstance(obj, dict):  # torch's optimizer.state is keyed by parameter: the values are what it holds
        return obj.values()
    if isinstance(obj, (list, tuple, set, frozenset)):
        return obj
    slots = getattr(type(obj), "__slots__", ())
    children = list(getattr(obj, "__dict__", {}).values())
    return children + [
        getattr(obj, name) for name in ((slots,) if isinstance(slots, str) else slots) if hasattr(obj, name)
    ]
