"""The tidy ``p_*`` hyperparameter columns (``harness.results.hyperparameters``): written, typed, filtered on,
filled in for run files written before them (schema version 1), and never read as metrics."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness.cli import main
from harness.execution.worker import record_crash
from harness.plugins import Registry
from harness.report.compare import compare
from harness.report.summary import metric_columns
from harness.results.columns import RUN_COLUMNS
from harness.results.hyperparameters import hyperparameters
from harness.results.read import read_runs
from harness.results.store import SCHEMA_VERSION
from harness.suite import load_suite

from .conftest import write_suite

ROOT = Path(__file__).resolve().parents[1]
TINY = """
name: tiny
defaults: {epochs: 1, batch_size: 512}
methods:
  - erm
  - {name: sam-a, preset: sam, scheduler: {rho: 0.05}}
  - {name: sam-b, preset: sam, scheduler: {rho: 1}}
models: [mlp]
datasets: [digits]
executor: {name: local, workers: 1}
"""


def test_flattening_gives_each_kind_of_value_one_column_type():
    config = {
        "suite": "s",
        "method": "m",
        "preset": "",
        "epochs": 3,
        "target_acc": None,
        "optimizer": {"name": "sam", "rho": 1, "adaptive": False, "exclude": ["embed"], "nested": {"b": 1, "a": 2}},
        "lr_schedule": {"name": "cosine", "warmup_epochs": 0.5},
    }
    assert hyperparameters(config) == {
        "p_epochs": 3.0,
        "p_target_acc": None,
        "p_optimizer_name": "sam",
        "p_optimizer_rho": 1.0,
        "p_optimizer_adaptive": False,
        "p_optimizer_exclude": '["embed"]',
        "p_optimizer_nested": '{"a": 2, "b": 1}',
        "p_lr_schedule_name": "cosine",
        "p_lr_schedule_warmup_epochs": 0.5,
    }
    assert type(hyperparameters(config)["p_epochs"]) is float  # an int and a float of one key unify


@pytest.mark.parametrize("suite", sorted((ROOT / "suites").glob("*.yaml")), ids=lambda path: path.name)
def test_every_shipped_run_has_identifier_columns_that_clash_with_no_declared_one(suite):
    declared = {column.name for column in RUN_COLUMNS}
    for run in load_suite(suite, Registry.from_plugins(), smoke=True).runs:
        names = set(hyperparameters(run.config()))
        assert names and all(name.isidentifier() and name.startswith("p_") for name in names), names
        assert not names & declared


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A results folder of three tiny runs (erm, SAM at rho 0.05 and at rho 1)."""
    root = tmp_path_factory.mktemp("p")
    suite = write_suite(root / "tiny.yaml", TINY)
    assert main(["run", str(suite), "--results-dir", str(root / "out")]) == 0
    return root


def test_a_pandas_user_filters_on_rho_without_parsing_the_config(trained):
    runs = read_runs(trained / "out" / "tiny")
    assert (runs["schema_version"] == SCHEMA_VERSION).all() and SCHEMA_VERSION == 2
    assert runs["p_scheduler_rho"].dtype == "float64"
    assert set(runs.loc[runs["p_scheduler_rho"] == 1.0, "method"]) == {"sam-b"}
    assert set(runs.loc[runs["p_scheduler_rho"] == 0.05, "method"]) == {"sam-a"}
    assert (runs["p_epochs"] == 1.0).all() and (runs["p_dataset_name"] == "digits").all()


def test_p_columns_are_not_metrics_in_the_report(trained):
    runs = read_runs(trained / "out" / "tiny")
    assert not [column for column in metric_columns(runs) if column.startswith("p_")]
    assert "p_scheduler_rho" in runs  # present, numeric, and still not a metric


def test_a_crash_row_carries_the_p_columns_of_its_run(tmp_path):
    suite = write_suite(tmp_path / "tiny.yaml", TINY)
    run = next(run for run in load_suite(suite, Registry.from_plugins()).runs if run.method == "sam-b")
    record_crash(run, tmp_path / "out", "worker died")
    (row,) = read_runs(tmp_path / "out" / "tiny").to_dict("records")
    assert (row["status"], row["p_scheduler_rho"], row["p_epochs"], row["p_model_name"]) == ("failed", 1.0, 1.0, "mlp")


def test_compare_lists_no_p_column_among_the_metrics_a_gate_may_name(trained, capsys):
    folder = trained / "out" / "tiny"
    assert main(["compare", str(folder), str(folder), "--fail-on", "no_such_metric:1"]) == 2
    listed = capsys.readouterr().err.split("numeric columns: ", 1)[1].strip().split(", ")
    assert "test_acc" in listed and not [name for name in listed if name.startswith("p_")]


def _as_version_1(path: Path) -> None:
    """Rewrite a run file as the writer did before the ``p_*`` columns (schema version 1)."""
    table = pq.read_table(path)
    table = table.drop_columns([name for name in table.column_names if name.startswith("p_")])
    at = table.column_names.index("schema_version")
    table = table.set_column(at, "schema_version", pa.array([1] * table.num_rows, pa.int32()))
    pq.write_table(table, path)


def _copy_as_version_1(trained: Path, target: Path, *, keep: tuple[str, ...] = ()) -> Path:
    shutil.copytree(trained / "out", target)
    folder = target / "tiny"
    shutil.rmtree(folder / ".index", ignore_errors=True)
    for path in folder.glob("*.parquet"):
        if not keep or not path.name.startswith(keep):
            _as_version_1(path)
    return folder


def test_a_version_1_folder_reads_with_the_p_columns_filled_from_its_config(trained, tmp_path):
    written = read_runs(trained / "out" / "tiny").set_index("run_id").sort_index()
    folder = _copy_as_version_1(trained, tmp_path / "old")
    assert not [name for name in pq.read_schema(next(folder.glob("*.parquet"))).names if name.startswith("p_")]
    old = read_runs(folder).set_index("run_id").sort_index()
    assert (old["schema_version"] == 1).all()
    p_columns = sorted(name for name in written.columns if name.startswith("p_"))

    def missing_as_none(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.astype(object).where(frame.notna(), None)

    pd.testing.assert_frame_equal(missing_as_none(old[p_columns]), missing_as_none(written[p_columns]))


def test_a_folder_mixing_versions_reads_uniform_p_columns(trained, tmp_path):
    folder = _copy_as_version_1(trained, tmp_path / "mixed", keep=("erm",))
    runs = read_runs(folder).set_index("method")
    assert sorted(runs["schema_version"]) == [1, 1, 2]
    assert runs.loc["sam-b", "p_scheduler_rho"] == 1.0 and runs.loc["sam-a", "p_scheduler_rho"] == 0.05
    assert runs["p_epochs"].notna().all()


def test_compare_matches_version_1_runs_with_version_2_runs_by_configuration(trained, tmp_path):
    folder = _copy_as_version_1(trained, tmp_path / "old")
    comparison = compare(folder, trained / "out" / "tiny")
    accuracy = comparison.table[comparison.table["metric"] == "test_acc"]
    assert sorted(accuracy["method"]) == ["erm", "sam-a", "sam-b"] and not comparison.failures
    assert (accuracy["delta"] == 0).all()


def test_a_version_1_folder_resumes_without_retraining(trained, tmp_path):
    folder = _copy_as_version_1(trained, tmp_path / "resume")
    before = {path.name: path.stat().st_mtime_ns for path in folder.glob("*.parquet")}
    suite = trained / "tiny.yaml"
    assert main(["run", str(suite), "--results-dir", str(tmp_path / "resume")]) == 0
    assert {path.name: path.stat().st_mtime_ns for path in folder.glob("*.parquet")} == before
