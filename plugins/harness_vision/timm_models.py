"""Models built with timm: ViT and MLP-Mixer for small images, and any timm model by name.

- ``vit_cifar``: Vision Transformer (Dosovitskiy et al., ICLR 2021), timm's ``VisionTransformer``
  (class token, learned position embeddings, fused qkv, MLP ratio 4, pre-norm blocks) with the image
  size and channels of the dataset and a small patch. Sizes from nuSAM (Sec. 5.1 and App. D, Table 6;
  shared/papers/seed_nusam.md 6.2): ViT-S/4 = width 384, depth 12, 6 heads; ViT-B/4 = 768, 12, 12.
  ViT-S/4 has 21,342,346 parameters for CIFAR-10 (seed_nusam.md 4.2). AE-SAM's "ViT-S16" on CIFAR
  (seed_looksam_aesam.md B.9) is ``{size: S, patch_size: 16}`` on whatever image size the dataset gives.
- ``mixer_cifar``: MLP-Mixer (Tolstikhin et al., NeurIPS 2021), timm's ``MlpMixer``. Mixer-S/4 = width
  512, depth 8, token-mixing MLP 256, channel-mixing MLP 2048; Mixer-B/4 = 768, 12, 384, 3072 (nuSAM
  Table 6). Mixer-S/4 has 17,110,026 parameters for CIFAR-10.
- ``timm_model``: any architecture of ``timm.list_models()``, built by ``timm.create_model`` with the
  dataset's ``num_classes`` and ``in_chans``, plus ``img_size`` for the architectures that take it.

No pretrained weights are loaded unless ``pretrained: true`` is asked of ``timm_model`` (which then
downloads them through timm's usual hub machinery).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from harness_vision.model_checks import check_mixer_cifar, check_timm, check_vit_cifar

VIT_CONFIGS: dict[str, dict[str, int]] = {
    "S": {"embed_dim": 384, "depth": 12, "num_heads": 6},
    "B": {"embed_dim": 768, "depth": 12, "num_heads": 12},
}
"""ViT-S and ViT-B (Dosovitskiy et al. 2021, Table 1; Steiner et al. 2022 for S), as in nuSAM Table 6."""

MIXER_CONFIGS: dict[str, dict[str, Any]] = {
    "S": {"embed_dim": 512, "num_blocks": 8, "mlp_ratio": (0.5, 4.0)},
    "B": {"embed_dim": 768, "num_blocks": 12, "mlp_ratio": (0.5, 4.0)},
}
"""Mixer-S and Mixer-B (Tolstikhin et al. 2021, Table 1): token MLP = width/2, channel MLP = 4 x width."""


def vit_cifar(*, num_classes: int, input_shape: tuple[int, ...], size: str = "S", patch_size: int = 4) -> nn.Module:
    """ViT-``size``/``patch_size`` for square images of ``input_shape``; the head is ``model.head``."""
    check_vit_cifar(num_classes=num_classes, input_shape=input_shape, size=size, patch_size=patch_size)
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        img_size=input_shape[1],
        patch_size=patch_size,
        in_chans=input_shape[0],
        num_classes=num_classes,
        **VIT_CONFIGS[size],
    )


def mixer_cifar(*, num_classes: int, input_shape: tuple[int, ...], size: str = "S", patch_size: int = 4) -> nn.Module:
    """Mixer-``size``/``patch_size`` for square images of ``input_shape``; the head is ``model.head``."""
    check_mixer_cifar(num_classes=num_classes, input_shape=input_shape, size=size, patch_size=patch_size)
    from timm.models.mlp_mixer import MlpMixer

    return MlpMixer(
        img_size=input_shape[1],
        patch_size=patch_size,
        in_chans=input_shape[0],
        num_classes=num_classes,
        **MIXER_CONFIGS[size],
    )


def timm_model(
    *,
    num_classes: int,
    input_shape: tuple[int, ...],
    model: str = "resnet18",
    pretrained: bool = False,
    model_kwargs: Mapping[str, Any] | None = None,
) -> nn.Module:
    """``timm.create_model(model, pretrained=..., num_classes=..., in_chans=..., **model_kwargs)``.

    ``img_size`` is passed as well (``input_shape[1:]``) to architectures that accept it (ViTs, Mixers,
    Swin, ...), so that their patch grid and position embeddings fit the dataset's images; convolutional
    networks, which pool globally, are built without it.
    """
    check_timm(
        num_classes=num_classes,
        input_shape=input_shape,
        model=model,
        pretrained=pretrained,
        model_kwargs=model_kwargs,
    )
    import timm

    kwargs = dict(model_kwargs or {})
    common = {"pretrained": pretrained, "num_classes": num_classes, "in_chans": input_shape[0]}
    try:
        return timm.create_model(model, img_size=tuple(input_shape[1:]), **common, **kwargs)
    except TypeError as error:
        if "img_size" not in str(error):
            raise
    return timm.create_model(model, **common, **kwargs)
