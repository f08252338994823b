"""The on-device input pipeline of harness_vision: batched random crop + flip, cutout, normalization.

Each augmented image is checked against crops and flips computed here, per sample, by slicing a
padded copy of its input: exactly one (offset, flip) candidate must match, whatever order the
implementation draws its random numbers in.
"""

from __future__ import annotations

import textwrap
import warnings
from pathlib import Path

import pytest
import torch
from harness_vision import augment, cifar
from harness_vision.augment import Normalize, crop_flip_cutout, cutout, random_crop_flip
from harness_vision.cifar_files import write_cifar_files as write_cifar

from harness.cli import main
from harness.plugins import Registry
from harness.results.read import read_runs

CPU = torch.device("cpu")
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.from_plugins()


def load(registry: Registry, name: str, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cifar.DatasetChecksumWarning)
        return registry.create("dataset", name, device=CPU, **params)


def generator(seed: int, device: torch.device = CPU) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def random_images(count: int, shape=(3, 32, 32), seed: int = 0, device: torch.device = CPU) -> torch.Tensor:
    """uint8 images with values in [1, 255]: zero only where padding or cutout put it."""
    return torch.randint(1, 256, (count, *shape), generator=generator(seed), dtype=torch.uint8).to(device)


@pytest.fixture(params=["tables", "computed"])
def index_path(request, monkeypatch) -> str:
    """Run a test with the precomputed index tables and again with the per-batch computed index."""
    if request.param == "computed":
        monkeypatch.setattr(augment, "_TABLE_BYTES", 0)
    return request.param


def candidates(
    image: torch.Tensor, padding: int, fill: float, flips: bool
) -> dict[tuple[int, int, bool], torch.Tensor]:
    """Every crop (and mirrored crop) of ``image`` padded by ``padding``, computed by slicing."""
    channels, height, width = image.shape
    padded = torch.full((channels, height + 2 * padding, width + 2 * padding), fill, dtype=image.dtype)
    padded[:, padding : padding + height, padding : padding + width] = image.cpu()
    out = {}
    for dy in range(2 * padding + 1):
        for dx in range(2 * padding + 1):
            crop = padded[:, dy : dy + height, dx : dx + width]
            out[(dy, dx, False)] = crop
            if flips:
                out[(dy, dx, True)] = crop[:, :, list(range(width - 1, -1, -1))]
    return out


def match_crops(inputs, outputs, padding, fill=0, flips=True) -> list[tuple[int, int, bool]]:
    """The (dy, dx, flip) of each output; asserts exactly one candidate matches each."""
    found = []
    for n in range(inputs.shape[0]):
        options = candidates(inputs[n], padding, fill, flips)
        hits = [key for key, crop in options.items() if torch.equal(crop, outputs[n].cpu())]
        assert len(hits) == 1, f"sample {n}: {len(hits)} matching crops"
        found.append(hits[0])
    return found


def test_random_crop_flip_gives_each_sample_a_crop_of_its_padded_input(index_path):
    images = random_images(200)
    state = torch.get_rng_state()
    out = random_crop_flip(images, 4, generator(0))
    assert torch.equal(torch.get_rng_state(), state)  # draws only from the generator given
    assert out.shape == images.shape and out.dtype == torch.uint8
    found = match_crops(images, out, padding=4)
    assert {dy for dy, _, _ in found} == set(range(9)) and {dx for _, dx, _ in found} == set(range(9))
    assert 0.35 < sum(flip for _, _, flip in found) / len(found) < 0.65
    assert torch.equal(random_crop_flip(images, 4, generator(0)), out)
    assert not torch.equal(random_crop_flip(images, 4, generator(1)), out)


def test_crop_without_flip_and_with_a_fill_value(index_path):
    images = torch.randn(50, 1, 8, 8, generator=generator(2))
    out = random_crop_flip(images, 1, generator(3), flip=False, fill=-0.5)
    found = match_crops(images, out, padding=1, fill=-0.5, flips=False)
    assert len({(dy, dx) for dy, dx, _ in found}) == 9


def rectangle(mask: torch.Tensor) -> tuple[range, range] | None:
    """The rows and columns of a 2-D mask, asserting its True pixels form one filled rectangle."""
    rows, cols = mask.any(dim=1).nonzero().flatten(), mask.any(dim=0).nonzero().flatten()
    if rows.numel() == 0:
        return None
    row_range, col_range = range(int(rows[0]), int(rows[-1]) + 1), range(int(cols[0]), int(cols[-1]) + 1)
    expected = torch.zeros_like(mask)
    expected[row_range.start : row_range.stop, col_range.start : col_range.stop] = True
    assert torch.equal(mask, expected)
    return row_range, col_range


def zero_region(image: torch.Tensor) -> tuple[range, range] | None:
    """The rows and columns of ``image``'s zero pixels, asserting they form one filled rectangle."""
    zero = (image == 0).all(dim=0)
    assert torch.equal((image == 0).any(dim=0), zero)  # every channel cut at the same pixels
    return rectangle(zero)


@pytest.mark.parametrize("size", [8, 5])
def test_cutout_zeroes_exactly_a_square_of_the_size_clipped_at_the_border(size, index_path):
    images = random_images(300, seed=4)
    out = cutout(images, size, generator(5))
    interior = 0
    for n in range(images.shape[0]):
        region = zero_region(out[n])
        assert region is not None, f"sample {n}: nothing cut out"
        rows, cols = region
        kept = torch.ones(32, 32, dtype=torch.bool)
        kept[rows.start : rows.stop, cols.start : cols.stop] = False
        assert torch.equal(out[n][:, kept], images[n][:, kept])  # the rest untouched
        assert len(rows) <= size and len(cols) <= size
        if len(rows) < size:
            assert rows.start == 0 or rows.stop == 32  # only a border clips the square
        if len(cols) < size:
            assert cols.start == 0 or cols.stop == 32
        interior += rows.start > 0 and rows.stop < 32 and cols.start > 0 and cols.stop < 32
    assert interior > 100
    assert torch.equal(cutout(images, size, generator(5)), out)


def test_crop_flip_and_cutout_together_in_one_pipeline_call(index_path):
    images = random_images(150, seed=10)
    out = crop_flip_cutout(images, generator(11), padding=4, flip=True, cutout=8)
    full_squares = 0
    for n in range(images.shape[0]):
        options = candidates(images[n], 4, 0, flips=True)
        hits = [key for key, crop in options.items() if bool(((out[n] == crop) | (out[n] == 0)).all())]
        assert len(hits) == 1, f"sample {n}: {len(hits)} crops match outside the cut"
        crop = options[hits[0]]
        cut = (out[n] == 0) & (crop != 0)  # cut pixels that were not padding
        assert torch.equal(cut.all(dim=0), cut.any(dim=0))
        region = rectangle(cut.all(dim=0))
        if region is not None:
            assert len(region[0]) <= 8 and len(region[1]) <= 8
            full_squares += len(region[0]) == 8 and len(region[1]) == 8
    assert full_squares > 30


def unnormalize(batch: torch.Tensor, mean, std) -> torch.Tensor:
    values = (batch * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)) * 255
    assert (values - values.round()).abs().max() < 1e-3
    return values.round().to(torch.uint8)


def test_cifar_training_batches_are_cropped_flipped_then_normalized(registry, tmp_path):
    write_cifar(tmp_path, "cifar10", train_sizes=(30,) * 5)
    data = load(registry, "cifar10", root=str(tmp_path))
    images = data.train_x[:120]
    out = data.augment(images, generator(6))
    assert out.dtype == torch.float32 and out.shape == (120, 3, 32, 32)
    match_crops(images, unnormalize(out, CIFAR10_MEAN, CIFAR10_STD), padding=4)
    inputs, labels = next(data.train_batches(64, generator(0), generator(1)))
    assert inputs.shape == (64, 3, 32, 32) and inputs.dtype == torch.float32 and labels.shape == (64,)


def test_cifar_cutout_without_crop_cuts_before_normalizing(registry, tmp_path):
    write_cifar(tmp_path, "cifar10")
    data = load(registry, "cifar10", root=str(tmp_path), augment=False, cutout=6)
    out = unnormalize(data.augment(data.train_x, generator(7)), CIFAR10_MEAN, CIFAR10_STD)
    for n in range(out.shape[0]):
        rows, cols = zero_region(out[n])
        assert len(rows) <= 6 and len(cols) <= 6
        out[n][:, rows.start : rows.stop, cols.start : cols.stop] = data.train_x[n][
            :, rows.start : rows.stop, cols.start : cols.stop
        ]
    assert torch.equal(out, data.train_x)


def test_no_augmentation_means_normalization_only(registry, tmp_path):
    write_cifar(tmp_path, "cifar10")
    data = load(registry, "cifar10", root=str(tmp_path), augment=False)
    assert data.augment is None
    inputs, _ = next(data.train_batches(100, generator(0), generator(1)))
    assert torch.equal(torch.sort(unnormalize(inputs, CIFAR10_MEAN, CIFAR10_STD).flatten(1), dim=0)[0],
                       torch.sort(data.train_x.flatten(1), dim=0)[0])  # fmt: skip


@pytest.mark.parametrize(
    "name, mean, std", [("cifar10", CIFAR10_MEAN, CIFAR10_STD), ("cifar100", CIFAR100_MEAN, CIFAR100_STD)]
)
def test_normalize_uses_the_cifar_constants(registry, tmp_path, name, mean, std):
    write_cifar(tmp_path, name, train_sizes=(10,) * 5 if name == "cifar10" else (50,), test_size=20)
    data = load(registry, name, root=str(tmp_path))
    x = data.test_x
    expected = torch.empty(x.shape)
    for c in range(3):
        expected[:, c] = (x[:, c].double() / 255 - mean[c]) / std[c]
    got = data.model_input(x)
    assert got.dtype == torch.float32
    assert torch.allclose(got, expected.float(), atol=1e-5)
    assert torch.allclose(data.normalize(x), expected.float(), atol=1e-5)


def test_digits_augmentation_crops_with_one_pixel_of_background_and_never_flips(registry):
    data = load(registry, "digits", augment=True)
    images = data.train_x[:150]
    out = data.augment(images, generator(8))
    background = float(data.train_x.min())  # a blank pixel (raw 0) after standardization
    found = match_crops(images, out, padding=1, fill=background, flips=False)
    assert len({(dy, dx) for dy, dx, _ in found}) == 9


def test_synthetic_augmentation_pads_by_an_eighth_of_the_side(registry):
    data = load(registry, "synthetic", shape=[3, 16, 16], train_size=100, test_size=10, augment=True)
    out = data.augment(data.train_x, generator(9))
    found = match_crops(data.train_x, out, padding=2, fill=0.0)
    assert max(dy for dy, _, _ in found) == 4 and any(flip for _, _, flip in found)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pipeline_runs_on_the_device_with_a_device_generator(index_path):
    device = torch.device("cuda")
    images = random_images(128, device=device)
    out = random_crop_flip(images, 4, generator(0, device))
    assert out.device.type == "cuda"
    match_crops(images.cpu(), out.cpu(), padding=4)
    cut = cutout(images, 8, generator(1, device))
    for n in range(16):
        assert zero_region(cut[n].cpu()) is not None
    normalized = Normalize(CIFAR10_MEAN, CIFAR10_STD)(images)
    assert normalized.device.type == "cuda" and normalized.dtype == torch.float32
    assert torch.equal(unnormalize(normalized.cpu(), CIFAR10_MEAN, CIFAR10_STD), images.cpu())


def test_a_noisy_augmented_synthetic_suite_runs_end_to_end(tmp_path: Path):
    suite = tmp_path / "synthetic.yaml"
    suite.write_text(
        textwrap.dedent(
            """\
            name: synthetic-noise
            defaults: {epochs: 1, batch_size: 32, device: cpu}
            methods: [erm]
            models: [mlp]
            datasets:
              - {name: synthetic, shape: [3, 8, 8], train_size: 320, test_size: 64, augment: true, cutout: 2,
                 validation_fraction: 0.1, limit_train: 300}
            noise_rates: [0.0, 0.25]
            seeds: [0]
            """
        )
    )
    assert main(["run", str(suite), "--results-dir", str(tmp_path / "results")]) == 0
    runs = read_runs(tmp_path / "results" / "synthetic-noise")
    assert sorted(runs["noise_rate"]) == [0.0, 0.25] and set(runs["status"]) == {"ok"}
    assert (runs["steps"] == 270 // 32).all()  # 300 limited, 30 held out for validation
