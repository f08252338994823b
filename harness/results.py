"""Parquet results: the Arrow schema, atomic writes, reading a results folder, resume.

Layout (shared/DESIGN.md section 6)::

    RESULTS_DIR/<suite>/<run_id>.parquet           one row per run
    RESULTS_DIR/<suite>/history/<run_id>.parquet   one row per evaluation point (epoch)

Each file is written to a temporary name in the same folder, fsynced, then renamed over the final
name, so a crash loses at most the run in flight and parallel workers never contend. The run row
is written after the history, so its presence marks a finished run. Columns beyond the schema
(metrics added by plugins) are kept, with their types inferred.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

SCHEMA_VERSION = 1
TIMESTAMP = pa.timestamp("us", tz="UTC")

RUN_SCHEMA = pa.schema(  # names must be unique: test_results checks it
    [
        ("run_id", pa.string()),
        ("suite", pa.string()),
        ("method", pa.string()),
        ("preset", pa.string()),
        ("optimizer", pa.string()),
        ("optimizer_params", pa.string()),
        ("scheduler", pa.string()),
        ("scheduler_params", pa.string()),
        ("base_optimizer", pa.string()),
        ("lr_schedule", pa.string()),
        ("model", pa.string()),
        ("model_params", pa.string()),
        ("dataset", pa.string()),
        ("dataset_params", pa.string()),
        ("noise_rate", pa.float64()),
        ("seed", pa.int64()),
        ("epochs", pa.int64()),
        ("epochs_completed", pa.int64()),
        ("batch_size", pa.int64()),
        ("steps", pa.int64()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("test_acc", pa.float64()),
        ("best_test_acc", pa.float64()),
        ("test_loss", pa.float64()),
        ("train_loss", pa.float64()),
        ("train_acc", pa.float64()),
        ("train_acc_clean", pa.float64()),
        ("train_acc_noisy_given", pa.float64()),
        ("train_acc_noisy_true", pa.float64()),
        ("val_acc", pa.float64()),
        ("best_val_acc", pa.float64()),
        ("reference_test_acc", pa.float64()),
        ("reference_source", pa.string()),
        ("train_time_s", pa.float64()),
        ("eval_time_s", pa.float64()),
        ("step_time_median_s", pa.float64()),
        ("step_time_p10_s", pa.float64()),
        ("step_time_p90_s", pa.float64()),
        ("metric_time_s", pa.float64()),
        ("target_acc", pa.float64()),
        ("time_to_target_s", pa.float64()),
        ("throughput_samples_per_s", pa.float64()),
        ("sam_fraction", pa.float64()),
        ("perturbed_steps", pa.int64()),
        ("grad_evals", pa.int64()),
        ("optimizer_state_bytes", pa.int64()),
        ("peak_rss_bytes", pa.int64()),
        ("peak_device_bytes", pa.int64()),
        ("device", pa.string()),
        ("device_name", pa.string()),
        ("host", pa.string()),
        ("torch_version", pa.string()),
        ("harness_version", pa.string()),
        ("plugin_versions", pa.string()),
        ("config", pa.string()),
        ("schema_version", pa.int32()),
        ("started_at", TIMESTAMP),
        ("finished_at", TIMESTAMP),
    ]
)

HISTORY_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("epoch", pa.int64()),
        ("step", pa.int64()),
        ("lr", pa.float64()),
        ("rho", pa.float64()),
        ("train_loss", pa.float64()),
        ("train_acc", pa.float64()),
        ("test_loss", pa.float64()),
        ("test_acc", pa.float64()),
        ("val_acc", pa.float64()),
        ("train_acc_clean", pa.float64()),
        ("train_acc_noisy_given", pa.float64()),
        ("train_acc_noisy_true", pa.float64()),
        ("train_time_s", pa.float64()),
        ("sam_fraction", pa.float64()),
        ("grad_evals", pa.int64()),
    ]
)

#: Statuses whose rerun would give the same answer; ``harness run`` skips them unless ``--rerun``.
FINISHED_STATUSES = ("ok", "diverged")


def suite_dir(results_dir: str | Path, suite: str) -> Path:
    """The folder holding one suite's results."""
    return Path(results_dir) / suite


def _table(rows: Sequence[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    extra = [key for key in dict.fromkeys(k for row in rows for k in row) if key not in schema.names]
    if extra:
        inferred = pa.Table.from_pylist([{k: row.get(k) for k in extra} for row in rows]).schema
        schema = pa.schema([*schema, *inferred])
    return pa.Table.from_pylist([{name: row.get(name) for name in schema.names} for row in rows], schema=schema)


def write_atomic(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` through a temporary file, fsync and rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            pq.write_table(table, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_run(
    results_dir: str | Path, suite: str, row: Mapping[str, Any], history: Sequence[Mapping[str, Any]]
) -> Path:
    """Write a run's history, then its result row (the row marks the run as finished)."""
    folder = suite_dir(results_dir, suite)
    run_id = row["run_id"]
    write_atomic(
        _table([{**h, "run_id": run_id} for h in history], HISTORY_SCHEMA), folder / "history" / f"{run_id}.parquet"
    )
    path = folder / f"{run_id}.parquet"
    write_atomic(_table([{**row, "schema_version": SCHEMA_VERSION}], RUN_SCHEMA), path)
    return path


def _files(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.glob("*.parquet")) if folder.is_dir() else []


def _read(files: Iterable[str], columns: Sequence[str] | None = None) -> pd.DataFrame:
    files = list(files)
    if not files:
        return pd.DataFrame(columns=list(columns) if columns else RUN_SCHEMA.names)
    schema = pa.unify_schemas([pq.read_schema(f) for f in files], promote_options="permissive")
    return ds.dataset(files, schema=schema, format="parquet").to_table(columns=columns).to_pandas()


def read_runs(folder: str | Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """All run rows of one suite folder (``RESULTS_DIR/<suite>``) as a DataFrame."""
    return _read(_files(Path(folder)), columns)


def read_history(folder: str | Path) -> pd.DataFrame:
    """All history rows of one suite folder."""
    return _read(_files(Path(folder) / "history"))


def finished_run_ids(results_dir: str | Path, suite: str) -> set[str]:
    """Ids of runs already recorded with a status in ``FINISHED_STATUSES`` (skipped on resume)."""
    runs = read_runs(suite_dir(results_dir, suite), columns=["run_id", "status"])
    return set(runs.loc[runs["status"].isin(FINISHED_STATUSES), "run_id"])
