"""Parquet results: schema, atomic writes, extra columns, resume bookkeeping."""

from __future__ import annotations

import collections

import pyarrow.parquet as pq
import pytest

from harness.results import store as results
from harness.results.read import finished_run_ids, read_runs
from harness.results.store import HISTORY_SCHEMA, RUN_SCHEMA, write_run


def test_schema_names_are_unique():
    for schema in (RUN_SCHEMA, HISTORY_SCHEMA):
        assert [n for n, c in collections.Counter(schema.names).items() if c > 1] == []


def row(run_id: str, status: str = "ok", **extra) -> dict:
    return {"run_id": run_id, "suite": "s", "method": "sam", "status": status, "test_acc": 0.5, **extra}


def test_write_run_writes_history_then_row_and_reads_back(tmp_path):
    write_run(tmp_path, "s", row("a"), [{"epoch": 1, "test_acc": 0.4}, {"epoch": 2, "test_acc": 0.5}])
    runs = read_runs(tmp_path / "s")
    assert runs["run_id"].tolist() == ["a"] and runs["schema_version"].tolist() == [results.SCHEMA_VERSION]
    history = pq.read_table(tmp_path / "s" / "history" / "a.parquet").to_pandas()
    assert history["epoch"].tolist() == [1, 2] and set(history["run_id"]) == {"a"}
    assert list(pq.read_schema(tmp_path / "s" / "a.parquet").names[: len(RUN_SCHEMA)]) == RUN_SCHEMA.names


def test_extra_columns_are_kept_and_unified_across_files(tmp_path):
    write_run(tmp_path, "s", row("a", hessian_max_eig=12.5), [])
    write_run(tmp_path, "s", row("b", grad_variance=0.25), [])
    runs = read_runs(tmp_path / "s").set_index("run_id")
    assert runs.loc["a", "hessian_max_eig"] == 12.5 and runs.loc["b", "grad_variance"] == 0.25
    assert runs["hessian_max_eig"].isna().tolist() == [False, True]


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    write_run(tmp_path, "s", row("a", status="failed"), [])

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(results.pq, "write_table", crash)
    with pytest.raises(OSError, match="disk full"):
        write_run(tmp_path, "s", row("a"), [])
    assert read_runs(tmp_path / "s")["status"].tolist() == ["failed"]
    assert not list((tmp_path / "s").rglob("*.tmp"))


def test_finished_runs_are_ok_or_diverged(tmp_path):
    for run_id, status in [("a", "ok"), ("b", "diverged"), ("c", "failed")]:
        write_run(tmp_path, "s", row(run_id, status=status), [])
    assert finished_run_ids(tmp_path, "s") == {"a", "b"}
    assert finished_run_ids(tmp_path, "missing") == set()
