"""The model specs of ``harness_vision`` (no torch import: factories and checks are lazy paths).

Every factory is called as ``factory(*, num_classes, input_shape, **params)``; ``defaults`` lists every
parameter with the factory's own default, and ``check`` names the function that ``harness validate``
calls to refuse an input the model cannot take (``harness_vision.model_checks``).
"""

from __future__ import annotations

from harness import ModelSpec

_CHECKS = "harness_vision.model_checks"

SAM_PAPER = "003_dc502e6d0d8ca36d.txt (SAM)"
AESAM_PAPER = "001_543051aac35e9f16.txt (AE-SAM)"
LOOKSAM_PAPER = "000_821cd26b06e61c4d.txt (LookSAM)"
NUSAM_PAPER = "002_aa5e854e0246be55.txt (nuSAM)"


def model_specs() -> list[ModelSpec]:
    return [
        ModelSpec(
            name="mlp",
            factory="harness_vision.small_models:mlp",
            defaults={"hidden": 128, "depth": 2, "dropout": 0.0},
            description="Multi-layer perceptron on flattened inputs",
            check=f"{_CHECKS}:check_mlp",
        ),
        ModelSpec(
            name="small-cnn",
            factory="harness_vision.small_models:small_cnn",
            defaults={"channels": 32, "dropout": 0.0},
            description="Two 3x3 conv + BatchNorm blocks and a linear head, for digits-sized images",
            check=f"{_CHECKS}:check_small_cnn",
        ),
        ModelSpec(
            name="resnet18-cifar",
            factory="harness_vision.resnet_cifar:resnet18_cifar",
            defaults={},
            description="ResNet-18 (He et al. 2016) with a 3x3 stride-1 stem and no max-pool (11.2M params)",
            paper=f"{AESAM_PAPER}, Sec. 4.1 and 4.3; {LOOKSAM_PAPER}, App. A.3",
            check=f"{_CHECKS}:check_resnet18_cifar",
        ),
        ModelSpec(
            name="resnet32",
            factory="harness_vision.resnet_cifar:resnet32",
            defaults={"shortcut": "A"},
            choices={"shortcut": ("A", "B")},
            description="CIFAR ResNet-32 (He et al. 2016, 3x5 basic blocks, 16-32-64 channels, 0.46M params)",
            paper=f"{SAM_PAPER}, Sec. 3.3 (label noise); {AESAM_PAPER}, Sec. 4.3",
            check=f"{_CHECKS}:check_resnet32",
        ),
        ModelSpec(
            name="wrn",
            factory="harness_vision.wide_resnet:wide_resnet",
            defaults={"depth": 28, "widen_factor": 10, "dropout": 0.0},
            description="Wide ResNet WRN-depth-widen_factor (Zagoruyko & Komodakis 2016), pre-activation blocks",
            paper=f"{SAM_PAPER}, Sec. 3.1 Table 1 (WRN-28-10), Sec. 4.2 (WRN-40-10), App. C.4 (WRN-40-2)",
            check=f"{_CHECKS}:check_wrn",
        ),
        ModelSpec(
            name="wrn-28-10",
            factory="harness_vision.wide_resnet:wrn_28_10",
            defaults={"dropout": 0.0},
            description="Wide ResNet 28-10 (Zagoruyko & Komodakis 2016, 36.5M params)",
            paper=f"{SAM_PAPER}, Sec. 3.1, Table 1; {AESAM_PAPER}, Sec. 4.1",
            check=f"{_CHECKS}:check_wrn_28_10",
        ),
        ModelSpec(
            name="wrn-16-4",
            factory="harness_vision.wide_resnet:wrn_16_4",
            defaults={"dropout": 0.0},
            description="Wide ResNet 16-4 (Zagoruyko & Komodakis 2016, 2.75M params), a small WRN for quick runs",
            check=f"{_CHECKS}:check_wrn_16_4",
        ),
        ModelSpec(
            name="pyramidnet",
            factory="harness_vision.pyramidnet:pyramidnet",
            defaults={"depth": 110, "alpha": 270, "bottleneck": False},
            description="PyramidNet (Han et al. 2017), additive widening alpha, basic or bottleneck blocks",
            paper=f"{SAM_PAPER}, Sec. 3.1, Table 1 (depth/alpha not stated; reference code: 272, 200, bottleneck)",
            check=f"{_CHECKS}:check_pyramidnet",
        ),
        ModelSpec(
            name="pyramidnet-110",
            factory="harness_vision.pyramidnet:pyramidnet_110",
            defaults={"alpha": 270},
            description="PyramidNet-110 (Han et al. 2017), basic blocks, alpha 270 by default (28.5M params)",
            paper=f"{AESAM_PAPER}, Sec. 4.1 (alpha not stated; 270 is this harness's choice)",
            check=f"{_CHECKS}:check_pyramidnet_110",
        ),
        ModelSpec(
            name="vit-cifar",
            factory="harness_vision.timm_models:vit_cifar",
            defaults={"size": "S", "patch_size": 4},
            choices={"size": ("S", "B")},
            description="ViT-S/4 or ViT-B/4 (timm VisionTransformer) sized to the dataset's images",
            paper=f"{NUSAM_PAPER}, Sec. 5.1 and App. D, Table 6",
            check=f"{_CHECKS}:check_vit_cifar",
        ),
        ModelSpec(
            name="mixer-cifar",
            factory="harness_vision.timm_models:mixer_cifar",
            defaults={"size": "S", "patch_size": 4},
            choices={"size": ("S", "B")},
            description="MLP-Mixer-S/4 or -B/4 (timm MlpMixer) sized to the dataset's images",
            paper=f"{NUSAM_PAPER}, Sec. 5.1 and App. D, Table 6",
            check=f"{_CHECKS}:check_mixer_cifar",
        ),
        ModelSpec(
            name="timm:",
            factory="harness_vision.timm_models:timm_model",
            defaults={"model": "resnet18", "pretrained": False, "model_kwargs": None},
            suffix_param="model",
            description="Any timm architecture, timm:<name> (timm:resnet50), built with the dataset's classes/channels",
            check=f"{_CHECKS}:check_timm",
        ),
    ]
