"""Batched image augmentation and normalization on the device: no per-image Python loop, no DataLoader.

A training batch ``(N, C, H, W)`` (any dtype: the CIFAR images stay uint8 until normalization) is
augmented by ``crop_flip_cutout`` in a single gather, its random draws taken in one call from the
``generator`` argument (a generator on the batch's device):

- random crop: the batch is padded by ``padding`` pixels (value ``fill``) once, and every sample reads
  its ``H`` x ``W`` window at its own offset, uniform in ``[0, 2 * padding]`` along each axis;
- horizontal flip: a per-sample coin mirrors the window (its column index runs backwards);
- cutout (DeVries & Taylor, 2017): a ``size`` x ``size`` square of the output, centred at a uniform
  pixel and clipped at the border, takes the value ``fill``: a per-sample mask sends its pixels' index
  to a padding pixel. It applies to the stored images before normalization, so on CIFAR the square is
  black (0) (DeVries & Taylor cut after normalizing, which fills with the mean colour).

The index of each crop (offset and flip) and the mask of each cutout centre are rows of tables
computed once per image size, so a batch costs a few kernel launches whatever the transforms (which
matters on a GPU, where a ResNet-18 step takes milliseconds). Images too large for the tables
(``_TABLE_BYTES``) get the same index built per batch from broadcast comparisons (``torch.where`` on
the flip coins, row and column comparisons for the cutout mask). Either way the images are read and
written once. ``Normalize`` then maps the stored values to
model input per channel, ``(x / scale - mean) / std``, as one fused multiply-add. ``ImagePipeline``
chains the two as ``ClassificationData.augment`` expects. ``random_crop_flip`` and ``cutout`` are the
single transforms, for use and testing on their own.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Per-channel mean and standard deviation of the CIFAR training images in [0, 1] (the usual constants).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

_DRAW_RANGE = 1 << 24  # draws are reduced modulo their range R: relative bias below R / 2**24
_TABLE_BYTES = 32 << 20  # largest index table kept per image size (a 32 x 32 crop table: 1.3 MB)


def crop_flip_cutout(
    batch: torch.Tensor,
    generator: torch.Generator,
    *,
    padding: int = 0,
    flip: bool = False,
    cutout: int = 0,
    fill: float = 0.0,
) -> torch.Tensor:
    """Random crop (``padding`` > 0), horizontal flip (``flip``) and cutout (``cutout`` > 0) of every image
    of ``batch``, in one gather.

    Sample ``n`` of the output is ``padded[n, :, y:y+H, x:x+W]`` of the batch padded by ``padding``
    (value ``fill``), with ``y, x`` uniform in ``[0, 2 * padding]``; reversed along the width with
    probability 1/2 when ``flip``; then rows and columns ``[c - cutout // 2, c - cutout // 2 + cutout)``
    around a uniform pixel ``c`` set to ``fill`` (clipped at the border) when ``cutout``.
    """
    if padding < 0 or cutout < 0:
        raise ValueError(f"padding and cutout must be >= 0, got {padding} and {cutout}")
    if not (padding or flip or cutout):
        return batch
    count, channels, height, width = batch.shape
    margin = max(padding, 1 if cutout else 0)  # cut pixels read flat index 0: a corner of the padding
    crops, pixels = (2 * padding + 1) ** 2 * (2 if flip else 1), height * width
    if crops * pixels * 8 <= _TABLE_BYTES and (not cutout or pixels * pixels <= _TABLE_BYTES):
        flat = _index_from_tables(count, height, width, padding, margin, flip, cutout, generator, batch.device)
    else:
        flat = _index_computed(count, height, width, padding, margin, flip, cutout, generator, batch.device)
    padded = F.pad(batch, (margin,) * 4, value=fill) if margin else batch
    index = flat.view(count, 1, pixels).expand(count, channels, pixels)
    return padded.reshape(count, channels, -1).gather(2, index).view(count, channels, height, width)


def random_crop_flip(
    batch: torch.Tensor, padding: int, generator: torch.Generator, *, flip: bool = True, fill: float = 0.0
) -> torch.Tensor:
    """Random crops of the batch padded by ``padding`` (value ``fill``), each mirrored with probability 1/2
    when ``flip`` (``crop_flip_cutout`` without cutout)."""
    return crop_flip_cutout(batch, generator, padding=padding, flip=flip, fill=fill)


def cutout(batch: torch.Tensor, size: int, generator: torch.Generator, *, fill: float = 0.0) -> torch.Tensor:
    """Set a ``size`` x ``size`` square of every image to ``fill``: rows and columns
    ``[c - size // 2, c - size // 2 + size)`` around a uniformly drawn centre pixel ``c``, clipped at the border
    (``crop_flip_cutout`` without crop and flip)."""
    return crop_flip_cutout(batch, generator, cutout=size, fill=fill)


def _index_from_tables(
    count: int,
    height: int,
    width: int,
    padding: int,
    margin: int,
    flip: bool,
    cutout: int,
    generator: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    """The gather index ``(N, H * W)`` as rows of precomputed tables: one per crop, one per cutout centre."""
    crops = _crop_table(height, width, padding, margin, flip, device)
    if not cutout:
        return crops[torch.randint(0, crops.shape[0], (count,), generator=generator, device=device)]
    draws = torch.randint(0, _DRAW_RANGE, (count, 2), generator=generator, device=device)
    draws = draws % _bounds((crops.shape[0], height * width), device)  # crop, cutout centre
    return crops[draws[:, 0]].masked_fill_(_cutout_table(height, width, cutout, device)[draws[:, 1]], 0)


def _index_computed(
    count: int,
    height: int,
    width: int,
    padding: int,
    margin: int,
    flip: bool,
    cutout: int,
    generator: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    """The gather index ``(N, H * W)`` built per batch, for images too large for the tables."""
    draws = torch.randint(0, _DRAW_RANGE, (count, 5), generator=generator, device=device)
    draws = draws % _bounds((2 * padding + 1, 2 * padding + 1, 2, height, width), device)  # y, x, flip, centre y, x
    offset_y, offset_x = draws[:, 0:1] + (margin - padding), draws[:, 1:2] + (margin - padding)
    rows, columns, mirrored_columns = _aranges(height, width, device)
    read_columns = torch.where(draws[:, 2:3].bool(), mirrored_columns, columns) if flip else columns
    flat = ((offset_y + rows) * (width + 2 * margin))[:, :, None] + (offset_x + read_columns)[:, None, :]
    if cutout:
        dy = rows - (draws[:, 3:4] - cutout // 2)
        dx = columns - (draws[:, 4:5] - cutout // 2)
        inside = ((dy >= 0) & (dy < cutout))[:, :, None] & ((dx >= 0) & (dx < cutout))[:, None, :]
        flat = flat.masked_fill(inside, 0)
    return flat.view(count, height * width)


@functools.lru_cache(maxsize=64)
def _bounds(bounds: tuple[int, ...], device: torch.device) -> torch.Tensor:
    return torch.tensor(bounds, device=device)


@functools.lru_cache(maxsize=64)
def _aranges(height: int, width: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row indices, column indices and reversed column indices."""
    columns = torch.arange(width, device=device)
    return torch.arange(height, device=device), columns, columns.flip(0)


@functools.lru_cache(maxsize=16)
def _crop_table(height: int, width: int, padding: int, margin: int, flip: bool, device: torch.device) -> torch.Tensor:
    """Row ``(f * P + y) * P + x`` (``P = 2 * padding + 1``): the flat indices into the image padded by
    ``margin`` of the crop at offset ``(y, x)`` of the image padded by ``padding``, mirrored if ``f``."""
    offsets = torch.arange(2 * padding + 1, device=device) + (margin - padding)
    rows, columns, mirrored_columns = _aranges(height, width, device)
    row_part = (offsets[:, None] + rows) * (width + 2 * margin)  # (P, H)
    column_sets = torch.stack([columns, mirrored_columns]) if flip else columns[None]  # (F, W)
    column_part = offsets[None, :, None] + column_sets[:, None, :]  # (F, P, W)
    table = row_part[None, :, None, :, None] + column_part[:, None, :, None, :]  # (F, P, P, H, W)
    return table.reshape(-1, height * width)


@functools.lru_cache(maxsize=16)
def _cutout_table(height: int, width: int, size: int, device: torch.device) -> torch.Tensor:
    """Row ``cy * W + cx``: the pixels of the ``size`` square centred at ``(cy, cx)``, clipped at the border."""
    rows, columns, _ = _aranges(height, width, device)
    dy = rows[None, :] - (rows[:, None] - size // 2)  # (centre y, y)
    dx = columns[None, :] - (columns[:, None] - size // 2)  # (centre x, x)
    in_rows, in_columns = (dy >= 0) & (dy < size), (dx >= 0) & (dx < size)
    return (in_rows[:, None, :, None] & in_columns[None, :, None, :]).reshape(height * width, height * width)


class Normalize:
    """``normalize(batch)``: float32 ``(batch / scale - mean) / std`` per channel, on the batch's device.

    scale: the value of a full-intensity pixel as stored (255 for uint8 images, 1 for float ones).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], scale: float = 255.0) -> None:
        self.mean, self.std, self.scale = tuple(mean), tuple(std), scale
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self._multiplier = 1.0 / (scale * std_t)
        self._offset = -mean_t / std_t
        self._device_constants: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        multiplier, offset = self._constants(batch.device)
        return torch.addcmul(offset, batch, multiplier)  # uint8 * float32 promotes to float32: one kernel

    def _constants(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._device_constants:
            self._device_constants[device] = (self._multiplier.to(device), self._offset.to(device))
        return self._device_constants[device]

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean}, std={self.std}, scale={self.scale})"


@dataclass(frozen=True)
class ImagePipeline:
    """``augment(batch, generator)`` for ``ClassificationData``: ``crop_flip_cutout``, then normalize.

    padding: random-crop padding in pixels (0: no crop); flip: random horizontal flips; cutout: the
    cutout square's side (0: off); fill: the value of padding and cutout pixels, as stored;
    normalize: the dataset's ``normalize`` (``None``: the stored values are the model input);
    policy: a per-sample AutoAugment / RandAugment (``harness_vision.policies``), applied first, to
    the stored images (``None``: off).
    """

    padding: int = 4
    flip: bool = True
    cutout: int = 0
    fill: float = 0.0
    normalize: Normalize | None = None
    policy: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None

    def __call__(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.policy is not None:
            batch = self.policy(batch, generator)
        batch = crop_flip_cutout(
            batch, generator, padding=self.padding, flip=self.flip, cutout=self.cutout, fill=self.fill
        )
        return self.normalize(batch) if self.normalize is not None else batch


def crop_padding(height: int, width: int) -> int:
    """The random-crop padding for images of this size: an eighth of the shorter side (4 for 32 x 32,
    the CIFAR recipe; 1 for 8 x 8 digits), at least 1."""
    return max(1, min(height, width) // 8)
