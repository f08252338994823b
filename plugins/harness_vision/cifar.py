"""CIFAR-10 and CIFAR-100 from torchvision's on-disk layout, held on the device as uint8 images.

Files are looked for under a data root: the dataset parameter ``root``, else the environment variable
``HARNESS_DATA``, else ``~/.cache/sam-harness/data``. The layout is torchvision's (the extracted
python archives of https://www.cs.toronto.edu/~kriz/cifar.html)::

    <root>/cifar-10-batches-py/data_batch_1 ... data_batch_5, test_batch, batches.meta
    <root>/cifar-100-python/train, test, meta

Nothing is downloaded unless the dataset sets ``download: true`` (torchvision's downloader, which
checks the archive's MD5). The batches are read here rather than through ``torchvision.datasets``,
which refuses any file whose MD5 differs from the published one: a differing MD5 only warns
(``DatasetChecksumWarning``, naming the file), while a file that cannot be read as a CIFAR batch
(truncated, corrupt, wrong shape) raises ``DatasetFileError`` naming it and what was expected. The
pickles are read with an unpickler that only rebuilds NumPy arrays, so a file from elsewhere cannot
run code.

Images are stored as uint8 ``(N, 3, 32, 32)`` on the device; training batches are augmented there
(``augment: true``: random crop with 4-pixel padding and horizontal flip; ``cutout: S`` > 0: an S x S
cutout, with or without ``augment``; ``policy: autoaugment`` (CIFAR-10 policy) or ``randaugment``
(``num_ops``, ``magnitude``): per sample, before the crop; ``harness_vision.augment``,
``harness_vision.policies``) and normalized with the usual per-channel mean and std of the training
set. Validation split, label noise and sample limits: ``harness_vision.assemble``.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness import ClassificationData, HarnessError
from harness_vision.assemble import assemble
from harness_vision.augment import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    ImagePipeline,
    Normalize,
)
from harness_vision.describe import CIFAR10_CLASSES, CIFAR100_CLASSES, CIFAR_SHAPE, check_params
from harness_vision.policies import build_policy

DATA_ENV = "HARNESS_DATA"
DEFAULT_ROOT = "~/.cache/sam-harness/data"


class DatasetNotFoundError(HarnessError, FileNotFoundError):
    """A dataset's files are not where they were looked for (the message says where, and how to provide them)."""


class DatasetFileError(HarnessError, ValueError):
    """A dataset file exists but cannot be read as what it should be (the message names it)."""


class DatasetChecksumWarning(UserWarning):
    """A dataset file's MD5 differs from the published one; it is loaded anyway."""


@dataclass(frozen=True)
class CifarLayout:
    """Where torchvision keeps one CIFAR variant, and what its files hold."""

    name: str
    title: str
    folder: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    meta_key: str
    label_key: str
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    torchvision_class: str
    archive_mb: int


CIFAR10 = CifarLayout(
    name="cifar10",
    title="CIFAR-10",
    folder="cifar-10-batches-py",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_file="test_batch",
    meta_file="batches.meta",
    meta_key="label_names",
    label_key="labels",
    num_classes=CIFAR10_CLASSES,
    mean=CIFAR10_MEAN,
    std=CIFAR10_STD,
    torchvision_class="CIFAR10",
    archive_mb=163,
)
CIFAR100 = CifarLayout(
    name="cifar100",
    title="CIFAR-100",
    folder="cifar-100-python",
    train_files=("train",),
    test_file="test",
    meta_file="meta",
    meta_key="fine_label_names",
    label_key="fine_labels",
    num_classes=CIFAR100_CLASSES,
    mean=CIFAR100_MEAN,
    std=CIFAR100_STD,
    torchvision_class="CIFAR100",
    archive_mb=161,
)


def load_cifar10(
    *,
    device: torch.device | str,
    root: str = "",
    download: bool = False,
    augment: bool = True,
    cutout: int = 0,
    policy: str = "none",
    num_ops: int = 2,
    magnitude: int = 9,
    validation_fraction: float = 0.0,
    noise_rate: float = 0.0,
    noise_type: str = "symmetric",
    noise_seed: int = 0,
    limit_train: int = 0,
    limit_test: int = 0,
    split_seed: int = 0,
) -> ClassificationData:
    """CIFAR-10 (50000 train / 10000 test images, 10 classes) on ``device``."""
    return load_cifar(CIFAR10, **locals())


def load_cifar100(
    *,
    device: torch.device | str,
    root: str = "",
    download: bool = False,
    augment: bool = True,
    cutout: int = 0,
    policy: str = "none",
    num_ops: int = 2,
    magnitude: int = 9,
    validation_fraction: float = 0.0,
    noise_rate: float = 0.0,
    noise_type: str = "symmetric",
    noise_seed: int = 0,
    limit_train: int = 0,
    limit_test: int = 0,
    split_seed: int = 0,
) -> ClassificationData:
    """CIFAR-100 (50000 train / 10000 test images, 100 fine classes) on ``device``."""
    return load_cifar(CIFAR100, **locals())


def load_cifar(
    layout: CifarLayout,
    *,
    device: torch.device | str,
    root: str,
    download: bool,
    augment: bool,
    cutout: int,
    policy: str,
    num_ops: int,
    magnitude: int,
    **split_and_noise: Any,
) -> ClassificationData:
    """Read ``layout``'s files under the data root and assemble them on ``device``."""
    check_params(layout.name, cutout=cutout, **split_and_noise)
    augment_policy = build_policy(layout.name, policy, num_ops, magnitude)
    base, source = data_root(root)
    folder = base / layout.folder
    for path, expected in ((base, f"the folder that holds '{layout.folder}'"), (folder, f"{layout.title}'s folder")):
        if path.exists() and not path.is_dir():
            raise DatasetNotFoundError(
                f"{layout.name}: {path} ({source if path == base else 'under the data root'}) is a file, "
                f"not a folder; expected {expected}"
            )
    missing = [folder / name for name in (*layout.train_files, layout.test_file) if not (folder / name).is_file()]
    if missing and download:
        download_cifar(layout, base)
        missing = [path for path in missing if not path.is_file()]
    if missing:
        raise DatasetNotFoundError(_not_found_message(layout, base, source, missing))
    expected_md5 = torchvision_md5(layout)
    check_checksums([folder / name for name in (*layout.train_files, layout.test_file)], expected_md5)
    if (folder / layout.meta_file).is_file():
        check_checksums([folder / layout.meta_file], expected_md5)
        read_label_names(folder / layout.meta_file, layout)
    parts = [read_batch(folder / name, layout) for name in layout.train_files]
    train_x = torch.from_numpy(np.concatenate([images for images, _ in parts]))
    train_y = torch.from_numpy(np.concatenate([labels for _, labels in parts]))
    test_x, test_y = (torch.from_numpy(array) for array in read_batch(folder / layout.test_file, layout))
    normalize = Normalize(layout.mean, layout.std, scale=255.0)
    return assemble(
        layout.name,
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        num_classes=layout.num_classes,
        device=device,
        augment=ImagePipeline(
            padding=4 if augment else 0, flip=augment, cutout=cutout, normalize=normalize, policy=augment_policy
        )
        if augment or cutout or augment_policy
        else None,
        normalize=normalize,
        **split_and_noise,
    )


def data_root(root: str) -> tuple[Path, str]:
    """The folder that holds the dataset folders, and where that choice came from."""
    if root:
        return Path(root).expanduser(), "the dataset parameter 'root'"
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser(), f"the environment variable {DATA_ENV}"
    return Path(DEFAULT_ROOT).expanduser(), f"the default: neither the dataset parameter 'root' nor {DATA_ENV} is set"


def _not_found_message(layout: CifarLayout, base: Path, source: str, missing: list[Path]) -> str:
    listed = ", ".join(str(path) for path in missing)
    return (
        f"{layout.name}: {layout.title} was not found under {base} ({source}); missing: {listed}. "
        f"Provide it in either of two ways: (1) put torchvision's '{layout.folder}' folder (the extracted "
        f"python archive from https://www.cs.toronto.edu/~kriz/cifar.html) in a folder named by the dataset "
        f"parameter 'root' (e.g. datasets: [{{name: {layout.name}, root: /path/to/data}}]) or by the environment "
        f"variable {DATA_ENV}; or (2) set 'download: true' on the dataset (datasets: [{{name: {layout.name}, "
        f"download: true}}]) to download it there with torchvision ({layout.archive_mb} MB)."
    )


def download_cifar(layout: CifarLayout, base: Path) -> None:
    """Download and extract ``layout``'s archive into ``base`` with torchvision (which checks its MD5)."""
    from torchvision import datasets
    from torchvision.datasets.utils import download_and_extract_archive

    dataset = getattr(datasets, layout.torchvision_class)
    base.mkdir(parents=True, exist_ok=True)
    download_and_extract_archive(dataset.url, str(base), filename=dataset.filename, md5=dataset.tgz_md5)


def torchvision_md5(layout: CifarLayout) -> dict[str, str]:
    """torchvision's published MD5 of each file of ``layout`` (empty when torchvision is unavailable)."""
    try:
        from torchvision import datasets
    except ImportError:  # pragma: no cover - torchvision is a dependency, but the check is only a courtesy
        return {}
    dataset = getattr(datasets, layout.torchvision_class, None)
    if dataset is None:  # pragma: no cover
        return {}
    table = dict(dataset.train_list) | dict(dataset.test_list)
    table[dataset.meta["filename"]] = dataset.meta["md5"]
    return table


def check_checksums(paths: list[Path], expected: dict[str, str]) -> None:
    """Warn (``DatasetChecksumWarning``) for each file whose MD5 differs from ``expected[name]``."""
    for path in paths:
        published = expected.get(path.name)
        if published is None:
            continue
        actual = file_md5(path)
        if actual != published:
            warnings.warn(
                f"{path}: MD5 {actual} differs from torchvision's published {published}; loading it anyway "
                "(a modified copy? if it fails to load or trains oddly, replace it)",
                DatasetChecksumWarning,
                stacklevel=2,
            )


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_batch(path: Path, layout: CifarLayout) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR batch file as (uint8 images ``(N, 3, 32, 32)``, int64 labels ``(N,)``)."""
    expected = f"a pickled dict with 'data' (uint8 array of shape (N, 3072)) and '{layout.label_key}' (N class indices)"
    entry = _unpickle(path, expected)
    data, labels = entry.get("data"), entry.get(layout.label_key)
    if data is None or labels is None:
        raise DatasetFileError(f"{path}: has keys {sorted(entry)}; expected {expected}")
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim not in (2, 4) or data.shape[1:] not in ((3072,), CIFAR_SHAPE):
        raise DatasetFileError(f"{path}: 'data' is {data.dtype} of shape {data.shape}; expected {expected}")
    try:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as error:
        raise DatasetFileError(
            f"{path}: '{layout.label_key}' are not class indices ({error}); expected {expected}"
        ) from error
    if labels.shape[0] != data.shape[0]:
        raise DatasetFileError(
            f"{path}: {data.shape[0]} images but {labels.shape[0]} labels in '{layout.label_key}'; expected {expected}"
        )
    if labels.size and not 0 <= labels.min() <= labels.max() < layout.num_classes:
        raise DatasetFileError(
            f"{path}: labels range over [{labels.min()}, {labels.max()}]; expected {layout.num_classes} classes "
            f"[0, {layout.num_classes - 1}]"
        )
    return np.ascontiguousarray(data).reshape(-1, *CIFAR_SHAPE), labels


def read_label_names(path: Path, layout: CifarLayout) -> list[str]:
    """The class names in ``layout``'s meta file (checked to be ``num_classes`` of them)."""
    expected = f"a pickled dict with '{layout.meta_key}' ({layout.num_classes} class names)"
    names = _unpickle(path, expected).get(layout.meta_key)
    if not isinstance(names, (list, tuple)) or len(names) != layout.num_classes:
        raise DatasetFileError(f"{path}: '{layout.meta_key}' is {names!r:.200}; expected {expected}")
    return [name.decode("latin1") if isinstance(name, bytes) else str(name) for name in names]


def _unpickle(path: Path, expected: str) -> dict[str, Any]:
    try:
        with path.open("rb") as stream:
            entry = _ArrayUnpickler(stream, encoding="latin1").load()
    except Exception as error:  # any failure to parse means a truncated or corrupt file
        raise DatasetFileError(
            f"{path}: cannot be read ({type(error).__name__}: {error}); expected {expected}. The file is truncated "
            "or corrupt: replace it (or delete it and set 'download: true')"
        ) from error
    if not isinstance(entry, dict):
        raise DatasetFileError(f"{path}: holds a {type(entry).__name__}; expected {expected}")
    return {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in entry.items()}


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds NumPy arrays, bytes and plain Python values, and refuses any other global."""

    _ALLOWED = {
        ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name} (a CIFAR batch holds only NumPy arrays and plain values)"
            )
        if module.startswith("numpy.core."):  # NumPy 2 moved numpy.core to numpy._core
            module = "numpy._core." + module.removeprefix("numpy.core.")
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):  # NumPy 1: no numpy._core
            return super().find_class(module.replace("numpy._core.", "numpy.core."), name)
