"""Datasets of harness_vision: CIFAR files in torchvision's layout, label noise, validation split, limits,
synthetic data, ``describe`` and the specs' defaults.

Nothing downloads: the CIFAR tests write small files in torchvision's layout (pickled dicts with bytes
keys, uint8 ``data`` of shape (N, 3072)) to a temporary folder and load them through the real loader.
Expected values are computed here from the written arrays, not through the loader's helpers.
"""

from __future__ import annotations

import hashlib
import inspect
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from harness_vision import cifar
from harness_vision.cifar_files import CIFAR10_NAMES
from harness_vision.cifar_files import write_cifar_files as write_cifar
from harness_vision.label_noise import add_label_noise
from scipy import stats

from harness import HarnessError
from harness.plugins import Registry
from harness.run.build import seed_everything

CPU = torch.device("cpu")
SHARED_PARAMS = {"validation_fraction", "noise_rate", "noise_type", "noise_seed", "limit_train", "limit_test"}


def as_rows(images: torch.Tensor) -> np.ndarray:
    """Images (N, 3, 32, 32) back to CIFAR rows (N, 3072): channel planes of row-major pixels."""
    return images.cpu().numpy().reshape(images.shape[0], -1)


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.from_plugins()


@pytest.fixture
def cifar10_root(tmp_path: Path) -> tuple[Path, dict]:
    return tmp_path, write_cifar(tmp_path, "cifar10")


def load(registry: Registry, name: str, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cifar.DatasetChecksumWarning)  # the written files are not the published ones
        return registry.create("dataset", name, device=CPU, **params)


# ---------------------------------------------------------------------------------------------- CIFAR files


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar10_files_load_with_shapes_dtypes_labels_and_order(registry, tmp_path, protocol):
    written = write_cifar(tmp_path, "cifar10", protocol=protocol)
    data = load(registry, "cifar10", root=str(tmp_path))
    assert data.train_x.dtype == torch.uint8 and data.train_x.device == CPU
    assert data.train_x.shape == (100, 3, 32, 32) and data.test_x.shape == (30, 3, 32, 32)
    assert data.train_y.dtype == torch.long and data.num_classes == 10
    # Order: data_batch_1..5 in turn; pixel (c, i, j) of image n is data[n, 1024 c + 32 i + j].
    rows = written["train_x"]
    for n, (c, i, j) in [(0, (0, 0, 0)), (25, (1, 3, 7)), (99, (2, 31, 31)), (60, (0, 16, 2))]:
        assert int(data.train_x[n, c, i, j]) == int(rows[n, 1024 * c + 32 * i + j])
    assert np.array_equal(as_rows(data.train_x), rows)
    assert data.train_y.tolist() == written["train_y"].tolist()
    assert np.array_equal(as_rows(data.test_x), written["test_x"])
    assert data.test_y.tolist() == written["test_y"].tolist()
    assert data.true_train_y is None and data.val_x is None and data.val_y is None


def test_cifar100_files_load_fine_labels(registry, tmp_path):
    written = write_cifar(tmp_path, "cifar100", train_sizes=(80,), test_size=40)
    data = load(registry, "cifar100", root=str(tmp_path))
    assert data.num_classes == 100 and data.train_x.shape == (80, 3, 32, 32) and data.test_x.shape == (40, 3, 32, 32)
    assert np.array_equal(as_rows(data.train_x), written["train_x"])
    assert data.train_y.tolist() == written["train_y"].tolist()  # fine labels, not coarse
    assert data.test_y.tolist() == written["test_y"].tolist()


def test_harness_data_environment_variable_is_the_root_when_none_is_given(registry, cifar10_root, monkeypatch):
    root, written = cifar10_root
    monkeypatch.setenv("HARNESS_DATA", str(root))
    data = load(registry, "cifar10")
    assert data.train_y.tolist() == written["train_y"].tolist()


def test_missing_files_error_names_the_paths_and_both_ways_to_provide_them(registry, tmp_path, monkeypatch):
    monkeypatch.delenv("HARNESS_DATA", raising=False)
    with pytest.raises(HarnessError) as caught:
        load(registry, "cifar10", root=str(tmp_path / "nowhere"))
    message = str(caught.value)
    assert isinstance(caught.value, FileNotFoundError)
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py" / "data_batch_1") in message
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py" / "test_batch") in message
    assert "root" in message and "HARNESS_DATA" in message and "download: true" in message


@pytest.mark.parametrize("where", ["root", "dataset folder"])
def test_a_root_or_dataset_folder_that_is_a_file_says_so(registry, tmp_path, where):
    # Before: "CIFAR-10 was not found under ...; missing: <six paths inside a file>", and the advice to put
    # the folder there.
    root = tmp_path / "data"
    if where == "root":
        root.write_text("not a folder")
        path = root
    else:
        root.mkdir()
        path = root / "cifar-10-batches-py"
        path.write_text("not a folder")
    with pytest.raises(cifar.DatasetNotFoundError) as caught:
        load(registry, "cifar10", root=str(root))
    assert f"{path} " in str(caught.value) and "is a file, not a folder" in str(caught.value)


def test_one_missing_file_is_named_alone(registry, cifar10_root):
    root, written = cifar10_root
    (written["folder"] / "data_batch_3").unlink()
    with pytest.raises(cifar.DatasetNotFoundError) as caught:
        load(registry, "cifar10", root=str(root))
    message = str(caught.value)
    assert "data_batch_3" in message and "data_batch_2" not in message and "test_batch" not in message


def test_download_true_fetches_through_torchvision_into_the_root(registry, tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    calls = []

    def fake_download(url, download_root, filename=None, md5=None, **_):
        calls.append((url, download_root, filename, md5))
        write_cifar(Path(download_root), "cifar10")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", fake_download)
    data = load(registry, "cifar10", root=str(tmp_path), download=True)
    assert data.train_x.shape == (100, 3, 32, 32)
    assert calls == [
        (
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            str(tmp_path),
            "cifar-10-python.tar.gz",
            "c58f30108f718f92721af3b95e74349a",
        )
    ]
    load(registry, "cifar10", root=str(tmp_path), download=True)
    assert len(calls) == 1  # files present: nothing downloaded


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_a_truncated_or_corrupt_batch_is_an_error_naming_the_file(registry, cifar10_root, damage):
    root, written = cifar10_root
    path = written["folder"] / "data_batch_2"
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2] if damage == "truncate" else b"\x00not a pickle" * 50)
    with pytest.raises(cifar.DatasetFileError) as caught:
        load(registry, "cifar10", root=str(root))
    assert isinstance(caught.value, (HarnessError, ValueError))
    assert str(path) in str(caught.value) and "3072" in str(caught.value)


def test_a_batch_of_the_wrong_shape_is_an_error_naming_the_file_and_the_expected_shape(registry, cifar10_root):
    root, written = cifar10_root
    path = written["folder"] / "test_batch"
    with path.open("wb") as stream:
        pickle.dump({b"data": np.zeros((30, 1000), np.uint8), b"labels": [0] * 30}, stream)
    with pytest.raises(cifar.DatasetFileError, match="3072") as caught:
        load(registry, "cifar10", root=str(root))
    assert str(path) in str(caught.value) and "(30, 1000)" in str(caught.value)


def test_a_pickle_that_would_run_code_is_refused(registry, cifar10_root):
    root, written = cifar10_root
    path = written["folder"] / "data_batch_1"
    path.write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")
    with pytest.raises(cifar.DatasetFileError, match="refusing") as caught:
        load(registry, "cifar10", root=str(root))
    assert str(path) in str(caught.value)


def test_a_checksum_mismatch_only_warns_naming_the_file(registry, cifar10_root, monkeypatch):
    root, written = cifar10_root
    md5 = {path.name: hashlib.md5(path.read_bytes()).hexdigest() for path in written["files"]}
    md5["data_batch_2"] = "0" * 32  # the only file that differs from the "published" checksums
    monkeypatch.setattr(cifar, "torchvision_md5", lambda layout: md5)
    with pytest.warns(cifar.DatasetChecksumWarning) as record:
        data = registry.create("dataset", "cifar10", device=CPU, root=str(root))
    assert [str(w.message).split(":")[0] for w in record] == [str(written["folder"] / "data_batch_2")]
    assert data.train_x.shape == (100, 3, 32, 32)


def test_the_written_files_differ_from_torchvisions_checksums_and_each_warns(registry, cifar10_root):
    root, written = cifar10_root
    with pytest.warns(cifar.DatasetChecksumWarning) as record:
        registry.create("dataset", "cifar10", device=CPU, root=str(root))
    assert sorted(str(w.message).split(":")[0] for w in record) == sorted(str(path) for path in written["files"])


# ---------------------------------------------------------------------------------------------- label noise


def balanced_labels(count: int, classes: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).permutation(np.arange(count) % classes))


def test_symmetric_noise_flips_exactly_round_rn_to_a_uniform_other_class():
    clean = balanced_labels(20000, 10)
    noisy = add_label_noise(clean, dataset="cifar10", num_classes=10, rate=0.37, noise_type="symmetric", noise_seed=3)
    changed = noisy != clean
    assert int(changed.sum()) == 7400  # 0.37 * 20000
    shift = ((noisy[changed] - clean[changed]) % 10).numpy()
    assert shift.min() >= 1  # never the same class
    counts = np.bincount(shift, minlength=10)[1:]
    assert stats.chisquare(counts).pvalue > 1e-3  # uniform over the 9 other classes
    chosen_per_class = np.bincount(clean[changed].numpy(), minlength=10)
    assert stats.chisquare(chosen_per_class).pvalue > 1e-3  # the flipped samples are spread over the classes


def test_noise_on_digits_flips_exactly_round_rn_and_keeps_the_true_labels(registry):
    clean = load(registry, "digits")
    data = load(registry, "digits", noise_rate=0.4)
    assert int(data.noisy_mask.sum()) == 575  # round(0.4 * 1437)
    assert torch.equal(data.true_train_y, clean.train_y)
    assert torch.equal(data.test_y, clean.test_y) and torch.equal(data.train_x, clean.train_x)


def test_noise_depends_on_dataset_and_noise_seed_not_on_the_run_seed(registry):
    seed_everything(1)
    first = load(registry, "digits", noise_rate=0.3, noise_seed=5)
    seed_everything(2)
    torch.rand(17)
    second = load(registry, "digits", noise_rate=0.3, noise_seed=5)
    other = load(registry, "digits", noise_rate=0.3, noise_seed=6)
    assert torch.equal(first.train_y, second.train_y)
    assert not torch.equal(first.train_y, other.train_y)
    labels = balanced_labels(1000, 10)
    kwargs = {"num_classes": 10, "rate": 0.3, "noise_type": "symmetric", "noise_seed": 5}
    assert not torch.equal(
        add_label_noise(labels, dataset="digits", **kwargs), add_label_noise(labels, dataset="synthetic", **kwargs)
    )


def test_asymmetric_noise_on_cifar10_maps_the_class_pairs_exactly():
    expected_target = {"truck": "automobile", "bird": "airplane", "deer": "horse", "cat": "dog", "dog": "cat"}
    clean = balanced_labels(1000, 10)  # 100 per class
    noisy = add_label_noise(clean, dataset="cifar10", num_classes=10, rate=0.37, noise_type="asymmetric", noise_seed=0)
    for c, name in enumerate(CIFAR10_NAMES):
        members = clean == c
        moved = members & (noisy != clean)
        if name in expected_target:
            assert int(moved.sum()) == 37, name  # round(0.37 * 100) of each source class
            assert set(noisy[moved].tolist()) == {CIFAR10_NAMES.index(expected_target[name])}, name
        else:
            assert int(moved.sum()) == 0, name


@pytest.mark.parametrize("dataset, classes", [("cifar100", 100), ("digits", 10), ("synthetic", 7)])
def test_asymmetric_noise_elsewhere_is_the_cyclic_map(dataset, classes):
    clean = balanced_labels(classes * 30, classes, seed=1)
    noisy = add_label_noise(
        clean, dataset=dataset, num_classes=classes, rate=0.2, noise_type="asymmetric", noise_seed=0
    )
    changed = noisy != clean
    assert torch.equal(noisy[changed], (clean[changed] + 1) % classes)
    assert np.bincount(clean[changed].numpy(), minlength=classes).tolist() == [6] * classes  # round(0.2 * 30)


def test_asymmetric_noise_through_the_cifar10_loader(registry, tmp_path):
    write_cifar(tmp_path, "cifar10", train_sizes=(200,) * 5, test_size=10)
    data = load(registry, "cifar10", root=str(tmp_path), noise_rate=0.5, noise_type="asymmetric")
    moved = data.noisy_mask
    pairs = set(zip(data.true_train_y[moved].tolist(), data.train_y[moved].tolist(), strict=True))
    assert pairs == {(9, 1), (2, 0), (4, 7), (3, 5), (5, 3)}
    for source in (9, 2, 4, 3, 5):
        assert int((moved & (data.true_train_y == source)).sum()) == round(
            0.5 * int((data.true_train_y == source).sum())
        )


def test_zero_noise_leaves_labels_alone(registry):
    data = load(registry, "digits", noise_rate=0.0, noise_type="asymmetric")
    assert data.true_train_y is None and data.noisy_mask is None


@pytest.mark.parametrize(
    "params", [{"noise_rate": 1.0}, {"noise_rate": -0.1}, {"noise_type": "pairflip", "noise_rate": 0.1}]
)
def test_bad_noise_parameters_are_errors(registry, params):
    with pytest.raises(ValueError):
        load(registry, "digits", **params)


# ---------------------------------------------------------------------------------------------- validation split


def test_validation_split_is_a_seeded_ten_percent_with_clean_labels(registry, tmp_path):
    written = write_cifar(tmp_path, "cifar10", train_sizes=(40,) * 5)
    data = load(registry, "cifar10", root=str(tmp_path), validation_fraction=0.1, noise_rate=0.5)
    assert data.val_x.shape == (20, 3, 32, 32) and data.train_x.shape == (180, 3, 32, 32)
    index = {row.tobytes(): n for n, row in enumerate(written["train_x"])}  # images are distinct
    train_ids = [index[row.tobytes()] for row in as_rows(data.train_x)]
    val_ids = [index[row.tobytes()] for row in as_rows(data.val_x)]
    assert not set(train_ids) & set(val_ids) and sorted(train_ids + val_ids) == list(range(200))
    assert data.val_y.tolist() == written["train_y"][val_ids].tolist()  # clean
    assert data.true_train_y.tolist() == written["train_y"][train_ids].tolist()
    assert int(data.noisy_mask.sum()) == 90  # noise only on the 180 training samples
    seed_everything(123)
    again = load(registry, "cifar10", root=str(tmp_path), validation_fraction=0.1, noise_rate=0.5)
    other = load(registry, "cifar10", root=str(tmp_path), validation_fraction=0.1, noise_rate=0.5, split_seed=1)
    assert torch.equal(again.val_x, data.val_x) and torch.equal(again.train_y, data.train_y)
    assert not torch.equal(other.val_x, data.val_x)


def test_validation_split_of_digits(registry):
    clean = load(registry, "digits")
    data = load(registry, "digits", validation_fraction=0.1)
    assert data.val_x.shape[0] == 144 and data.train_x.shape[0] == 1293  # round(143.7), 1437 - 144
    assert data.val_y.shape == (144,) and data.test_x.shape == clean.test_x.shape


@pytest.mark.parametrize("fraction", [1.0, -0.1])
def test_validation_fraction_out_of_range_is_an_error(registry, fraction):
    with pytest.raises(ValueError, match="validation_fraction"):
        load(registry, "digits", validation_fraction=fraction)


# ---------------------------------------------------------------------------------------------- limits


def test_limits_take_a_seeded_subset_of_train_and_test(registry, cifar10_root):
    root, written = cifar10_root
    data = load(registry, "cifar10", root=str(root), limit_train=37, limit_test=11)
    assert data.train_x.shape[0] == 37 and data.test_x.shape[0] == 11
    rows = {row.tobytes(): n for n, row in enumerate(written["train_x"])}
    ids = [rows[row.tobytes()] for row in as_rows(data.train_x)]
    assert ids == sorted(ids) and data.train_y.tolist() == written["train_y"][ids].tolist()
    again = load(registry, "cifar10", root=str(root), limit_train=37, limit_test=11)
    assert torch.equal(again.train_x, data.train_x) and torch.equal(again.test_y, data.test_y)
    everything = load(registry, "cifar10", root=str(root), limit_train=1000, limit_test=0)
    assert everything.train_x.shape[0] == 100 and everything.test_x.shape[0] == 30


# ---------------------------------------------------------------------------------------------- synthetic


def test_synthetic_data_is_learnable_by_nearest_class_mean(registry):
    data = load(
        registry, "synthetic", shape=[3, 16, 16], num_classes=10, train_size=500, test_size=500, pixel_noise=4.0
    )
    train_x = data.train_x.reshape(500, -1)
    means = torch.stack([train_x[data.train_y == c].mean(0) for c in range(10)])
    predicted = torch.cdist(data.test_x.reshape(500, -1), means).argmin(1)
    assert (predicted == data.test_y).float().mean() > 0.8  # chance: 0.1
    assert np.bincount(data.train_y.numpy()).tolist() == [50] * 10  # balanced
    assert abs(float(data.train_x.std()) - 1.0) < 0.05


def test_synthetic_vectors_are_learnable_by_a_linear_classifier(registry):
    from sklearn.linear_model import LogisticRegression

    data = load(registry, "synthetic", shape=[20], num_classes=4, train_size=400, test_size=400, pixel_noise=1.5)
    model = LogisticRegression(max_iter=2000).fit(data.train_x.numpy(), data.train_y.numpy())
    assert model.score(data.test_x.numpy(), data.test_y.numpy()) > 0.6  # chance: 0.25


def test_synthetic_data_is_deterministic_per_seed(registry):
    params = {"shape": [1, 8, 8], "train_size": 64, "test_size": 32}
    seed_everything(0)
    first = load(registry, "synthetic", seed=3, **params)
    seed_everything(1)
    second = load(registry, "synthetic", seed=3, **params)
    other = load(registry, "synthetic", seed=4, **params)
    assert torch.equal(first.train_x, second.train_x) and torch.equal(first.test_y, second.test_y)
    assert not torch.equal(first.train_x, other.train_x)
    assert not torch.equal(first.train_x[:32], first.test_x)  # test drawn apart from train


# ---------------------------------------------------------------------------------------------- describe and specs


@pytest.mark.parametrize(
    "name, params, shape, classes",
    [
        ("digits", {}, (1, 8, 8), 10),
        ("cifar10", {}, (3, 32, 32), 10),
        ("cifar100", {}, (3, 32, 32), 100),
        ("synthetic", {"train_size": 40, "test_size": 20}, (3, 32, 32), 10),
        ("synthetic", {"shape": [2, 12, 9], "num_classes": 7, "train_size": 40, "test_size": 20}, (2, 12, 9), 7),
        ("synthetic", {"shape": [5], "num_classes": 3, "train_size": 40, "test_size": 20}, (5,), 3),
    ],
)
def test_describe_agrees_with_the_loaded_data(registry, tmp_path, name, params, shape, classes):
    if name.startswith("cifar"):
        write_cifar(tmp_path, name, train_sizes=(20,) * 5 if name == "cifar10" else (50,), test_size=10)
        params = {**params, "root": str(tmp_path)}
    spec = registry.get("dataset", name)
    describe = spec.load_describe()
    assert describe(**params) == (shape, classes)
    assert describe(**{**spec.defaults, **params}) == (shape, classes)
    data = load(registry, name, **params)
    assert data.input_shape == shape and data.num_classes == classes


def test_describe_rejects_a_bad_synthetic_shape(registry):
    describe = registry.get("dataset", "synthetic").load_describe()
    with pytest.raises(ValueError, match="shape"):
        describe(shape=[3, 0, 32])
    with pytest.raises(ValueError, match=r"image shapes \[C, H, W\]"):
        describe(shape=[5], augment=True)


@pytest.mark.parametrize("name", ["digits", "cifar10", "cifar100", "synthetic"])
@pytest.mark.parametrize(
    "params, key",
    [
        ({"validation_fraction": 1.0}, "validation_fraction"),
        ({"noise_rate": 1.5}, "noise_rate"),
        ({"limit_train": -1}, "limit_train"),
        ({"cutout": -2}, "cutout"),
        ({"noise_type": "pairs"}, "noise_type"),
    ],
)
def test_describe_checks_the_shared_parameters_without_data(registry, name, params, key):
    spec = registry.get("dataset", name)
    with pytest.raises(ValueError, match=key):
        spec.load_describe()(**{**spec.defaults, **params, "root": "/nonexistent"})


def test_every_dataset_specs_defaults_equal_its_factorys_keyword_defaults(registry):
    names = registry.names("dataset")
    assert {"digits", "cifar10", "cifar100", "synthetic"} <= set(names)
    for name in ("digits", "cifar10", "cifar100", "synthetic"):
        spec = registry.get("dataset", name)
        signature = inspect.signature(spec.load())
        keywords = {
            key: list(p.default) if isinstance(p.default, tuple) else p.default
            for key, p in signature.parameters.items()
            if key != "device"
        }
        assert all(p.default is not inspect.Parameter.empty for k, p in signature.parameters.items() if k != "device")
        assert dict(spec.defaults) == keywords, name
        assert SHARED_PARAMS <= set(spec.defaults), name
        assert spec.defaults["noise_rate"] == 0.0 and spec.defaults["validation_fraction"] == 0.0
        assert spec.choices["noise_type"] == ("symmetric", "asymmetric")
    assert registry.get("dataset", "cifar10").defaults["augment"] is True
    assert registry.get("dataset", "digits").defaults["augment"] is False
    assert registry.get("dataset", "synthetic").defaults["augment"] is False


def test_dataset_specs_module_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, harness_vision.dataset_specs as d; d.dataset_specs(); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == (
        "False"
    )


def test_digits_defaults_are_unchanged(registry):
    data = load(registry, "digits")
    assert data.train_x.shape == (1437, 1, 8, 8) and data.test_x.shape == (360, 1, 8, 8)
    assert data.train_x.dtype == torch.float32 and data.augment is None
    assert abs(float(data.train_x.mean())) < 1e-4 and abs(float(data.train_x.std()) - 1) < 1e-3
