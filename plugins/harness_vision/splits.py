"""Seeded index selections: stable seeds, subsets (``limit_train`` / ``limit_test``) and the validation split.

Every selection here is seeded by the dataset's own parameters (``split_seed``, ``noise_seed``), never
by the run seed, so every method and run seed of a suite trains and is scored on the same samples.
Seeds come from a SHA-256 of their parts (``stable_seed``): Python's ``hash`` is salted per process.
"""

from __future__ import annotations

import hashlib

import torch


def stable_seed(*parts: object) -> int:
    """A 63-bit seed that depends only on ``parts`` (their ``str``), the same in every process."""
    text = "\x1f".join(str(part) for part in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def cpu_generator(*parts: object) -> torch.Generator:
    """A CPU generator seeded with ``stable_seed(*parts)``."""
    return torch.Generator().manual_seed(stable_seed(*parts))


def subset(count: int, limit: int, generator: torch.Generator) -> torch.Tensor | None:
    """Indices of a random subset of ``limit`` of ``count`` samples, in their original order.

    ``limit`` 0 (or >= ``count``) keeps everything and returns ``None``.
    """
    if limit < 0:
        raise ValueError(f"a sample limit must be >= 0 (0 keeps all), got {limit}")
    if limit == 0 or limit >= count:
        return None
    return torch.randperm(count, generator=generator)[:limit].sort().values


def validation_split(count: int, fraction: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``count`` training samples into (train, validation) indices, each in original order.

    The validation part is a random ``round(fraction * count)`` of the samples.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {fraction}")
    size = round(fraction * count)
    if size >= count:
        raise ValueError(f"validation_fraction {fraction} of {count} training samples leaves none to train on")
    order = torch.randperm(count, generator=generator)
    return order[size:].sort().values, order[:size].sort().values
