"""Which parameters belong to normalization layers, told from their names and shapes (SAM-ON).

SAM-ON (Mueller, Vlaar, Rolnick and Hein, "Normalization Layers Are All That Sharpness-Aware Minimization
Needs", NeurIPS 2023, arXiv 2306.04226; a baseline of shared/papers/002_aa5e854e0246be55.txt, Sec. 2
"Memory-efficient SAM" and Sec. 5, seed_nusam.md section 9) perturbs "only the affine normalization
parameters": the ``weight`` and ``bias`` of BatchNorm, LayerNorm and GroupNorm layers. An optimizer gets
``(name, tensor)`` pairs, not modules, so the rule works on those.

Default rule: a layer whose ``weight`` is 1-D is a normalization layer, and its ``weight`` and ``bias`` are
normalization parameters. In ``torch.nn`` the layers with a 1-D weight are the normalizations (BatchNorm*,
SyncBatchNorm, LayerNorm over one dimension, GroupNorm, affine InstanceNorm*, RMSNorm) and PReLU; Linear,
Conv*, Embedding and attention weights have two dimensions or more, so their biases are left out too.
The rule selects exactly the normalization parameters of every model ``harness_vision`` ships
(tests/test_sam_on.py checks it against the module types).

The reference code (github.com/mueller-mp/SAM-ON, ``sam_on.py``) matches the substrings ``norm`` and ``bn``
in the names instead. That misses BatchNorm layers inside ``nn.Sequential``, which are named by their
index: small-cnn's ``1.weight``, PyramidNet's ``residual.0.weight``, the ResNet projection shortcuts'
``shortcut.1.weight``, timm ResNet's ``downsample.1.weight``.

``pattern``, a regular expression searched in each name, replaces the rule where it fails: PReLU (its 1-D
weight is taken for a normalization), a LayerNorm over several dimensions (its weight is not 1-D), a
normalization with other parameter names. ``"norm|bn"`` is the reference code's rule.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

AFFINE = ("weight", "bias")


def _split(name: str) -> tuple[str, str]:
    """``"blocks.0.norm1.weight"`` -> ``("blocks.0.norm1", "weight")``: the owning layer and the leaf name."""
    layer, _, leaf = name.rpartition(".")
    return layer, leaf


def normalization_names(named: Sequence[tuple[str, torch.Tensor]], pattern: str = "") -> set[str]:
    """The names among ``named`` that are normalization parameters: by the default rule, or by ``pattern``."""
    if pattern:
        try:
            regex = re.compile(pattern)
        except re.error as error:
            raise ValueError(f"normalization_pattern {pattern!r} is not a regular expression: {error}") from None
        return {name for name, _ in named if regex.search(name)}
    layers = {_split(name)[0] for name, p in named if _split(name)[1] == "weight" and p.ndim == 1}
    return {name for name, _ in named if _split(name)[0] in layers and _split(name)[1] in AFFINE}
