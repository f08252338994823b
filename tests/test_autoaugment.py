"""Per-sample AutoAugment (CIFAR-10 policy) and RandAugment of ``harness_vision.policies``, and the CIFAR
dataset parameters that select them (Cubuk et al. 2019, Table 7; Cubuk et al. 2020, Sec. 3).

The batched, grouped application is checked against a per-image loop over the same draws, the
magnitudes against the closed forms of torchvision's ranges, reproducibility against seeded generators.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from harness_vision import cifar
from harness_vision.cifar_files import write_cifar_files
from harness_vision.policies import CIFAR10_POLICY, RANDAUGMENT_OPS, apply_op, build_policy, magnitude
from torchvision.transforms.v2 import AutoAugment, AutoAugmentPolicy, RandAugment

from harness.plugins import Registry

POLICIES = [("autoaugment", 2), ("randaugment", 2), ("randaugment", 3)]


def images(count: int = 48, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(("policy", "num_ops"), POLICIES)
def test_the_batched_policy_equals_a_per_image_loop_over_the_same_draws(policy, num_ops):
    augment = build_policy("cifar10", policy, num_ops, 9)
    batch = images()
    keys = augment.draw(batch.shape[0], seeded(3), batch.device)
    assert len(keys) == (2 if policy == "autoaugment" else num_ops)
    expected = []
    for n in range(batch.shape[0]):
        image = batch[n : n + 1]
        for stage, key in zip(augment.stages, keys, strict=True):
            draw = int(key[n])
            if draw >= 0:
                image = apply_op(image, *augment.signed(stage[draw // 2], draw % 2, image.shape))
        expected.append(image)
    assert torch.equal(augment(batch, seeded(3)), torch.cat(expected))


@pytest.mark.parametrize(("policy", "num_ops"), POLICIES)
def test_samples_of_one_batch_are_augmented_differently(policy, num_ops):
    batch = images(1).expand(64, -1, -1, -1).contiguous()  # one image, 64 times
    out = build_policy("cifar10", policy, num_ops, 9)(batch, seeded(0))
    distinct = {bytes(row.flatten().tolist()) for row in out}
    assert len(distinct) > 8


@pytest.mark.parametrize(("policy", "num_ops"), POLICIES)
def test_a_seed_reproduces_the_batch_another_changes_it_and_the_global_rng_is_untouched(policy, num_ops):
    augment, batch = build_policy("cifar10", policy, num_ops, 9), images()
    state = torch.get_rng_state()
    first = augment(batch, seeded(5))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first, augment(batch, seeded(5)))
    assert not torch.equal(first, augment(batch, seeded(6)))


@pytest.mark.parametrize(("policy", "num_ops"), POLICIES)
def test_shape_dtype_and_range_are_kept(policy, num_ops):
    augment, batch = build_policy("cifar10", policy, num_ops, 30), images()
    out = augment(batch, seeded(1))
    assert out.shape == batch.shape and out.dtype == torch.uint8
    unit = augment(batch.float() / 255, seeded(1))
    assert unit.dtype == torch.float32 and unit.min() >= 0 and unit.max() <= 1


def test_the_autoaugment_stages_are_the_transcribed_sub_policies_drawn_together():
    augment = build_policy("cifar10", "autoaugment", 2, 9)
    assert len(CIFAR10_POLICY) == 25 and augment.bins == 10 and augment.shared_choice
    assert augment.stages == tuple(tuple(sub[stage] for sub in CIFAR10_POLICY) for stage in (0, 1))
    first, second = augment.draw(4000, seeded(0), torch.device("cpu"))
    both = (first >= 0) & (second >= 0)
    assert torch.equal(first[both] // 2, second[both] // 2)  # one sub-policy per sample
    zero = torch.tensor([sub[1][1] == 0.0 for sub in CIFAR10_POLICY])  # ("Invert", 0.0): never applied
    assert not (second >= 0)[zero[(first.clamp(min=0)) // 2] & (first >= 0)].any()


def test_magnitudes_are_torchvisions_ranges():
    assert magnitude("Rotate", 9, 10, 32, 32) == pytest.approx(30.0)
    assert magnitude("ShearX", 3, 10, 32, 32) == pytest.approx(0.1)
    assert magnitude("TranslateY", 30, 31, 32, 32) == pytest.approx(150 / 331 * 32)
    assert magnitude("Posterize", 7, 10, 32, 32) == 8 - round(7 / 2.25)
    assert magnitude("Solarize", 0, 10, 32, 32) == 1.0 and magnitude("Solarize", 9, 10, 32, 32) == 0.0
    assert magnitude("Invert", None, 10, 32, 32) == 0.0


def _torchvision_space(transform: type) -> dict:
    """torchvision's (private) table of operations, magnitude ranges and signs; skip when it has moved."""
    space = getattr(transform, "_AUGMENTATION_SPACE", None)
    if space is None or not hasattr(transform, "_apply_image_or_video_transform"):
        pytest.skip(f"torchvision's {transform.__name__} no longer has _AUGMENTATION_SPACE to compare with")
    return space


def test_the_policy_table_operations_and_magnitudes_are_torchvisions_to_the_bit():
    """Every operation at every bin and sign equals torchvision.transforms.v2's own (AutoAugment: 10 bins,
    RandAugment: 31), on a non-square batch; the transcribed table is torchvision's CIFAR-10 policy."""
    assert CIFAR10_POLICY == tuple(AutoAugment(AutoAugmentPolicy.CIFAR10)._policies)
    assert RANDAUGMENT_OPS == tuple(_torchvision_space(RandAugment))
    batch = torch.randint(0, 256, (6, 3, 24, 40), dtype=torch.uint8, generator=seeded(2))
    for transform, policy in ((AutoAugment, "autoaugment"), (RandAugment, "randaugment")):
        reference, ours = transform(), build_policy("cifar10", policy, 2, 9)
        for name, (space, signed) in _torchvision_space(transform).items():
            levels = space(ours.bins, 24, 40)
            for level in range(ours.bins):
                value = 0.0 if levels is None else float(levels[level])
                assert ours.signed((name, 1.0, level), 0, batch.shape) == (name, value), (name, level)
                assert ours.signed((name, 1.0, level), 1, batch.shape) == (name, -value if signed else value)
                for sign in (1, -1) if signed else (1,):
                    want = reference._apply_image_or_video_transform(batch, name, sign * value, "nearest", {})
                    assert torch.equal(apply_op(batch, name, sign * value), want), (name, level, sign)


def test_closed_form_operations():
    batch = images(4)
    assert torch.equal(apply_op(batch, "Invert", 0.0), 255 - batch)
    assert torch.equal(apply_op(batch, "Solarize", 0.5), torch.where(batch >= 127.5, 255 - batch, batch))
    assert torch.equal(apply_op(batch, "Posterize", 4.0), batch & 0xF0)
    assert torch.equal(apply_op(batch, "Identity", 0.0), batch)
    shifted = apply_op(batch, "TranslateX", 3.0)
    assert torch.equal(shifted[..., 3:], batch[..., :-3]) and not shifted[..., :3].any()


@pytest.mark.parametrize(
    ("policy", "num_ops", "level", "key"),
    [("autoaug", 2, 9, "policy"), ("randaugment", 0, 9, "num_ops"), ("randaugment", 2, 31, "magnitude")],
)
def test_invalid_parameters_are_errors_naming_the_key(policy, num_ops, level, key):
    with pytest.raises(ValueError, match=f"cifar10: {key}"):
        build_policy("cifar10", policy, num_ops, level)


def test_the_cifar_loader_selects_the_policy_and_keeps_the_default_pipeline(tmp_path):
    write_cifar_files(tmp_path, "cifar10")
    registry = Registry.from_plugins()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cifar.DatasetChecksumWarning)
        plain = registry.create("dataset", "cifar10", device="cpu", root=str(tmp_path))
        policy = registry.create("dataset", "cifar10", device="cpu", root=str(tmp_path), policy="randaugment")
        with pytest.raises(Exception, match="policy"):
            registry.create("dataset", "cifar10", device="cpu", root=str(tmp_path), policy="autoaug")
    assert plain.augment.policy is None
    assert policy.augment.policy == build_policy("cifar10", "randaugment", 2, 9)
    spec = registry.get("dataset", "cifar10")
    assert {"policy", "num_ops", "magnitude"} <= set(spec.later_params)
