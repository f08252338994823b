"""ResNets for CIFAR-sized images: ResNet-18 with a CIFAR stem, and the CIFAR ResNet-32.

Architecture source: He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition", CVPR 2016
(Sec. 3 for ResNet-18's stages, Sec. 4.2 for the CIFAR-10 ResNets of depth 6n+2).

- ``resnet18_cifar``: the ImageNet ResNet-18 stages (2-2-2-2 basic blocks, 64-128-256-512 channels)
  behind a 3x3 stride-1 stem without max-pool, the CIFAR variant that most SAM code bases use
  (11,173,962 parameters for 10 classes). Used by AE-SAM / AE-LookSAM (Jiang et al. 2023) on CIFAR-10/100
  and with label noise (shared/papers/seed_looksam_aesam.md, B.6 and B.9; the paper does not state the
  stem, the 3x3 stride-1 stem is the common choice).
- ``resnet32``: He et al.'s CIFAR ResNet with n=5 (3 stages of 5 basic blocks, 16-32-64 channels,
  0.46M parameters). Option A shortcuts (zero-padded identity, parameter-free) are the default, as in
  the paper's CIFAR experiments; option B uses 1x1 projections where the shape changes. Used by SAM
  (Foret et al. 2021) for label noise, following Jiang et al. 2019 (seed_sam_gsam.md), and by AE-SAM
  for label noise (seed_looksam_aesam.md, B.6).

Both take any number of input channels (``input_shape[0]``) and pool globally, so any image at least
as large as the total stride (8 for ResNet-18, 4 for ResNet-32) works.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from harness_vision.init import he_init
from harness_vision.model_checks import check_resnet18_cifar, check_resnet32


class ZeroPadShortcut(nn.Module):
    """Option A shortcut: subsample by ``stride`` and append zero channels up to ``out_channels``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.extra = out_channels - in_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra:
            x = F.pad(x, (0, 0, 0, 0, 0, self.extra))
        return x


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU (post-activation, He et al. 2016)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module
        if stride == 1 and in_channels == out_channels:
            self.shortcut = nn.Identity()
        elif shortcut == "A":
            self.shortcut = ZeroPadShortcut(in_channels, out_channels, stride)
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """A 3x3 stride-1 stem, stages of basic blocks (the first block of each later stage has stride 2),
    global average pooling and a linear head (``self.fc``)."""

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        widths: Sequence[int],
        blocks: Sequence[int],
        shortcut: str,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages: list[nn.Module] = []
        channels = widths[0]
        for index, (width, count) in enumerate(zip(widths, blocks, strict=True)):
            layers = []
            for block in range(count):
                stride = 2 if index > 0 and block == 0 else 1
                layers.append(BasicBlock(channels, width, stride, shortcut))
                channels = width
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        he_init(self, zero_linear_bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.stages(x)
        return self.fc(torch.flatten(self.pool(x), 1))


def resnet18_cifar(*, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """ResNet-18 (He et al. 2016) with a 3x3 stride-1 stem and no max-pool; 1x1 projection shortcuts."""
    check_resnet18_cifar(num_classes=num_classes, input_shape=input_shape)
    return CifarResNet(
        num_classes=num_classes,
        in_channels=input_shape[0],
        widths=(64, 128, 256, 512),
        blocks=(2, 2, 2, 2),
        shortcut="B",
    )


def resnet32(*, num_classes: int, input_shape: tuple[int, ...], shortcut: str = "A") -> nn.Module:
    """ResNet-32 for CIFAR (He et al. 2016, Sec. 4.2, n=5); ``shortcut`` is option "A" or "B"."""
    check_resnet32(num_classes=num_classes, input_shape=input_shape, shortcut=shortcut)
    return CifarResNet(
        num_classes=num_classes, in_channels=input_shape[0], widths=(16, 32, 64), blocks=(5, 5, 5), shortcut=shortcut
    )
