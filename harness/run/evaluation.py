"""Evaluation of a model on a dataset's splits, in eval mode, outside the train-time clock.

``evaluate`` gives loss and accuracy on one split. ``training_set_accuracies`` predicts the training
set once and splits the accuracy by the label-noise mask: on clean samples, on noisy samples against
their given (wrong) labels (memorization, which SAM's robustness to label noise is about: SAM paper
003 Sec. 3.3, AE-SAM 001 Sec. 4.3), and on noisy samples against their true labels.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from harness.contract.data import ClassificationData

Prepare = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def predict(model: nn.Module, inputs: torch.Tensor, batch_size: int, prepare: Prepare | None = None):
    """Logits of ``model`` in eval mode over ``inputs`` in batches, yielded with their slice; restores the mode."""
    was_training = model.training
    model.eval()
    try:
        for start in range(0, inputs.shape[0], batch_size):
            batch = inputs[start : start + batch_size]
            yield slice(start, start + batch.shape[0]), model(prepare(batch) if prepare is not None else batch)
    finally:
        model.train(was_training)


def evaluate(
    model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int, prepare: Prepare | None = None
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (a fraction) over a split."""
    loss_sum = torch.zeros((), device=inputs.device)
    correct = torch.zeros((), device=inputs.device, dtype=torch.long)
    for part, logits in predict(model, inputs, batch_size, prepare):
        loss_sum += F.cross_entropy(logits, targets[part], reduction="sum")
        correct += (logits.argmax(dim=1) == targets[part]).sum()
    count = max(1, inputs.shape[0])
    return float(loss_sum) / count, float(correct) / count


def _accuracy(hits: torch.Tensor, mask: torch.Tensor) -> float | None:
    count = int(mask.sum())
    return float(hits[mask].sum()) / count if count else None


def training_set_accuracies(model: nn.Module, data: ClassificationData, batch_size: int) -> dict[str, float | None]:
    """``train_acc`` (against the labels trained on), and with label noise ``train_acc_clean``,
    ``train_acc_noisy_given`` (memorization) and ``train_acc_noisy_true``."""
    predictions = torch.empty_like(data.train_y)
    for part, logits in predict(model, data.train_x, batch_size, data.model_input):
        predictions[part] = logits.argmax(dim=1)
    given = predictions == data.train_y
    result: dict[str, float | None] = {"train_acc": float(given.float().mean())}
    noisy = data.noisy_mask
    if noisy is not None:
        result["train_acc_clean"] = _accuracy(given, ~noisy)
        result["train_acc_noisy_given"] = _accuracy(given, noisy)
        result["train_acc_noisy_true"] = _accuracy(predictions == data.true_train_y, noisy)
    return result
