"""Tidy hyperparameter columns: every resolved configuration value as a ``p_*`` column of the run row.

The ``config`` column holds a run's whole resolved configuration as JSON (what the run id hashes), which
a pandas user cannot filter on without parsing it. Following benchopt's convention (``p_solver_*``,
``p_dataset_*``), each entry of ``RunSpec.config()`` but the labels (suite, method, preset) is also a
column of its own: a setting as ``p_<key>`` (``p_epochs``, ``p_batch_size``), a component's or a
block's entry as ``p_<key>_<entry>`` (``p_optimizer_rho``, ``p_scheduler_rho``, ``p_dataset_noise_rate``,
``p_base_optimizer_lr``, ``p_lr_schedule_warmup_epochs``), so ``runs[runs.p_scheduler_rho == 0.05]``
works.

Types are chosen so that folders mixing runs read without a type clash: every number is a float64
(YAML writes ``1`` and ``0.05`` for one key), a bool a bool, a string a string, None a null, and a list
or mapping its sorted JSON. Run files of schema version 1 (written before these columns existed) get
them from their ``config`` when read (``with_hyperparameters``), so every reader sees the same columns.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pandas as pd

PREFIX = "p_"
#: Entries of a configuration that label a run rather than configure it (already columns of their own).
LABELS = ("suite", "method", "preset")
#: The first schema version whose run files carry the ``p_*`` columns.
FIRST_VERSION = 2


def _cell(value: Any) -> Any:
    """``value`` in the column type its kind always gets (see the module docstring)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    return json.dumps(value, sort_keys=True)


def hyperparameters(config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``p_*`` columns of a run whose ``RunSpec.config()`` is ``config``, one level of nesting flattened."""
    columns: dict[str, Any] = {}
    for key, value in config.items():
        if key in LABELS:
            continue
        if isinstance(value, Mapping):
            columns.update({f"{PREFIX}{key}_{param}": _cell(inner) for param, inner in value.items()})
        else:
            columns[f"{PREFIX}{key}"] = _cell(value)
    return columns


def with_hyperparameters(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` (run rows), where those written before schema version 2 get their ``p_*`` columns from ``config``."""
    if rows.empty or "config" not in rows:
        return rows
    version = rows["schema_version"] if "schema_version" in rows else pd.Series(pd.NA, index=rows.index)
    old = (version.isna() | (version < FIRST_VERSION)) & rows["config"].notna() & (rows["config"] != "")
    if not old.any():
        return rows
    derived = pd.DataFrame.from_records(
        [hyperparameters(json.loads(config)) for config in rows.loc[old, "config"]], index=rows.index[old]
    )
    rows = rows.copy()
    for column in derived.columns:
        values = derived[column].reindex(rows.index)
        rows[column] = values if column not in rows else rows[column].mask(old, values)
    return rows
