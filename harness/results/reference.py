"""Published numbers: a suite's ``reference`` block -> the paper value each run reproduces.

The table (``suites/reference/paper_results.csv``, copied from shared/reference) has one row per
published cell: paper, table, dataset, model, label_noise, method, metric, value, pct_sam, note.
A suite cites the tables it reproduces and maps its method and model names to the paper's::

    reference:
      - paper: 001_543051aac35e9f16        # AE-SAM
        table: Table 3
        methods: {erm: erm, sam: sam, ae-sam: ae_sam}
        models: {resnet18-cifar: resnet18, "vit-cifar[size=S]": vit_s4}
        datasets: {cifar10: cifar10}        # optional: by default the same name

A model key is a model name, optionally with ``[param=value, ...]`` to tell apart entries of the
same model with different parameters.

A run matches a row when paper, table, mapped method, mapped model, dataset and noise rate agree and
the metric is ``test_acc`` (or ``test_error``, converted to accuracy). Values are stored as fractions,
like the harness's accuracies.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REFERENCE_KEYS = ("paper", "table", "methods", "models", "datasets")
DEFAULT_TABLE = Path("reference") / "paper_results.csv"


@dataclass(frozen=True)
class ReferenceValue:
    """A published test accuracy (fraction) and where it comes from."""

    test_acc: float
    source: str
    pct_sam: float | None = None


def read_table(path: Path) -> list[dict[str, str]]:
    """The rows of a reference CSV."""
    with path.open(newline="") as stream:
        return list(csv.DictReader(stream))


def _accuracy(row: dict[str, str]) -> float | None:
    value = float(row["value"])
    if row["metric"] == "test_acc":
        return value / 100.0
    if row["metric"] == "test_error":
        return 1.0 - value / 100.0
    return None


def model_key_name(key: str) -> str:
    """The model name of a reference model key (``vit-cifar[size=S]`` -> ``vit-cifar``)."""
    return key.split("[", 1)[0]


def model_key_matches(key: str, model: str, params: Mapping[str, Any]) -> bool:
    """Whether a reference model key names this model with these parameters."""
    name, _, selector = key.partition("[")
    if name != model:
        return False
    for condition in filter(None, (part.strip() for part in selector.rstrip("]").split(","))):
        param, _, value = condition.partition("=")
        if str(params.get(param.strip())) != value.strip():
            return False
    return True


def lookup(
    rows: list[dict[str, str]],
    block: dict[str, Any],
    *,
    method: str,
    model: str,
    model_params: Mapping[str, Any],
    dataset: str,
    noise_rate: float,
) -> ReferenceValue | None:
    """The published test accuracy for one run under one reference block, if the paper has it."""
    paper_method = block["methods"].get(method)
    paper_model = next((v for k, v in block["models"].items() if model_key_matches(k, model, model_params)), None)
    paper_dataset = block.get("datasets", {}).get(dataset, dataset)
    if paper_method is None or paper_model is None:
        return None
    for row in rows:
        if (
            row["paper"] == block["paper"]
            and row["table"] == block["table"]
            and row["method"] == paper_method
            and row["model"] == paper_model
            and row["dataset"] == paper_dataset
            and math.isclose(float(row["label_noise"] or 0), noise_rate, abs_tol=1e-9)
        ):
            accuracy = _accuracy(row)
            if accuracy is not None:
                pct_sam = float(row["pct_sam"]) if row.get("pct_sam") not in (None, "") else None
                return ReferenceValue(accuracy, f"{row['paper']} {row['table']} ({paper_method})", pct_sam)
    return None
