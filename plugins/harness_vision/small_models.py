"""Small models for digits-sized inputs: an MLP and a two-block CNN with BatchNorm.

The CNN carries BatchNorm on purpose: it exercises the harness's BatchNorm policy (running
statistics updated by the clean pass only) in the quickstart.
"""

from __future__ import annotations

import math

from torch import nn


def mlp(
    *, num_classes: int, input_shape: tuple[int, ...], hidden: int = 128, depth: int = 2, dropout: float = 0.0
) -> nn.Module:
    """``depth`` hidden layers of width ``hidden`` with ReLU (and dropout), then a linear head."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = hidden
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def small_cnn(*, num_classes: int, input_shape: tuple[int, ...], channels: int = 32, dropout: float = 0.0) -> nn.Module:
    """conv3x3-BN-ReLU, conv3x3-BN-ReLU, 2x2 max-pool, 2x2 average pool, (dropout), linear."""
    in_channels = input_shape[0]
    return nn.Sequential(
        nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(),
        nn.Conv2d(channels, 2 * channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(2 * channels),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(2 * channels * 4, num_classes),
    )
