"""Published numbers: a suite's ``reference`` block -> the paper value each run reproduces.

The table (``suites/reference/paper_results.csv``, copied from shared/reference) has one row per
published cell: paper, table, dataset, model, label_noise, method, metric, value, reported, pct_sam,
note. ``reported`` says whether the paper reports the ``final`` test accuracy or that of the ``best``
iterate (nuSAM's from-scratch Tables 2-3: "test accuracies of the best iterate", 002 Sec. 5.1, seed_nusam.md 6.1); a
paper that does not say is read as ``final``, and so is a table without the column.
A suite cites the tables it reproduces and maps its method and model names to the paper's::

    reference:
      - paper: 001_543051aac35e9f16        # AE-SAM
        table: Table 3
        methods: {erm: erm, sam: sam, ae-sam: ae_sam}
        models: {resnet18-cifar: resnet18, "vit-cifar[size=S]": vit_s4}
        datasets: {cifar10: cifar10}        # optional: by default the same name

A model key is a model name, optionally with ``[param=value, ...]`` to tell apart entries of the
same model with different parameters.

A block may say where the paper's setting differs from the suite's (``differs: "batch 256, m = 32 per
device"``): the text is carried into each of its cells, and the report shows it beside the numbers.

A run matches a row when paper, table, mapped method, mapped model, dataset and noise rate agree and
the metric is ``test_acc`` (or ``test_error``, converted to accuracy); a run gets the matching cell of
every block (``lookup`` per block), so a run that two papers report is compared with both. Values are
stored as fractions, like the harness's accuracies.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.contract.run_spec import ReferenceCell

REFERENCE_KEYS = ("paper", "table", "methods", "models", "datasets", "differs")
DEFAULT_TABLE = Path("reference") / "paper_results.csv"
#: What a row of a table without the ``reported`` column (or with it empty) is read as.
DEFAULT_REPORTED = "final"


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
) -> ReferenceCell | None:
    """The published cell for one run under one reference block, if the paper has it."""
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
                return ReferenceCell(
                    paper=row["paper"],
                    table=row["table"],
                    method=paper_method,
                    metric=row["metric"],
                    test_acc=accuracy,
                    reported=reported(row),
                    differs=block.get("differs", ""),
                )
    return None


def reported(row: Mapping[str, str]) -> str:
    """What a table row reports: its ``reported`` value, ``DEFAULT_REPORTED`` when it has none."""
    return row.get("reported") or DEFAULT_REPORTED
