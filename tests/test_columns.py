"""The result columns' one declaration (``harness.results.columns``) is what the runner, the crash writer, the
schema and ``results/README.md`` use."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pytest

from harness.execution.worker import record_crash
from harness.plugins import Registry
from harness.results import columns
from harness.results.read import read_runs
from harness.results.store import HISTORY_SCHEMA, RUN_SCHEMA
from harness.run.row import RunState, result_row
from harness.suite import load_suite

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "suites" / "quickstart.yaml"
FILLED_BY = {"spec", "outcome", "clock", "training", "environment", "writer"}


@pytest.fixture(scope="module")
def run_and_registry():
    registry = Registry.from_plugins()
    return load_suite(QUICKSTART, registry, ["seeds=[0]"]).runs[0], registry


def _written(columns_: tuple[columns.Column, ...]) -> list[str]:
    return [column.name for column in columns_ if column.filled_by != "writer"]


def _declared(row) -> list[str]:
    """The row's columns but its ``p_*`` hyperparameters (tests/test_hyperparameter_columns.py checks those)."""
    return sorted(name for name in row if not name.startswith("p_"))


def test_the_schemas_are_the_declarations():
    assert RUN_SCHEMA == pa.schema([(c.name, c.type) for c in columns.RUN_COLUMNS])
    assert HISTORY_SCHEMA == pa.schema([(c.name, c.type) for c in columns.HISTORY_COLUMNS])
    for column in (*columns.RUN_COLUMNS, *columns.HISTORY_COLUMNS):
        assert column.filled_by in FILLED_BY, column
        assert column.meaning, column
        assert (column.from_run is not None) == (column.filled_by == "spec"), column


def test_a_column_declared_twice_is_refused():
    twice = (*columns.HISTORY_COLUMNS, columns.HISTORY_COLUMNS[1])
    with pytest.raises(ValueError, match="declared twice: epoch"):
        columns.arrow_schema(twice)


def test_the_runner_fills_exactly_the_declared_columns_and_the_metrics(run_and_registry):
    """A column the runner fills but the declaration lacks would be read as a plugin metric."""
    run, registry = run_and_registry
    state = RunState(metric_values={"hessian_top_eig": 1.5}, steps=7, optimizer_state_bytes=123, grad_evals=13.6)
    row = result_row(run, state, "ok", "", datetime.now(timezone.utc), registry)
    assert _declared(row) == sorted([*_written(columns.RUN_COLUMNS), "hessian_top_eig"])
    assert (row["steps"], row["optimizer_state_bytes"], row["grad_evals"]) == (7, 123, 14)  # same-named fields
    assert {name: row[name] for name in columns.identity(run)} == columns.identity(run)


def test_a_crash_row_holds_the_identity_of_a_trained_row_and_nulls(run_and_registry, tmp_path):
    run, registry = run_and_registry
    trained = result_row(run, RunState(), "ok", "", datetime.now(timezone.utc), registry)
    crash = record_crash(run, tmp_path, "worker died")
    assert _declared(crash) == sorted(_written(columns.RUN_COLUMNS))
    assert {k: v for k, v in crash.items() if k.startswith("p_")} == {
        k: v for k, v in trained.items() if k.startswith("p_")
    }
    spec = [c.name for c in columns.RUN_COLUMNS if c.filled_by == "spec"]
    assert {name: crash[name] for name in spec} == {name: trained[name] for name in spec}
    assert (crash["status"], crash["error"]) == ("failed", "worker died")
    unfilled = [c.name for c in columns.RUN_COLUMNS if c.filled_by not in columns.CRASH_FILLED + ("writer",)]
    assert unfilled and all(crash[name] is None for name in unfilled)
    written = read_runs(tmp_path / run.suite).iloc[0]
    assert written["optimizer_params"] == trained["optimizer_params"] and written["status"] == "failed"


def test_results_readme_documents_every_column_with_its_type():
    """``python -m harness.results.columns`` regenerates the tables; the file must be up to date."""
    readme = (ROOT / "results" / "README.md").read_text()
    assert columns.render_readme(readme) == readme, "results/README.md is stale: run python -m harness.results.columns"
    for column in (*columns.RUN_COLUMNS, *columns.HISTORY_COLUMNS):
        assert f"| {column.name} | {column.type} |" in readme, column.name


def test_render_readme_replaces_only_the_tables():
    stale = (
        "# results/\n\nintro\n\n## Run table\n\n| column |\n| --- |\n| old |\n\n## History table\n\n| x |\n\n"
        "## Step trace table\n\n| y |\n\nafter\n"
    )
    fresh = columns.render_readme(stale)
    assert fresh.startswith("# results/\n\nintro\n\n## Run table\n\n| column | type | meaning |")
    assert "| old |" not in fresh and "| x |" not in fresh and "| y |" not in fresh
    assert columns.markdown_table(columns.HISTORY_COLUMNS) + "\n## Step trace table" in fresh
    assert fresh.endswith(columns.markdown_table(columns.STEP_COLUMNS) + "\nafter\n")
    assert columns.render_readme(fresh) == fresh
