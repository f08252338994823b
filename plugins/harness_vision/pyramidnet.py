"""PyramidNet for CIFAR-sized images (additive widening, basic or bottleneck blocks).

Architecture source: Han, Kim & Kim, "Deep Pyramidal Residual Networks", CVPR 2017, following the
authors' PyTorch code (dyhan0920/PyramidNet-PyTorch): a 3x3 stem with 16 channels and BN, three stages
of n blocks (n = (depth-2)/6 for basic blocks, (depth-2)/9 for bottlenecks) whose width grows by
alpha/(3n) per block (rounded), the first block of stages 2 and 3 with stride 2. Blocks are
BN-conv3x3-BN-ReLU-conv3x3-BN (basic) or BN-conv1x1-BN-ReLU-conv3x3-BN-ReLU-conv1x1(x4)-BN
(bottleneck), with no ReLU after the addition. Shortcuts carry no parameters: 2x2 average pooling
where the block downsamples, and zero-padded channels where the width grows. Then BN-ReLU, global
average pooling and a linear head.

Which PyramidNet the SAM papers use is ambiguous:

- AE-SAM (Jiang et al. 2023, Sec. 4.1; shared/papers/seed_looksam_aesam.md B.6, B.9) says
  "PyramidNet-110 (Han et al., 2017)" without the widening factor alpha, and public CIFAR code bases
  disagree (alpha = 48, 64, 84 and 270 all appear). Han et al.'s own PyramidNet-110 comes with
  alpha = 48 (1.7M parameters), 84 (3.8M) and 270 (28.3M) in their Table 4. The registered
  ``pyramidnet-110`` takes the largest, alpha = 270 with basic blocks (28,485,477 parameters for
  10 classes here), the one whose size matches the WRN-28-10 it is compared with; ``alpha`` stays a
  parameter (alpha = 48 gives the 1.7M network: 1,772,706 parameters here).
- SAM (Foret et al. 2021, Table 1; seed_sam_gsam.md A.4) does not state depth or alpha for "PyramidNet";
  its reference code (google-research/sam, sam_jax/models/pyramidnet.py) builds PyramidNet-272 with
  alpha = 200 and bottlenecks (with ShakeDrop, which is not implemented here), that is
  ``{name: pyramidnet, depth: 272, alpha: 200, bottleneck: true}``: 26,210,842 parameters here.

Widths are rounded, as in the authors' PyTorch code and SAM's reference code; Han et al.'s tables count
truncated widths (PyramidNet-272 alpha = 200: 26.0M truncated, 26.2M rounded). For alpha = 270 and depth
110 the widths are integers either way; Han et al. list 28.3M.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from harness_vision.init import he_init
from harness_vision.model_checks import check_pyramidnet, check_pyramidnet_110


class PyramidBlock(nn.Module):
    """A basic or bottleneck pyramidal block; its output has ``planes * expansion`` channels."""

    def __init__(self, in_channels: int, planes: int, stride: int, bottleneck: bool) -> None:
        super().__init__()
        self.expansion = 4 if bottleneck else 1
        out_channels = planes * self.expansion
        if bottleneck:
            layers: list[nn.Module] = [
                nn.BatchNorm2d(in_channels),
                nn.Conv2d(in_channels, planes, 1, bias=False),
                nn.BatchNorm2d(planes),
                nn.ReLU(inplace=True),
                nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(planes),
                nn.ReLU(inplace=True),
                nn.Conv2d(planes, out_channels, 1, bias=False),
                nn.BatchNorm2d(out_channels),
            ]
        else:
            layers = [
                nn.BatchNorm2d(in_channels),
                nn.Conv2d(in_channels, planes, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(planes),
                nn.ReLU(inplace=True),
                nn.Conv2d(planes, planes, 3, padding=1, bias=False),
                nn.BatchNorm2d(planes),
            ]
        self.residual = nn.Sequential(*layers)
        self.downsample = nn.AvgPool2d(2, stride=2, ceil_mode=True) if stride != 1 else nn.Identity()
        self.extra = out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.residual(x)
        shortcut = self.downsample(x)
        if self.extra:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.extra))
        return out + shortcut


class PyramidNet(nn.Module):
    """PyramidNet-``depth`` with widening factor ``alpha``; the head is ``self.fc``."""

    def __init__(self, *, num_classes: int, in_channels: int, depth: int, alpha: float, bottleneck: bool) -> None:
        super().__init__()
        blocks = (depth - 2) // (9 if bottleneck else 6)
        expansion = 4 if bottleneck else 1
        add_rate = alpha / (3 * blocks)
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        channels, width = 16, 16.0
        stages: list[nn.Module] = []
        for stage in range(3):
            layers = []
            for block in range(blocks):
                width += add_rate
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(PyramidBlock(channels, int(round(width)), stride, bottleneck))
                channels = int(round(width)) * expansion
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.bn_final = nn.BatchNorm2d(channels)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.conv1(x))
        x = self.stages(x)
        x = F.relu(self.bn_final(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def pyramidnet(
    *, num_classes: int, input_shape: tuple[int, ...], depth: int = 110, alpha: int = 270, bottleneck: bool = False
) -> nn.Module:
    """PyramidNet-``depth`` (Han et al. 2017) with widening factor ``alpha``, basic or bottleneck blocks."""
    check_pyramidnet(num_classes=num_classes, input_shape=input_shape, depth=depth, alpha=alpha, bottleneck=bottleneck)
    return PyramidNet(
        num_classes=num_classes, in_channels=input_shape[0], depth=depth, alpha=alpha, bottleneck=bottleneck
    )


def pyramidnet_110(*, num_classes: int, input_shape: tuple[int, ...], alpha: int = 270) -> nn.Module:
    """PyramidNet-110 with basic blocks; alpha = 270 by default (28.3M parameters in Han et al., Table 4)."""
    check_pyramidnet_110(num_classes=num_classes, input_shape=input_shape, alpha=alpha)
    return PyramidNet(num_classes=num_classes, in_channels=input_shape[0], depth=110, alpha=alpha, bottleneck=False)
