"""Small CIFAR-10 / CIFAR-100 files in torchvision's layout, with random pixels and labels.

For tests and offline smoke checks on a machine that cannot download CIFAR: the files go through the
real loader (``harness_vision.cifar``), with its checksum warning, since they are not the published
ones. ``python -m harness_vision.cifar_files ROOT`` writes both datasets under ROOT (then
``HARNESS_DATA=ROOT harness run suites/cifar10.yaml --smoke``).
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
TRAIN_SIZES = (20, 20, 20, 20, 20)
TEST_SIZE = 30


def write_cifar_files(
    root: Path, variant: str = "cifar10", *, train_sizes=TRAIN_SIZES, test_size=TEST_SIZE, seed=0, protocol=2
) -> dict:
    """Write a small CIFAR-10 or CIFAR-100 in torchvision's layout under ``root``; return what was written.

    Pixels are drawn in [1, 255] (no zero: padding and cutout stand out), so images are distinct.
    """
    if variant not in ("cifar10", "cifar100"):
        raise ValueError(f"variant must be 'cifar10' or 'cifar100', got {variant!r}")
    rng = np.random.default_rng(seed)
    classes = 10 if variant == "cifar10" else 100
    folder = root / ("cifar-10-batches-py" if variant == "cifar10" else "cifar-100-python")
    folder.mkdir(parents=True, exist_ok=True)
    label_key = b"labels" if variant == "cifar10" else b"fine_labels"

    def batch(count: int, name: str, title: bytes) -> tuple[np.ndarray, list[int]]:
        data = rng.integers(1, 256, size=(count, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, classes, size=count)]
        entry = {b"batch_label": title, label_key: labels, b"data": data, b"filenames": [b"x.png"] * count}
        if variant == "cifar100":
            entry[b"coarse_labels"] = [label % 20 for label in labels]
        with (folder / name).open("wb") as stream:
            pickle.dump(entry, stream, protocol=protocol)
        return data, labels

    if variant == "cifar10":
        train_names = [f"data_batch_{i}" for i in range(1, 6)]
        test_name, meta_name = "test_batch", "batches.meta"
        meta = {b"label_names": [n.encode() for n in CIFAR10_NAMES], b"num_cases_per_batch": 10000, b"num_vis": 3072}
    else:
        train_names, test_name, meta_name = ["train"], "test", "meta"
        meta = {b"fine_label_names": [b"c%d" % i for i in range(100)], b"coarse_label_names": [b"s"] * 20}
    parts = [batch(size, name, b"training batch") for size, name in zip(train_sizes, train_names, strict=True)]
    test_x, test_y = batch(test_size, test_name, b"testing batch")
    with (folder / meta_name).open("wb") as stream:
        pickle.dump(meta, stream, protocol=protocol)
    return {
        "folder": folder,
        "train_x": np.concatenate([p[0] for p in parts]),
        "train_y": np.array(sum((p[1] for p in parts), [])),
        "test_x": test_x,
        "test_y": np.array(test_y),
        "files": [folder / name for name in (*train_names, test_name, meta_name)],
    }


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m harness_vision.cifar_files ROOT")
    for variant in ("cifar10", "cifar100"):
        sizes = (60,) * 5 if variant == "cifar10" else (300,)
        written = write_cifar_files(Path(sys.argv[1]), variant, train_sizes=sizes, test_size=300)
        print(f"wrote {written['folder']}")
