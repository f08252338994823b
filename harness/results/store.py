"""Parquet results: the Arrow schemas and atomic writes of run and history files.

Layout (shared/DESIGN.md section 6)::

    RESULTS_DIR/<suite>/<run_id>.parquet           one row per run
    RESULTS_DIR/<suite>/history/<run_id>.parquet   one row per evaluation point (epoch)
    RESULTS_DIR/<suite>/steps/<run_id>.parquet     one row per traced step (runs with ``trace_every``)
    RESULTS_DIR/<suite>/checkpoints/<run_id>.pt    a run's checkpoint while it trains (``harness.run.checkpoint``)

Each file is written to a temporary name in the same folder, fsynced, then renamed over the final
name, so a crash loses at most the run in flight and parallel workers never contend. The run row
is written after the history and the step trace, so its presence marks a finished run. Columns beyond the schema
(metrics added by plugins) are kept, with their types inferred.

Reading a folder back, and setting damaged files aside, is ``harness.results.read``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from harness.paths import inside
from harness.results.columns import HISTORY_COLUMNS, RUN_COLUMNS, STEP_COLUMNS, arrow_schema

SCHEMA_VERSION = 2

#: The run, history and step-trace files' columns, from their one declaration (``harness.results.columns``).
RUN_SCHEMA = arrow_schema(RUN_COLUMNS)
HISTORY_SCHEMA = arrow_schema(HISTORY_COLUMNS)
STEP_SCHEMA = arrow_schema(STEP_COLUMNS)

#: Statuses whose rerun would give the same answer (a pruned trial: its pruner's decision stands, it is not
#: retaken); ``harness run`` skips them unless ``--rerun``.
FINISHED_STATUSES = ("ok", "diverged", "pruned")


def suite_dir(results_dir: str | Path, suite: str) -> Path:
    """The folder holding one suite's results (``inside``: a suite name can never leave ``results_dir``)."""
    return inside(results_dir, suite)


def _table(rows: Sequence[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    extra = [key for key in dict.fromkeys(k for row in rows for k in row) if key not in schema.names]
    if extra:
        inferred = pa.Table.from_pylist([{k: row.get(k) for k in extra} for row in rows]).schema
        schema = pa.schema([*schema, *inferred])
    return pa.Table.from_pylist([{name: row.get(name) for name in schema.names} for row in rows], schema=schema)


def write_atomic(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` through a temporary file, fsync and rename."""
    with atomic_file(path) as stream:
        pq.write_table(table, stream)


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A binary stream whose bytes become ``path`` at once when the block ends (temporary file, fsync, rename).

    A reader sees the old file or the whole new one, never part of it; a block that raises leaves ``path``
    as it was. The file's mode honours the umask, as ``open`` would.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(handle, 0o666 & ~_umask())  # mkstemp makes 0600: a shared, group-writable folder needs the umask's
        with os.fdopen(handle, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@functools.cache
def _umask() -> int:
    """The process's umask, read once: from /proc on Linux (reading it elsewhere means setting it, which is
    not thread-safe, so it is done once, before any write)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_run(
    results_dir: str | Path,
    suite: str,
    row: Mapping[str, Any],
    history: Sequence[Mapping[str, Any]],
    steps: Sequence[Mapping[str, Any]] = (),
) -> Path:
    """Write a run's history and its step trace (when it has one), then its result row (the row marks the run
    as finished)."""
    folder = suite_dir(results_dir, suite)
    run_id = row["run_id"]
    write_atomic(
        _table([{**h, "run_id": run_id} for h in history], HISTORY_SCHEMA),
        inside(folder, "history", f"{run_id}.parquet"),
    )
    if steps:
        write_atomic(
            _table([{**s, "run_id": run_id} for s in steps], STEP_SCHEMA), inside(folder, "steps", f"{run_id}.parquet")
        )
    path = inside(folder, f"{run_id}.parquet")
    write_atomic(_table([{**row, "schema_version": SCHEMA_VERSION}], RUN_SCHEMA), path)
    return path
