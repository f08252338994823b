"""The models of harness_vision: output shapes, parameter counts against the papers, input checks, spec defaults.

Big models (WRN-28-10, PyramidNet-110, ViT-B/4, Mixer-B/4) are counted on the meta device (no memory,
no initialisation) and run forward on one or two images only, so the file stays fast on CPU.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap

import pytest
import torch
from harness_vision.model_specs import model_specs

from harness.errors import SuiteError
from harness.suite import load_suite

CIFAR = (3, 32, 32)
SPECS = {spec.name: spec for spec in model_specs()}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build(registry, name: str, *, num_classes: int = 10, input_shape=CIFAR, meta: bool = False, **params):
    """Build a registered model with its defaults updated by ``params`` (through the registry)."""
    if meta:
        with torch.device("meta"):
            return registry.create("model", name, num_classes=num_classes, input_shape=input_shape, **params)
    return registry.create("model", name, num_classes=num_classes, input_shape=input_shape, **params)


def check(registry, name: str, *, num_classes: int = 10, input_shape=CIFAR, **params) -> None:
    spec = registry.get("model", name)
    spec.load_check()(num_classes=num_classes, input_shape=input_shape, **{**spec.defaults, **params})


# --- every registered model maps (B, *input_shape) to (B, num_classes) ------------------------------

SMALL = [
    ("mlp", {}),
    ("small-cnn", {}),
    ("resnet18-cifar", {}),
    ("resnet32", {}),
    ("resnet32", {"shortcut": "B"}),
    ("wrn-16-4", {"dropout": 0.3}),
    ("wrn", {"depth": 10, "widen_factor": 2}),
    ("pyramidnet", {"depth": 20, "alpha": 24}),
    ("pyramidnet", {"depth": 29, "alpha": 24, "bottleneck": True}),
    ("vit-cifar", {}),
    ("mixer-cifar", {}),
    ("timm:resnet18", {}),
]
BIG = [
    ("wrn-28-10", {}),
    ("pyramidnet-110", {}),
    ("vit-cifar", {"size": "B"}),
    ("mixer-cifar", {"size": "B"}),
]


@pytest.mark.parametrize(("name", "params"), SMALL, ids=lambda v: str(v) if isinstance(v, str) else "")
def test_small_models_map_a_cifar_batch_to_logits_and_train(registry, name, params):
    torch.manual_seed(0)
    model = build(registry, name, num_classes=7, **params)
    logits = model(torch.randn(2, *CIFAR))
    assert logits.shape == (2, 7)
    logits.square().mean().backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert not unused, f"{name}: parameters without a gradient: {unused[:5]}"


@pytest.mark.parametrize(("name", "params"), BIG, ids=lambda v: str(v) if isinstance(v, str) else "")
def test_big_models_map_a_cifar_batch_to_logits(registry, name, params):
    model = build(registry, name, num_classes=10, **params).eval()
    with torch.no_grad():
        assert model(torch.randn(2, *CIFAR)).shape == (2, 10)


# --- parameter counts against the published ones ----------------------------------------------------

PUBLISHED = [
    # (name, params, published count, source)
    ("resnet18-cifar", {}, 11.17e6, "CIFAR ResNet-18 (3x3 stem, no max-pool)"),
    ("resnet32", {}, 0.46e6, "He et al. 2016, Table 6"),
    ("wrn-28-10", {}, 36.5e6, "Zagoruyko & Komodakis 2016, Table 4"),
    ("wrn-16-4", {}, 2.75e6, "Zagoruyko & Komodakis 2016 (2.7M)"),
    ("wrn", {"depth": 40, "widen_factor": 4}, 8.9e6, "Zagoruyko & Komodakis 2016, Table 4"),
    ("pyramidnet-110", {}, 28.3e6, "Han et al. 2017, Table 4 (alpha 270)"),
    ("pyramidnet", {"depth": 272, "alpha": 200, "bottleneck": True}, 26.0e6, "Han et al. 2017, Table 4"),
    ("pyramidnet", {"depth": 164, "alpha": 270, "bottleneck": True}, 27.0e6, "Han et al. 2017, Table 4"),
]


@pytest.mark.parametrize(("name", "params", "published", "source"), PUBLISHED, ids=lambda v: str(v)[:20])
def test_parameter_counts_match_the_papers(registry, name, params, published, source):
    count = n_params(build(registry, name, meta=True, **params))
    assert count == pytest.approx(published, rel=0.02), f"{name} {params}: {count:,} vs {published:,.0f} ({source})"


def test_resnet32_option_a_shortcuts_have_no_parameters(registry):
    a = n_params(build(registry, "resnet32", meta=True))
    b = n_params(build(registry, "resnet32", meta=True, shortcut="B"))
    # option B adds a 1x1 conv + BN at the two widening blocks: 16->32 and 32->64
    assert b - a == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)


def vit_formula(*, width: int, depth: int, patch: int, channels: int, side: int, classes: int) -> int:
    """A ViT with a class token, learned position embeddings, fused qkv, MLP ratio 4 and a final LayerNorm."""
    tokens = (side // patch) ** 2 + 1
    embedding = channels * patch * patch * width + width + width + tokens * width
    attention = 2 * width + (width * 3 * width + 3 * width) + (width * width + width)
    mlp = 2 * width + (width * 4 * width + 4 * width) + (4 * width * width + width)
    return embedding + depth * (attention + mlp) + 2 * width + width * classes + classes


def mixer_formula(
    *, width: int, depth: int, tokens_mlp: int, channels_mlp: int, patch: int, channels: int, side: int, classes: int
) -> int:
    """An MLP-Mixer: patch projection, blocks of token-mixing and channel-mixing MLPs, final LayerNorm, head."""
    tokens = (side // patch) ** 2
    stem = channels * patch * patch * width + width
    token_mixing = 2 * width + (tokens * tokens_mlp + tokens_mlp) + (tokens_mlp * tokens + tokens)
    channel_mixing = 2 * width + (width * channels_mlp + channels_mlp) + (channels_mlp * width + width)
    return stem + depth * (token_mixing + channel_mixing) + 2 * width + width * classes + classes


@pytest.mark.parametrize(
    ("size", "width", "depth", "heads"),
    [("S", 384, 12, 6), ("B", 768, 12, 12)],
)
def test_vit_sizes_follow_the_architecture_formula(registry, size, width, depth, heads):
    model = build(registry, "vit-cifar", meta=True, size=size)
    expected = vit_formula(width=width, depth=depth, patch=4, channels=3, side=32, classes=10)
    assert n_params(model) == expected
    assert len(model.blocks) == depth and model.blocks[0].attn.num_heads == heads
    if size == "S":
        assert expected == 21_342_346  # nuSAM ViT-S/4 on CIFAR-10 (shared/papers/seed_nusam.md 4.2)


@pytest.mark.parametrize(
    ("size", "width", "depth", "tokens_mlp", "channels_mlp"),
    [("S", 512, 8, 256, 2048), ("B", 768, 12, 384, 3072)],
)
def test_mixer_sizes_follow_the_architecture_formula(registry, size, width, depth, tokens_mlp, channels_mlp):
    model = build(registry, "mixer-cifar", meta=True, size=size)
    expected = mixer_formula(
        width=width,
        depth=depth,
        tokens_mlp=tokens_mlp,
        channels_mlp=channels_mlp,
        patch=4,
        channels=3,
        side=32,
        classes=10,
    )
    assert n_params(model) == expected
    if size == "S":
        assert expected == 17_110_026  # nuSAM Mixer-S/4 on CIFAR-10 (shared/papers/seed_nusam.md 4.2)


# --- 100 classes change only the head --------------------------------------------------------------

ALL_DEFAULT = [name for name in SPECS if not name.endswith(":")] + ["timm:resnet18"]


@pytest.mark.parametrize("name", ALL_DEFAULT)
def test_more_classes_change_only_the_head(registry, name):
    ten = {k: v.shape for k, v in build(registry, name, num_classes=10, meta=True).state_dict().items()}
    hundred = {k: v.shape for k, v in build(registry, name, num_classes=100, meta=True).state_dict().items()}
    assert ten.keys() == hundred.keys()
    changed = sorted(k for k in ten if ten[k] != hundred[k])
    assert len(changed) == 2, changed  # the head's weight and bias
    weight = next(k for k in changed if k.endswith("weight"))
    assert ten[weight][0] == 10 and hundred[weight][0] == 100 and ten[weight][1:] == hundred[weight][1:]


# --- input checks -------------------------------------------------------------------------------------

IMAGES = "images of shape (channels, height, width)"
SQUARE = "square images (channels, side, side) whose side is divisible by the patch size"
REJECTED = [
    ("mlp", {}, (), 10, "model 'mlp' needs a non-empty input shape of positive integer sizes; got input shape ()"),
    ("mlp", {}, (64,), 0, "model 'mlp' needs num_classes to be a positive integer; got 0"),
    ("small-cnn", {}, (64,), 10, f"model 'small-cnn' needs {IMAGES}; got input shape (64,)"),
    ("resnet18-cifar", {}, (3, 4, 4), 10, "model 'resnet18-cifar' needs images of at least 8x8 pixels"),
    ("resnet32", {}, (3, 32), 10, f"model 'resnet32' needs {IMAGES}; got input shape (3, 32)"),
    ("resnet32", {}, CIFAR, 0, "model 'resnet32' needs num_classes to be a positive integer; got 0"),
    ("resnet32", {"shortcut": "C"}, CIFAR, 10, "model 'resnet32': parameter 'shortcut' must be 'A'"),
    ("wrn-28-10", {}, (3072,), 10, f"model 'wrn-28-10' needs {IMAGES}; got input shape (3072,)"),
    ("wrn-16-4", {}, (3, 32, 2), 10,
     "model 'wrn-16-4' needs images of at least 4x4 pixels (it downsamples by 4); got input shape (3, 32, 2)"),
    ("wrn", {"depth": 27}, CIFAR, 10, "model 'wrn': parameter 'depth' must be 6n+4"),
    ("wrn", {"dropout": 1.0}, CIFAR, 10, "model 'wrn': parameter 'dropout' must be a number in [0, 1)"),
    ("pyramidnet-110", {}, (3, 2, 2), 10, "model 'pyramidnet-110' needs images of at least 4x4 pixels"),
    ("pyramidnet", {"depth": 26, "bottleneck": True}, CIFAR, 10, "model 'pyramidnet': parameter 'depth' must be 9n+2"),
    ("pyramidnet", {"depth": 101}, CIFAR, 10, "model 'pyramidnet': parameter 'depth' must be 6n+2"),
    ("vit-cifar", {}, (3, 30, 30), 10, f"model 'vit-cifar' needs {SQUARE} 4; got input shape (3, 30, 30)"),
    ("vit-cifar", {}, (3, 32, 28), 10, f"model 'vit-cifar' needs {SQUARE} 4; got input shape (3, 32, 28)"),
    ("vit-cifar", {"size": "L"}, CIFAR, 10, "model 'vit-cifar': parameter 'size' must be one of ('S', 'B')"),
    ("mixer-cifar", {"patch_size": 3}, (1, 8, 8), 10,
     f"model 'mixer-cifar' needs {SQUARE} 3; got input shape (1, 8, 8)"),
    ("mixer-cifar", {}, (64,), 10, f"model 'mixer-cifar' needs {SQUARE} 4; got input shape (64,)"),
    ("timm:resnet18", {}, (784,), 10, f"model 'timm:resnet18' needs {IMAGES}; got input shape (784,)"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "params", "input_shape", "num_classes", "message"), REJECTED, ids=lambda v: str(v)[:24]
)
def test_checks_reject_what_the_model_cannot_take(registry, name, params, input_shape, num_classes, message):
    with pytest.raises(ValueError) as error:
        check(registry, name, num_classes=num_classes, input_shape=input_shape, **params)
    assert message in str(error.value)
    if name in ("mlp", "small-cnn"):
        return  # small_models' factories predate the checks and do not call them
    # the factory refuses the same input with the same message, before building anything
    with pytest.raises(ValueError) as built:
        build(registry, name, num_classes=num_classes, input_shape=input_shape, meta=True, **params)
    assert str(built.value) == str(error.value)


ACCEPTED_SMALLEST = [
    # (name, params, the smallest or oddest input the check accepts): the model must then run on it
    ("mlp", {}, (5,)),
    ("small-cnn", {}, (1, 2, 2)),
    ("resnet18-cifar", {}, (1, 8, 8)),
    ("resnet32", {}, (1, 4, 4)),
    ("resnet32", {}, (2, 9, 7)),
    ("resnet32", {"shortcut": "B"}, (2, 9, 7)),
    ("wrn", {"depth": 10, "widen_factor": 1}, (1, 5, 4)),
    ("pyramidnet", {"depth": 8, "alpha": 12}, (1, 4, 4)),
    ("pyramidnet", {"depth": 8, "alpha": 12}, (2, 9, 7)),
    ("pyramidnet", {"depth": 11, "alpha": 12, "bottleneck": True}, (2, 7, 9)),
    ("vit-cifar", {"patch_size": 2}, (1, 8, 8)),
    ("mixer-cifar", {"patch_size": 8}, (1, 8, 8)),
    ("timm:resnet18", {}, (1, 8, 8)),
]


@pytest.mark.parametrize(("name", "params", "input_shape"), ACCEPTED_SMALLEST, ids=lambda v: str(v)[:24])
def test_inputs_the_check_accepts_run(registry, name, params, input_shape):
    check(registry, name, num_classes=3, input_shape=input_shape, **params)
    model = build(registry, name, num_classes=3, input_shape=input_shape, **params)
    assert model(torch.randn(2, *input_shape)).shape == (2, 3)


def test_a_suite_pairing_a_model_with_a_dataset_it_cannot_take_fails_validation(registry, tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        textwrap.dedent(
            """\
            name: vit-on-digits
            defaults: {epochs: 1, batch_size: 64}
            methods: [erm]
            models: [{name: vit-cifar, patch_size: 3}]
            datasets: [digits]
            seeds: [0]
            """
        )
    )
    with pytest.raises(SuiteError, match=r"model 'vit-cifar' needs square images .* patch size 3; got input shape"):
        load_suite(suite, registry)


# --- specs: defaults are the factories' keyword defaults, checks are lazy and cheap ---------------------


def _keyword_defaults(function) -> dict:
    parameters = inspect.signature(function).parameters
    assert {"num_classes", "input_shape"} <= parameters.keys()
    return {name: p.default for name, p in parameters.items() if name not in ("num_classes", "input_shape")}


@pytest.mark.parametrize("name", list(SPECS))
def test_spec_defaults_are_the_factory_and_check_defaults(name):
    spec = SPECS[name]
    assert spec.check is not None, f"{name} has no check"
    assert _keyword_defaults(spec.load()) == dict(spec.defaults)
    assert _keyword_defaults(spec.load_check()) == dict(spec.defaults)
    assert all(value is inspect.Parameter.empty or value is None or isinstance(value, (bool, int, float, str))
               for value in spec.defaults.values())  # fmt: skip


def test_checks_and_specs_import_neither_torch_nor_timm():
    code = (
        "import sys; import harness_vision.model_specs, harness_vision.model_checks; "
        "harness_vision.model_checks.check_vit_cifar(num_classes=10, input_shape=(3, 32, 32)); "
        "print(sorted(m for m in ('torch', 'timm') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- timm passthrough ----------------------------------------------------------------------------------


def test_timm_family_builds_any_timm_model_with_the_dataset_classes_and_channels(registry):
    spec = registry.get("model", "timm:resnet18")
    assert spec.defaults["model"] == "resnet18"
    model = build(registry, "timm:resnet18", num_classes=7, input_shape=(1, 28, 28), model_kwargs={"drop_rate": 0.5})
    assert model.conv1.in_channels == 1 and model.fc.out_features == 7 and model.drop_rate == 0.5
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 7)


def test_timm_family_passes_the_image_size_to_models_that_take_one(registry):
    model = build(registry, "timm:vit_tiny_patch16_224", num_classes=5, input_shape=(3, 32, 32)).eval()
    assert model.patch_embed.grid_size == (2, 2)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 5)


def test_timm_family_rejects_an_unknown_name_with_a_did_you_mean(registry):
    with pytest.raises(ValueError, match=r"'resnet181' is not a timm model .*did you mean 'resnet18'"):
        check(registry, "timm:resnet181")
    with pytest.raises(ValueError, match="is not a timm model"):
        build(registry, "timm:resnet181", meta=True)


def test_timm_family_refuses_model_kwargs_the_harness_sets(registry):
    with pytest.raises(ValueError, match=r"'model_kwargs' must be free of num_classes, in_chans"):
        check(registry, "timm:resnet18", model_kwargs={"num_classes": 3})
    with pytest.raises(ValueError, match=r"'model_kwargs' must be a mapping"):
        check(registry, "timm:resnet18", model_kwargs=[1, 2])
