"""What was run: each method's resolved hyperparameters, and the settings every run of a suite shared.

A paper's reader needs rho, alpha, k, the base optimizer, its learning rate, the epochs and the batch size
beside the numbers. They are read from each run's resolved configuration (the ``config`` column, what the
run id hashes), so they are what ran, defaults included, not what a suite file asked for. Two tables:

- **Hyperparameters**: one row per suite and method; the perturbation radius (every ``rho*`` entry of the
  optimizer and scheduler, e.g. GSAM's ``rho_max`` and ``rho_min``), ``alpha``, ``k``, the base optimizer and
  lr, epochs and batch size, then the optimizer's, scheduler's, base optimizer's and lr schedule's other
  entries;
- **Run settings**: per suite, every other entry (dataset, model, evaluation, device, ...) with its values.

A setting whose value differs between a method's runs (another model, another dataset: the seed never differs
otherwise, ``harness.report.gather.check_averageable``) shows each value, ``" | "``-joined.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from harness.report.gather import configuration
from harness.report.tables import Table

#: Config entries that label a run or its condition (columns of the summary already), never a setting.
IDENTITY = ("suite", "method", "preset", "seed", "noise_rate", "dataset.name", "dataset.noise_rate", "model.name")
#: The blocks a method's hyperparameters live in; their entries not given a column of their own are "other".
METHOD_BLOCKS = ("optimizer.", "scheduler.", "base_optimizer.", "lr_schedule.")
#: (column, pattern of the config keys it shows): a key matching none of them is "other".
COLUMNS = (
    ("optimizer", r"optimizer\.name"),
    ("scheduler", r"scheduler\.name"),
    ("rho", r"(optimizer|scheduler)\.(\w+\.)?rho\w*"),
    ("alpha", r"optimizer\.alpha"),
    ("k", r"scheduler\.(\w+\.)?k"),
    ("base optimizer", r"base_optimizer\.name"),
    ("lr", r"base_optimizer\.lr"),
    ("epochs", r"epochs"),
    ("batch size", r"batch_size"),
)
JOIN = " | "


def hyperparameter_table(runs: pd.DataFrame) -> Table | None:
    """One row per suite and method of ``runs`` (the report's averaged runs); None when no run records its
    configuration."""
    rows = []
    for (suite, method), group in runs.groupby(["suite", "method"], sort=True):
        configs = _configs(group["config"])
        if not configs:
            continue
        keys = _keys(configs)
        cells = [_column(configs, keys, pattern) for _, pattern in COLUMNS]
        other = [k for k in keys if k.startswith(METHOD_BLOCKS) and not _shown(k)]
        rows.append([suite, method, *cells, ", ".join(f"{k}={_values(configs, k)}" for k in other)])
    if not rows:
        return None
    return Table(["suite", "method", *(name for name, _ in COLUMNS), "other hyperparameters"], rows)


def run_settings_table(runs: pd.DataFrame) -> Table | None:
    """Per suite, every setting of ``runs`` that is neither a method's hyperparameter nor a run's label, with its
    values; None when no run records its configuration."""
    rows = []
    for suite, group in runs.groupby("suite", sort=True):
        configs = _configs(group["config"])
        rows += [
            [suite, key, _values(configs, key)]
            for key in _keys(configs)
            if not key.startswith(METHOD_BLOCKS) and not _shown(key)
        ]
    return Table(["suite", "setting", "value"], rows) if rows else None


def _configs(texts: Iterable[Any]) -> list[dict[str, Any]]:
    """The flattened configurations (no provenance, no labels) of the distinct ``config`` texts."""
    drop = {key for key in IDENTITY if "." not in key}
    parsed = [configuration(text, drop=drop) for text in dict.fromkeys(texts) if isinstance(text, str) and text]
    return [{k: v for k, v in config.items() if k not in IDENTITY} for config in parsed]


def _keys(configs: list[dict[str, Any]]) -> list[str]:
    return sorted({key for config in configs for key in config})


def _shown(key: str) -> bool:
    return any(re.fullmatch(pattern, key) for _, pattern in COLUMNS)


def _column(configs: list[dict[str, Any]], keys: list[str], pattern: str) -> str:
    """The value of the one key matching ``pattern``, or ``name=value`` of each of several; "-" for none."""
    matched = [key for key in keys if re.fullmatch(pattern, key)]
    if len(matched) == 1:
        return _values(configs, matched[0])
    return ", ".join(f"{_short(key)}={_values(configs, key)}" for key in matched) or "-"


def _short(key: str) -> str:
    """``scheduler.inner_params.rho`` -> ``inner_params.rho`` in a column of its own, which names the quantity."""
    return key.split(".", 1)[1] if key.startswith(METHOD_BLOCKS) else key


def _values(configs: list[Mapping[str, Any]], key: str) -> str:
    """Each distinct value of ``key`` over ``configs``, in first-seen order, ``JOIN``-ed (absent: "-")."""
    return JOIN.join(dict.fromkeys(_text(config.get(key, "-")) for config in configs))


def _text(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
