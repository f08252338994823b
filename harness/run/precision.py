"""Mixed precision, memory layout and compilation for the training step (shared/DESIGN.md section 9).

``Precision`` is what the runner hands to every ``BatchClosure`` of a run:

- ``fp32``: nothing changes (the default);
- ``bf16``: every forward pass runs under ``torch.autocast(dtype=torch.bfloat16)``; weights,
  gradients and optimizer state stay float32, so no loss scaling is needed;
- ``fp16``: every forward pass runs under ``torch.autocast(dtype=torch.float16)`` and the loss is
  multiplied by a dynamic loss scale before ``backward`` (``LossScaler``, the semantics of
  ``torch.amp.GradScaler``). A sharpness-aware step has two passes, and ``GradScaler`` cannot
  serve them (``unscale_`` may run once per optimizer per step), so the closure unscales the
  gradients itself after *every* pass and records whether any was non-finite. A step where either
  pass overflows is skipped: its gradients are dropped (``p.grad = None``, so a base optimizer
  stepped anyway updates nothing), the sharpness-aware optimizers see ``closure.overflowed()``,
  restore the weights and skip their update, and the scale is reduced once, by
  ``closure.finish()``, at the end of the step. Each fp16 pass synchronizes the host once (to
  decide the skip), as ``GradScaler.step`` does; bf16 and fp32 never do.

``channels_last`` converts 4-D inputs to the channels-last memory format (convolutional networks
on GPUs with tensor cores run faster); ``prepare_model`` converts the model's weights to match and
optionally wraps the model in ``torch.compile``.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import nn

from harness.contract.run_spec import PRECISIONS as MODES

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class LossScaler:
    """A dynamic loss scale with ``torch.amp.GradScaler``'s rule, for steps of several passes.

    The scale starts at ``init_scale``; a step with a non-finite gradient multiplies it by
    ``backoff_factor``; ``growth_interval`` consecutive finite steps multiply it by
    ``growth_factor``. Both operations run on the device (``torch._amp_update_scale_``, the kernel
    ``GradScaler.update`` uses), so updating never synchronizes the host. ``state_dict`` has
    ``GradScaler``'s keys.
    """

    def __init__(
        self,
        device: torch.device | str,
        *,
        init_scale: float = 2.0**16,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        growth_interval: int = 2000,
    ) -> None:
        if not growth_factor > 1.0 or not 0.0 < backoff_factor < 1.0 or growth_interval < 1:
            raise ValueError(
                f"LossScaler: need growth_factor > 1, 0 < backoff_factor < 1 and growth_interval >= 1, got "
                f"{growth_factor}, {backoff_factor}, {growth_interval}"
            )
        self.device = torch.device(device)
        self.growth_factor = float(growth_factor)
        self.backoff_factor = float(backoff_factor)
        self.growth_interval = int(growth_interval)
        self.scale = torch.full((), float(init_scale), dtype=torch.float32, device=self.device)
        self.growth_tracker = torch.zeros((), dtype=torch.int32, device=self.device)

    def scale_loss(self, loss: torch.Tensor) -> torch.Tensor:
        """``loss * scale`` (what ``backward`` is called on)."""
        return loss * self.scale.to(loss.dtype)

    def unscale_(self, grads: list[torch.Tensor], found_inf: torch.Tensor) -> None:
        """Divide ``grads`` by the scale in place; set ``found_inf`` to 1 if any entry is inf or NaN.

        ``found_inf`` is a float32 0-dim tensor on the device of ``grads`` (one device: the model's);
        it is only ever set, never cleared, so one tensor accumulates over the passes of a step.
        """
        if not grads:
            return
        inverse = self.scale.double().reciprocal().float()
        torch._amp_foreach_non_finite_check_and_unscale_(grads, found_inf, inverse)

    def update(self, found_inf: torch.Tensor) -> None:
        """One scale update for one step: back off if ``found_inf``, else count towards growth."""
        torch._amp_update_scale_(
            self.scale,
            self.growth_tracker,
            found_inf.to(device=self.device, dtype=torch.float32),
            self.growth_factor,
            self.backoff_factor,
            self.growth_interval,
        )

    def get_scale(self) -> float:
        """The current scale as a Python float (synchronizes the host)."""
        return float(self.scale)

    def state_dict(self) -> dict[str, Any]:
        return {
            "scale": self.get_scale(),
            "growth_factor": self.growth_factor,
            "backoff_factor": self.backoff_factor,
            "growth_interval": self.growth_interval,
            "_growth_tracker": int(self.growth_tracker),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scale.fill_(float(state["scale"]))
        self.growth_factor = float(state["growth_factor"])
        self.backoff_factor = float(state["backoff_factor"])
        self.growth_interval = int(state["growth_interval"])
        self.growth_tracker.fill_(int(state["_growth_tracker"]))


class Precision:
    """How the passes of a step run: numeric mode (fp32, bf16, fp16) and input memory format.

    mode: ``fp32``, ``bf16`` (autocast) or ``fp16`` (autocast and a ``LossScaler``).
    device: where the model runs (autocast's device type; the loss scale lives there).
    channels_last: convert 4-D inputs to ``torch.channels_last`` (``prepare_inputs``).
    scaler_options: ``LossScaler`` keyword arguments (fp16 only).
    """

    def __init__(
        self,
        mode: str = "fp32",
        device: torch.device | str = "cpu",
        *,
        channels_last: bool = False,
        scaler_options: dict[str, Any] | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"precision must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.device = torch.device(device)
        self.channels_last = bool(channels_last)
        self.dtype = _DTYPES.get(mode, torch.float32)
        self.scaler = LossScaler(self.device, **(scaler_options or {})) if mode == "fp16" else None

    def __repr__(self) -> str:
        return f"Precision({self.mode!r}, {str(self.device)!r}, channels_last={self.channels_last})"

    @property
    def scaled(self) -> bool:
        """Whether losses are scaled (fp16)."""
        return self.scaler is not None

    def autocast(self) -> AbstractContextManager:
        """The context every forward pass runs in (a no-op for fp32)."""
        if self.mode == "fp32":
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def prepare_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        """``inputs`` in the memory format the model expects (channels-last for 4-D batches if enabled)."""
        if self.channels_last and inputs.dim() == 4:
            return inputs.contiguous(memory_format=torch.channels_last)
        return inputs


def fp16_autocast_available(device: str = "cpu") -> bool:
    """Whether this torch build runs float16 autocast (forward and backward) on ``device``."""
    try:
        with torch.autocast(device, dtype=torch.float16):
            out = nn.Linear(4, 2).to(device)(torch.randn(3, 4, device=device))
        out.float().sum().backward()
        return out.dtype == torch.float16
    except (RuntimeError, TypeError):
        return False


def prepare_model(model: nn.Module, *, channels_last: bool = False, compile: bool = False, **compile_options: Any):
    """Convert ``model`` to channels-last (in place) and optionally compile it; returns the model to call.

    Build the optimizer from ``model.named_parameters()`` of the module *before* compiling: the
    compiled wrapper shares the parameters but prefixes their names with ``_orig_mod.``. With
    BatchNorm, the closure's later passes switch ``track_running_stats`` off, which
    ``torch.compile`` handles with a second graph (compiled once, on the first step).
    """
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if compile:
        return torch.compile(model, **compile_options)
    return model
