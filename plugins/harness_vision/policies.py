"""AutoAugment (CIFAR-10 policy) and RandAugment on batches on the device, drawn per sample.

AutoAugment (Cubuk et al., 2019, "AutoAugment: Learning Augmentation Strategies from Data", App. A,
Table 7, the CIFAR-10 policy; the learned policy nuSAM's Table 2 trains ViTs with,
shared/papers/seed_nusam.md) applies to every image one of 25 sub-policies, uniformly chosen; a
sub-policy is two operations, each applied with its own probability at its own magnitude bin (of 10).
RandAugment (Cubuk et al., 2020, Sec. 3) applies ``num_ops`` operations, each uniformly chosen from 14,
all at one ``magnitude`` (of 31 bins). Magnitude ranges, signs and operations follow torchvision's
``transforms.v2.AutoAugment`` / ``RandAugment`` (whose policy table is private, so ``CIFAR10_POLICY`` is
transcribed from the paper's Table 7, entry for entry as torchvision has it); the operations are
``torchvision.transforms.v2.functional`` on batched tensors. ``tests/test_autoaugment.py`` checks the
table, and every operation at every magnitude bin and sign, against torchvision's own to the bit.

Per sample: every image draws its own sub-policy (or operations), probabilities and signs from the
``generator`` argument (the run's augmentation generator, on the batch's device), so the batch is not
augmented alike, a seed reproduces it, and the global RNG is untouched. The samples that drew the same
(operation, signed magnitude) at a stage are transformed together, one call per distinct one (at most
31 per AutoAugment stage, 22 per RandAugment one), not one per image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

# (operation, probability, magnitude bin) pairs: Cubuk et al. 2019, Table 7 (CIFAR-10).
CIFAR10_POLICY: tuple[tuple[tuple[str, float, int | None], tuple[str, float, int | None]], ...] = (
    (("Invert", 0.1, None), ("Contrast", 0.2, 6)),
    (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
    (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)),
    (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
    (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, None), ("Equalize", 0.5, None)),
    (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
    (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
    (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, None)),
    (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.2, None), ("Equalize", 0.6, None)),
    (("Color", 0.9, 9), ("Equalize", 0.6, None)),
    (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)),
    (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)),
    (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, None), ("Solarize", 0.8, 3)),
    (("Equalize", 0.8, None), ("Invert", 0.1, None)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
)
#: RandAugment's operations (Cubuk et al. 2020, Sec. 3; torchvision's list).
RANDAUGMENT_OPS = (
    "Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness",
    "Color", "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize",
)  # fmt: skip
POLICIES = ("none", "autoaugment", "randaugment")
_NEAREST = InterpolationMode.NEAREST
#: torchvision's upper ends of the magnitude ranges that start at 0 (translations: ``magnitude``)
_RANGES = {
    "ShearX": 0.3,
    "ShearY": 0.3,
    "Rotate": 30.0,
    "Brightness": 0.9,
    "Color": 0.9,
    "Contrast": 0.9,
    "Sharpness": 0.9,
}
#: the operations whose magnitude a sample negates with probability 1/2 (torchvision's signed ones)
_SIGNED = {*_RANGES, "TranslateX", "TranslateY"}


def magnitude(name: str, level: int | None, bins: int, height: int, width: int) -> float:
    """The unsigned magnitude of bin ``level`` of ``bins`` for ``name``, computed as torchvision computes it
    (float32 ``linspace`` over its ranges: shear 0..0.3, translate 0..150/331 of the side, rotate 0..30
    degrees, enhance factor offset 0..0.9, solarize threshold 1..0 of full intensity; posterize 8..4 bits),
    so an operation at a bin is torchvision's to the bit; 0 for the operations without a magnitude."""
    if level is None:
        return 0.0
    if name == "Posterize":
        return float((8 - (torch.arange(bins) / ((bins - 1) / 4))).round()[level])
    side = {"TranslateX": width, "TranslateY": height}
    if name in side:
        return float(torch.linspace(0.0, 150.0 / 331.0 * side[name], bins)[level])
    if name in _RANGES:
        return float(torch.linspace(0.0, _RANGES[name], bins)[level])
    return float(torch.linspace(1.0, 0.0, bins)[level]) if name == "Solarize" else 0.0


def apply_op(batch: torch.Tensor, name: str, value: float) -> torch.Tensor:
    """Operation ``name`` at signed magnitude ``value`` on every image of ``batch`` (uint8 or float in [0, 1])."""
    if name in ("ShearX", "ShearY"):
        shear = [math.degrees(math.atan(value)), 0.0][:: 1 if name == "ShearX" else -1]
        return TF.affine(
            batch, angle=0.0, translate=[0, 0], scale=1.0, shear=shear, interpolation=_NEAREST, center=[0, 0]
        )
    if name in ("TranslateX", "TranslateY"):
        shift = [int(value), 0][:: 1 if name == "TranslateX" else -1]
        return TF.affine(batch, angle=0.0, translate=shift, scale=1.0, shear=[0.0, 0.0], interpolation=_NEAREST)
    enhance = {"Brightness": TF.adjust_brightness, "Color": TF.adjust_saturation, "Contrast": TF.adjust_contrast}
    enhance["Sharpness"] = TF.adjust_sharpness
    if name in enhance:
        return enhance[name](batch, 1.0 + value)
    if name == "Rotate":
        return TF.rotate(batch, value, interpolation=_NEAREST)
    if name == "Posterize":
        return TF.posterize(batch, int(value))
    if name == "Solarize":
        return TF.solarize(batch, value * (255.0 if batch.dtype == torch.uint8 else 1.0))
    unary = {"AutoContrast": TF.autocontrast, "Equalize": TF.equalize, "Invert": TF.invert}
    return unary[name](batch) if name in unary else batch  # Identity


@dataclass(frozen=True)
class AugmentPolicy:
    """``policy(batch, generator)``: per-sample AutoAugment or RandAugment of an ``(N, C, H, W)`` batch.

    stages: per stage, the candidate ``(operation, probability, bin)`` a sample may draw; bins: magnitude
    bins; shared_choice: one uniform draw per sample picks the candidate of every stage (an AutoAugment
    sub-policy), otherwise each stage draws its own (RandAugment).
    """

    stages: tuple[tuple[tuple[str, float, int | None], ...], ...]
    bins: int
    shared_choice: bool

    def __call__(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.apply(batch, self.draw(batch.shape[0], generator, batch.device))

    def draw(self, count: int, generator: torch.Generator, device: torch.device) -> list[torch.Tensor]:
        """Per stage, every sample's key: ``2 * candidate + sign`` (sign 1: negated magnitude), ``-1`` when
        the candidate's probability coin says not applied."""
        choice = torch.randint(0, len(self.stages[0]), (count,), generator=generator, device=device)
        keys = []
        for stage in self.stages:
            if not self.shared_choice:
                choice = torch.randint(0, len(stage), (count,), generator=generator, device=device)
            chance = torch.tensor([probability for _, probability, _ in stage], device=device)[choice]
            applied = torch.rand(count, generator=generator, device=device) < chance
            sign = torch.randint(0, 2, (count,), generator=generator, device=device)
            keys.append(torch.where(applied, choice * 2 + sign, -1))
        return keys

    def apply(self, batch: torch.Tensor, keys: list[torch.Tensor]) -> torch.Tensor:
        """``batch`` with every stage's drawn operations: one batched call per distinct (operation,
        signed magnitude) drawn, so keys that resolve alike (an unsigned operation's two signs, a bin
        several sub-policies share) are one call, and Identity none."""
        out = batch.clone()
        for stage, key in zip(self.stages, keys, strict=True):
            groups: dict[tuple[str, float], list[int]] = {}
            for draw in (draw for draw in torch.unique(key).tolist() if draw >= 0):
                op = self.signed(stage[draw // 2], draw % 2, out.shape)
                if op[0] != "Identity":
                    groups.setdefault(op, []).append(draw)
            for (name, value), draws in groups.items():
                rows = torch.isin(key, torch.tensor(draws, device=key.device))
                out[rows] = apply_op(out[rows], name, value)
        return out

    def signed(self, op: tuple[str, float, int | None], sign: int, shape: torch.Size) -> tuple[str, float]:
        """The operation's name and magnitude, negated when ``sign`` and the operation is signed."""
        name, _, level = op
        value = magnitude(name, level, self.bins, shape[-2], shape[-1])
        return name, -value if sign and name in _SIGNED else value


def build_policy(dataset: str, policy: str, num_ops: int, magnitude_bin: int) -> AugmentPolicy | None:
    """The dataset parameter ``policy`` as an ``AugmentPolicy`` (``None`` for ``"none"``); RandAugment's
    ``num_ops`` (>= 1) and ``magnitude`` (0..30); errors name the dataset and the key."""
    if policy not in POLICIES:
        raise ValueError(f"{dataset}: policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    if policy == "autoaugment":
        return AugmentPolicy(tuple(zip(*CIFAR10_POLICY, strict=True)), bins=10, shared_choice=True)
    if policy == "none":
        return None
    if not isinstance(num_ops, int) or isinstance(num_ops, bool) or num_ops < 1:
        raise ValueError(f"{dataset}: num_ops must be an integer >= 1, got {num_ops!r}")
    if not isinstance(magnitude_bin, int) or isinstance(magnitude_bin, bool) or not 0 <= magnitude_bin <= 30:
        raise ValueError(f"{dataset}: magnitude must be an integer in 0..30, got {magnitude_bin!r}")
    stage = tuple((name, 1.0, magnitude_bin) for name in RANDAUGMENT_OPS)
    return AugmentPolicy((stage,) * num_ops, bins=31, shared_choice=False)
