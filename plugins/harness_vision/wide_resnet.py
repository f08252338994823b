"""Wide ResNets for CIFAR-sized images (WRN-d-k).

Architecture source: Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016 (Sec. 2 and Table 1):
a 3x3 stem with 16 channels, three groups of (d-4)/6 pre-activation basic blocks B(3,3) with
16k, 32k and 64k channels (the first block of groups 2 and 3 has stride 2), dropout between the two
convolutions of a block, then BN-ReLU, global average pooling and a linear head. A 1x1 convolution
serves as shortcut where the width or resolution changes; as in the authors' code, it (and the block)
sees the pre-activated input.

Used by SAM (Foret et al. 2021; WRN-28-10, also WRN-40-2 and WRN-40-10 in ablations, see
shared/papers/seed_sam_gsam.md A.4), AE-SAM (Jiang et al. 2023, WRN-28-10, seed_looksam_aesam.md B.6)
and LookSAM (Liu et al. 2022, App. A.3). WRN-28-10 has 36,479,194 parameters for 10 classes and WRN-16-4
2,748,890 (Table 1 of the WRN paper: 36.5M and 2.7M).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from harness_vision.init import he_init
from harness_vision.model_checks import check_wrn, check_wrn_16_4, check_wrn_28_10


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3(stride)-BN-ReLU-dropout-conv3x3, plus the shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = F.relu(self.bn1(x))
        out = self.conv1(activated)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        return out + (x if self.shortcut is None else self.shortcut(activated))


class WideResNet(nn.Module):
    """WRN-``depth``-``widen_factor``; the head is ``self.fc``."""

    def __init__(self, *, num_classes: int, in_channels: int, depth: int, widen_factor: int, dropout: float) -> None:
        super().__init__()
        blocks = (depth - 4) // 6
        widths = (16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        groups: list[nn.Module] = []
        channels = 16
        for index, width in enumerate(widths):
            layers = []
            for block in range(blocks):
                stride = 2 if index > 0 and block == 0 else 1
                layers.append(PreActBlock(channels, width, stride, dropout))
                channels = width
            groups.append(nn.Sequential(*layers))
        self.groups = nn.Sequential(*groups)
        self.bn = nn.BatchNorm2d(channels)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.groups(self.conv1(x))
        x = F.relu(self.bn(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def wide_resnet(
    *, num_classes: int, input_shape: tuple[int, ...], depth: int = 28, widen_factor: int = 10, dropout: float = 0.0
) -> nn.Module:
    """WRN-``depth``-``widen_factor`` (depth = 6n+4) with dropout rate ``dropout`` inside each block."""
    check_wrn(num_classes=num_classes, input_shape=input_shape, depth=depth, widen_factor=widen_factor, dropout=dropout)
    return WideResNet(
        num_classes=num_classes, in_channels=input_shape[0], depth=depth, widen_factor=widen_factor, dropout=dropout
    )


def wrn_28_10(*, num_classes: int, input_shape: tuple[int, ...], dropout: float = 0.0) -> nn.Module:
    """WRN-28-10 (36.5M parameters for 10 classes), the SAM paper's main CIFAR model."""
    check_wrn_28_10(num_classes=num_classes, input_shape=input_shape, dropout=dropout)
    return WideResNet(num_classes=num_classes, in_channels=input_shape[0], depth=28, widen_factor=10, dropout=dropout)


def wrn_16_4(*, num_classes: int, input_shape: tuple[int, ...], dropout: float = 0.0) -> nn.Module:
    """WRN-16-4 (2.75M parameters for 10 classes), a small WRN for quick CIFAR comparisons."""
    check_wrn_16_4(num_classes=num_classes, input_shape=input_shape, dropout=dropout)
    return WideResNet(num_classes=num_classes, in_channels=input_shape[0], depth=16, widen_factor=4, dropout=dropout)
