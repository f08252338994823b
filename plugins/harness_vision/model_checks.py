"""Input checks for the models of ``harness_vision``: ``check(*, num_classes, input_shape, **params)``.

``harness validate`` calls a model's check before anything trains; each raises ``ValueError`` with a
message that names the model, says what it expected and what it got. The factories call the same
checks, so building a model directly fails with the same message. Each check takes the same keyword
parameters, with the same defaults, as its factory.

This module imports no torch (and timm only inside ``check_timm``), so validating a suite stays cheap.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

VIT_SIZES = ("S", "B")
MIXER_SIZES = ("S", "B")
RESNET_SHORTCUTS = ("A", "B")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _shape(input_shape: Sequence[int]) -> tuple[Any, ...]:
    return tuple(input_shape)


def _fail_shape(model: str, expected: str, input_shape: Sequence[int]) -> None:
    raise ValueError(f"model {model!r} needs {expected}; got input shape {_shape(input_shape)}")


def _fail_param(model: str, param: str, expected: str, value: Any) -> None:
    raise ValueError(f"model {model!r}: parameter {param!r} must be {expected}; got {value!r}")


def check_classes(model: str, num_classes: Any) -> None:
    if not _is_int(num_classes) or num_classes < 1:
        raise ValueError(f"model {model!r} needs num_classes to be a positive integer; got {num_classes!r}")


def check_any_shape(model: str, num_classes: Any, input_shape: Sequence[int]) -> None:
    """Any non-empty shape of positive sizes (models that flatten their input)."""
    check_classes(model, num_classes)
    shape = _shape(input_shape)
    if not shape or not all(_is_int(size) and size >= 1 for size in shape):
        _fail_shape(model, "a non-empty input shape of positive integer sizes", input_shape)


def check_image(model: str, num_classes: Any, input_shape: Sequence[int], *, min_side: int = 1) -> None:
    """Images ``(channels, height, width)`` whose height and width are at least ``min_side``.

    ``min_side`` is the model's total downsampling factor: with a smaller image, some stride-2 layer
    would see a feature map of a single pixel and the last stage would pool less than one stride.
    """
    check_classes(model, num_classes)
    shape = _shape(input_shape)
    if len(shape) != 3 or not all(_is_int(size) and size >= 1 for size in shape):
        _fail_shape(model, "images of shape (channels, height, width)", input_shape)
    if min(shape[1:]) < min_side:
        _fail_shape(
            model,
            f"images of at least {min_side}x{min_side} pixels (it downsamples by {min_side})",
            input_shape,
        )


def _check_dropout(model: str, dropout: Any) -> None:
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        _fail_param(model, "dropout", "a number in [0, 1)", dropout)


def _check_positive(model: str, param: str, value: Any, minimum: int = 1) -> None:
    if not _is_int(value) or value < minimum:
        _fail_param(model, param, f"an integer >= {minimum}", value)


# --- small models (harness_vision.small_models) ---------------------------------------------------


def check_mlp(
    *, num_classes: int, input_shape: Sequence[int], hidden: int = 128, depth: int = 2, dropout: float = 0.0
) -> None:
    check_any_shape("mlp", num_classes, input_shape)
    _check_positive("mlp", "hidden", hidden)
    _check_positive("mlp", "depth", depth, minimum=0)
    _check_dropout("mlp", dropout)


def check_small_cnn(*, num_classes: int, input_shape: Sequence[int], channels: int = 32, dropout: float = 0.0) -> None:
    check_image("small-cnn", num_classes, input_shape, min_side=2)
    _check_positive("small-cnn", "channels", channels)
    _check_dropout("small-cnn", dropout)


# --- ResNets (harness_vision.resnet_cifar) ---------------------------------------------------------


def check_resnet18_cifar(*, num_classes: int, input_shape: Sequence[int]) -> None:
    check_image("resnet18-cifar", num_classes, input_shape, min_side=8)


def check_resnet32(*, num_classes: int, input_shape: Sequence[int], shortcut: str = "A") -> None:
    check_image("resnet32", num_classes, input_shape, min_side=4)
    if shortcut not in RESNET_SHORTCUTS:
        _fail_param("resnet32", "shortcut", "'A' (zero-padded identity) or 'B' (1x1 projection)", shortcut)


# --- Wide ResNets (harness_vision.wide_resnet) -----------------------------------------------------


def _check_wrn(
    name: str, num_classes: int, input_shape: Sequence[int], depth: Any, widen_factor: Any, dropout: Any
) -> None:
    check_image(name, num_classes, input_shape, min_side=4)
    if not _is_int(depth) or depth < 10 or (depth - 4) % 6:
        _fail_param(name, "depth", "6n+4 with n >= 1 (10, 16, 22, 28, 40, ...)", depth)
    _check_positive(name, "widen_factor", widen_factor)
    _check_dropout(name, dropout)


def check_wrn(
    *, num_classes: int, input_shape: Sequence[int], depth: int = 28, widen_factor: int = 10, dropout: float = 0.0
) -> None:
    _check_wrn("wrn", num_classes, input_shape, depth, widen_factor, dropout)


def check_wrn_28_10(*, num_classes: int, input_shape: Sequence[int], dropout: float = 0.0) -> None:
    _check_wrn("wrn-28-10", num_classes, input_shape, 28, 10, dropout)


def check_wrn_16_4(*, num_classes: int, input_shape: Sequence[int], dropout: float = 0.0) -> None:
    _check_wrn("wrn-16-4", num_classes, input_shape, 16, 4, dropout)


# --- PyramidNet (harness_vision.pyramidnet) --------------------------------------------------------


def _check_pyramidnet(
    name: str, num_classes: int, input_shape: Sequence[int], depth: Any, alpha: Any, bottleneck: Any
) -> None:
    check_image(name, num_classes, input_shape, min_side=4)
    if not isinstance(bottleneck, bool):
        _fail_param(name, "bottleneck", "true or false", bottleneck)
    per_block = 9 if bottleneck else 6
    kind = "bottleneck" if bottleneck else "basic"
    if not _is_int(depth) or depth < per_block + 2 or (depth - 2) % per_block:
        _fail_param(name, "depth", f"{per_block}n+2 with n >= 1 for {kind} blocks", depth)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha < 0:
        _fail_param(name, "alpha", "a number >= 0", alpha)


def check_pyramidnet(
    *, num_classes: int, input_shape: Sequence[int], depth: int = 110, alpha: int = 270, bottleneck: bool = False
) -> None:
    _check_pyramidnet("pyramidnet", num_classes, input_shape, depth, alpha, bottleneck)


def check_pyramidnet_110(*, num_classes: int, input_shape: Sequence[int], alpha: int = 270) -> None:
    _check_pyramidnet("pyramidnet-110", num_classes, input_shape, 110, alpha, False)


# --- ViT and MLP-Mixer (harness_vision.timm_models) ------------------------------------------------


def _check_patches(model: str, num_classes: int, input_shape: Sequence[int], patch_size: Any) -> None:
    check_classes(model, num_classes)
    _check_positive(model, "patch_size", patch_size)
    shape = _shape(input_shape)
    expected = f"square images (channels, side, side) whose side is divisible by the patch size {patch_size}"
    if len(shape) != 3 or not all(_is_int(size) and size >= 1 for size in shape):
        _fail_shape(model, expected, input_shape)
    if shape[1] != shape[2] or shape[1] % patch_size:
        _fail_shape(model, expected, input_shape)


def check_vit_cifar(*, num_classes: int, input_shape: Sequence[int], size: str = "S", patch_size: int = 4) -> None:
    if size not in VIT_SIZES:
        _fail_param("vit-cifar", "size", f"one of {VIT_SIZES}", size)
    _check_patches("vit-cifar", num_classes, input_shape, patch_size)


def check_mixer_cifar(*, num_classes: int, input_shape: Sequence[int], size: str = "S", patch_size: int = 4) -> None:
    if size not in MIXER_SIZES:
        _fail_param("mixer-cifar", "size", f"one of {MIXER_SIZES}", size)
    _check_patches("mixer-cifar", num_classes, input_shape, patch_size)


# --- any timm model (harness_vision.timm_models:timm_model) ----------------------------------------

TIMM_RESERVED_KWARGS = ("num_classes", "in_chans", "pretrained", "img_size")


def check_timm(
    *,
    num_classes: int,
    input_shape: Sequence[int],
    model: str = "resnet18",
    pretrained: bool = False,
    model_kwargs: Mapping[str, Any] | None = None,
) -> None:
    name = f"timm:{model}"
    check_image(name, num_classes, input_shape)
    if not isinstance(pretrained, bool):
        _fail_param(name, "pretrained", "true or false", pretrained)
    if model_kwargs is not None:
        if not isinstance(model_kwargs, Mapping) or not all(isinstance(key, str) for key in model_kwargs):
            _fail_param(name, "model_kwargs", "a mapping of keyword arguments for timm.create_model", model_kwargs)
        reserved = sorted(set(model_kwargs) & set(TIMM_RESERVED_KWARGS))
        if reserved:
            _fail_param(
                name,
                "model_kwargs",
                f"free of {', '.join(TIMM_RESERVED_KWARGS)} (the harness sets them from the dataset and 'pretrained')",
                dict(model_kwargs),
            )
    if not isinstance(model, str) or not model:
        raise ValueError(f"model 'timm' needs a timm model name in 'model'; got {model!r}")

    import timm

    if not timm.is_model(model):
        known = timm.list_models()
        close = difflib.get_close_matches(model.split(".")[0], known, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(
            f"model 'timm': {model!r} is not a timm model (timm {timm.__version__} knows {len(known)}; "
            f"see timm.list_models()){hint}"
        )
