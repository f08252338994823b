"""The weight initialization the CIFAR residual networks share (He et al. 2015, as their reference code)."""

from __future__ import annotations

from torch import nn


def he_init(model: nn.Module, *, zero_linear_bias: bool = True) -> None:
    """Kaiming-normal (fan-out, ReLU) convolutions, BatchNorm scale 1 and shift 0, and optionally zero
    linear biases (the linear weights keep PyTorch's default)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear) and zero_linear_bias:
            nn.init.zeros_(module.bias)
