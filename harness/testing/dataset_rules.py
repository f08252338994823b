"""The contract of datasets (``register_datasets``): ``factory(*, device, **params) -> ClassificationData``.

Datasets are loaded on the CPU with their registered defaults, made small where they offer the usual size
parameters (``SMALL``: ``limit_train``, ``limit_test``, ``train_size``, ``test_size``). Datasets that read
CIFAR files find tiny ones in torchvision's layout: the kit writes them once per process and points
``HARNESS_DATA`` at them while it loads. A dataset that still cannot find its files (``FileNotFoundError``)
is skipped with the error as the reason.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from harness.contract.data import ClassificationData
from harness.plugins import Registry
from harness.testing.base import ContractSkip, ContractViolation, first_difference, rule
from harness.testing.fixtures import seed_everything, write_tiny_cifar

SMALL = {"limit_train": 240, "limit_test": 120, "train_size": 240, "test_size": 120}
NOISE_RATE = 0.25
DATA_ENV = "HARNESS_DATA"
_data_root: Path | None = None


@contextlib.contextmanager
def _tiny_files() -> Iterator[None]:
    """``HARNESS_DATA`` pointing at the kit's tiny CIFAR files (written on first use), then restored."""
    global _data_root
    if _data_root is None:
        _data_root = write_tiny_cifar(Path(tempfile.mkdtemp(prefix="sam-harness-contract-data-")))
        atexit.register(shutil.rmtree, _data_root, ignore_errors=True)
    saved = os.environ.get(DATA_ENV)
    os.environ[DATA_ENV] = str(_data_root)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*MD5.*")  # the kit's files are not the published ones
            yield
    finally:
        if saved is None:
            os.environ.pop(DATA_ENV, None)
        else:
            os.environ[DATA_ENV] = saved


def load(registry: Registry, name: str, **overrides: Any) -> ClassificationData:
    """Dataset ``name`` on the CPU, small, with ``overrides``; a violation if it is not ``ClassificationData``."""
    spec = registry.get("dataset", name)
    params = {key: value for key, value in SMALL.items() if key in spec.defaults}
    params.update(overrides)
    with _tiny_files():
        try:
            data = registry.create("dataset", name, device=torch.device("cpu"), **params)
        except FileNotFoundError as error:
            raise ContractSkip(f"the dataset needs files the kit cannot provide: {error}") from error
        except Exception as error:
            raise ContractViolation(f"loading it with {params} raised {type(error).__name__}: {error}") from error
    if not isinstance(data, ClassificationData):
        raise ContractViolation(f"the factory returned {type(data).__name__}; expected harness.ClassificationData")
    return data


def _labels(data: ClassificationData) -> dict[str, torch.Tensor]:
    labels = {"train_y": data.train_y, "test_y": data.test_y}
    for key in ("val_y", "true_train_y"):
        if getattr(data, key) is not None:
            labels[key] = getattr(data, key)
    return labels


def _tensors(data: ClassificationData) -> dict[str, torch.Tensor]:
    tensors = {"train_x": data.train_x, "test_x": data.test_x, **_labels(data)}
    if data.val_x is not None:
        tensors["val_x"] = data.val_x
    return tensors


def _first_batch(data: ClassificationData, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    generators = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    return next(iter(data.train_batches(size, *generators)))


@rule("dataset", "shapes", "splits share the input shape describe() declares; int64 labels; float model input")
def shapes(registry: Registry, name: str) -> None:
    data = load(registry, name)
    if data.train_x.shape[0] == 0 or data.test_x.shape[0] == 0:
        raise ContractViolation("the training or test split is empty")
    for key, tensor in _tensors(data).items():
        if tensor.device.type != "cpu":
            raise ContractViolation(f"{key} is on {tensor.device}; tensors must be on the requested device (cpu)")
        if key.endswith("_x") and tuple(tensor.shape[1:]) != data.input_shape:
            raise ContractViolation(
                f"{key} has inputs of shape {tuple(tensor.shape[1:])}; train_x has {data.input_shape}"
            )
    for key, labels in _labels(data).items():
        if labels.dtype != torch.int64 or labels.ndim != 1:
            raise ContractViolation(
                f"{key} is {labels.dtype} of shape {tuple(labels.shape)}; expected 1-D int64 labels"
            )
    spec = registry.get("dataset", name)
    describe = spec.load_describe()
    if describe is not None:
        params = {**spec.defaults, **{key: value for key, value in SMALL.items() if key in spec.defaults}}
        shape, classes = describe(**params)
        if (tuple(shape), int(classes)) != (data.input_shape, data.num_classes):
            raise ContractViolation(
                f"describe() says input {tuple(shape)} and {classes} classes; the data has input "
                f"{data.input_shape} and {data.num_classes} classes"
            )
    inputs, targets = _first_batch(data)
    evaluated = data.model_input(data.test_x[:4])
    expected = {
        "a training batch": (inputs, (min(8, data.train_x.shape[0]), *data.input_shape)),
        "model_input(test_x[:4])": (evaluated, (min(4, data.test_x.shape[0]), *data.input_shape)),
    }
    for what, (tensor, shape) in expected.items():
        if not tensor.is_floating_point() or tuple(tensor.shape) != shape:
            raise ContractViolation(
                f"{what} is {tensor.dtype} of shape {tuple(tensor.shape)}; expected floating point of shape {shape}"
            )
    if targets.dtype != torch.int64:
        raise ContractViolation(f"a training batch has {targets.dtype} labels; expected int64")


@rule("dataset", "labels_in_range", "every label lies in [0, num_classes), with at least two classes")
def labels_in_range(registry: Registry, name: str) -> None:
    data = load(registry, name)
    if not isinstance(data.num_classes, int) or data.num_classes < 2:
        raise ContractViolation(f"num_classes is {data.num_classes!r}; expected an integer >= 2")
    for key, labels in _labels(data).items():
        if labels.numel() and not (0 <= int(labels.min()) and int(labels.max()) < data.num_classes):
            raise ContractViolation(
                f"{key} holds labels in [{int(labels.min())}, {int(labels.max())}]; expected [0, {data.num_classes})"
            )


@rule("dataset", "deterministic", "two loads under the same seed give the same tensors and the same first batch")
def deterministic(registry: Registry, name: str) -> None:
    loads = []
    for _ in range(2):
        seed_everything(0)
        data = load(registry, name)
        loads.append(({**_tensors(data)}, _first_batch(data)))
    found = first_difference(loads[0][0], loads[1][0])
    if found is not None:
        raise ContractViolation(f"two loads under seed 0 differ in {found[0]}; seed every random choice")
    (x0, y0), (x1, y1) = loads[0][1], loads[1][1]
    if not (torch.equal(x0, x1) and torch.equal(y0, y1)):
        raise ContractViolation(
            "the first training batch differs between two loads with the same generators; augment must draw "
            "only from the generator it is given"
        )


@rule("dataset", "noise_rate", "label noise at rate r changes a fraction r of the training labels, and only labels")
def noise_rate(registry: Registry, name: str) -> None:
    if "noise_rate" not in registry.get("dataset", name).defaults:
        raise ContractSkip("the dataset does not support label noise (no noise_rate in its defaults)")
    clean = load(registry, name, noise_rate=0.0)
    if clean.true_train_y is not None and bool((clean.train_y != clean.true_train_y).any()):
        raise ContractViolation("with noise_rate=0 some training labels differ from true_train_y")
    noisy = load(registry, name, noise_rate=NOISE_RATE)
    if noisy.true_train_y is None:
        raise ContractViolation(f"with noise_rate={NOISE_RATE}, true_train_y is None; keep the clean labels there")
    if not (torch.equal(noisy.true_train_y, clean.train_y) and torch.equal(noisy.train_x, clean.train_x)):
        raise ContractViolation(
            f"with noise_rate={NOISE_RATE}, train_x or true_train_y differ from the noise-free dataset's train_x "
            "and train_y; noise must change labels only"
        )
    count = noisy.train_y.numel()
    fraction = float(noisy.noisy_mask.float().mean())
    slack = 1.0 / count + 4.0 * math.sqrt(NOISE_RATE * (1 - NOISE_RATE) / count)
    if abs(fraction - NOISE_RATE) > slack:
        raise ContractViolation(
            f"with noise_rate={NOISE_RATE}, {fraction:.3f} of the {count} training labels are noisy "
            f"(allowed: {NOISE_RATE} +- {slack:.3f})"
        )


RULES = (shapes, labels_in_range, deterministic, noise_rate)
