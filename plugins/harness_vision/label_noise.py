"""Synthetic label noise on training labels: symmetric and asymmetric (class-pair) flips.

Conventions (shared/papers/seed_sam_gsam.md A.4, seed_looksam_aesam.md B.9):

- ``symmetric``: exactly ``round(rate * N)`` training samples, chosen uniformly without replacement,
  each get a label drawn uniformly from the ``K - 1`` classes other than their own (a flip never
  keeps the true class, so the noisy fraction is exactly the rate).
- ``asymmetric``: class-dependent flips ``c -> target[c]``. On CIFAR-10 the pairs of Patrini et al.
  (2017): truck -> automobile, bird -> airplane, deer -> horse, cat <-> dog; on every other dataset
  the cyclic map ``c -> (c + 1) mod K``. Patrini et al. flip each sample of a source class with
  probability ``rate``; here exactly ``round(rate * N_c)`` samples of each source class ``c`` (``N_c``
  its training samples) are flipped, the fixed-count analogue of the symmetric convention, so the
  noisy fraction of every source class is the rate up to rounding. Classes that are no source
  (airplane, automobile, frog, horse, ship on CIFAR-10) keep their labels.

The noise is drawn from a generator seeded by ``(dataset name, noise_seed)`` (``noise_generator``),
never by the run seed, so every method and run seed sees the same noisy labels. Test and validation
labels stay clean.
"""

from __future__ import annotations

import torch

from harness_vision.describe import NOISE_TYPES
from harness_vision.splits import cpu_generator

# CIFAR-10 classes: airplane 0, automobile 1, bird 2, cat 3, deer 4, dog 5, frog 6, horse 7, ship 8, truck 9.
CIFAR10_ASYMMETRIC = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}


def noise_generator(dataset: str, noise_seed: int) -> torch.Generator:
    """The CPU generator of a dataset's label noise: a function of (dataset, noise_seed) only."""
    return cpu_generator("label-noise", dataset, noise_seed)


def asymmetric_targets(dataset: str, num_classes: int) -> dict[int, int]:
    """The asymmetric flip map ``{source class: target class}`` of ``dataset``."""
    if dataset == "cifar10":
        return dict(CIFAR10_ASYMMETRIC)
    return {c: (c + 1) % num_classes for c in range(num_classes)}


def symmetric_noise(labels: torch.Tensor, num_classes: int, rate: float, generator: torch.Generator) -> torch.Tensor:
    """``labels`` (CPU) with exactly ``round(rate * N)`` of them moved to a uniformly drawn other class."""
    _check_rate(rate)
    if num_classes < 2:
        raise ValueError(f"label noise needs at least 2 classes, got {num_classes}")
    count = round(rate * labels.numel())
    chosen = torch.randperm(labels.numel(), generator=generator)[:count]
    shift = torch.randint(1, num_classes, (count,), generator=generator)
    noisy = labels.clone()
    noisy[chosen] = (labels[chosen] + shift) % num_classes
    return noisy


def asymmetric_noise(
    labels: torch.Tensor, targets: dict[int, int], rate: float, generator: torch.Generator
) -> torch.Tensor:
    """``labels`` (CPU) with exactly ``round(rate * N_c)`` samples of each source class ``c`` set to ``targets[c]``.

    All samples are chosen from the clean labels, so with cat <-> dog a cat turned dog is never turned back.
    """
    _check_rate(rate)
    noisy = labels.clone()
    for source in sorted(targets):
        members = (labels == source).nonzero().flatten()
        count = round(rate * members.numel())
        chosen = members[torch.randperm(members.numel(), generator=generator)[:count]]
        noisy[chosen] = targets[source]
    return noisy


def add_label_noise(
    labels: torch.Tensor, *, dataset: str, num_classes: int, rate: float, noise_type: str, noise_seed: int
) -> torch.Tensor:
    """The noisy training labels of ``dataset`` (``labels`` itself when ``rate`` is 0)."""
    if noise_type not in NOISE_TYPES:
        raise ValueError(f"{dataset}: noise_type must be one of {', '.join(NOISE_TYPES)}, got {noise_type!r}")
    _check_rate(rate)
    if rate == 0:
        return labels
    generator = noise_generator(dataset, noise_seed)
    if noise_type == "symmetric":
        return symmetric_noise(labels, num_classes, rate, generator)
    return asymmetric_noise(labels, asymmetric_targets(dataset, num_classes), rate, generator)


def _check_rate(rate: float) -> None:
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"noise_rate must be in [0, 1), got {rate}")
