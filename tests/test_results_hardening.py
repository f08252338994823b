"""Results folders that are damaged, mixed with other files, written into, or large.

One unreadable file (truncated, garbage, empty) is named and skipped by ``report`` and ``compare``
and set aside (renamed, never deleted) and trained again by ``harness run``; a ``.parquet`` that is
not a run file is ignored with a note; a report never writes where results are read; a folder is
read through its index, each file once.
"""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness.cli import main
from harness.results import read as results
from harness.results.read import INDEXES, read_folder, read_runs, set_aside_damaged
from harness.results.store import write_run

from .conftest import write_suite
from .test_compare import write_side
from .test_leases import tiny_run, tiny_suite  # noqa: F401 (fixtures)
from .test_report import ACCURACY, SUITE, write_synthetic

INDEX = INDEXES["run"]

RUNS_IN_SYNTHETIC = sum(len(seeds) for seeds in ACCURACY.values())  # tests/test_report.py's suite


def damage(path: Path, how: str) -> None:
    """Make ``path`` unreadable the way a full disk, a bad copy or a stray write would."""
    if how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "garbage":
        path.write_bytes(b"this is not parquet\n" * 40)
    else:
        path.write_bytes(b"")


def run_file(folder: Path, method: str = "sam") -> Path:
    return sorted(folder.glob(f"{method}-s*.parquet"))[0]


def read_count(markdown: str) -> int:
    """The number of runs the report's introduction says it read."""
    intro = markdown.split("Results read from ", 1)[1].split(").", 1)[0]
    return sum(int(part.split()[0]) for part in intro.split(": ", 1)[1].split(", "))


# --- report and compare skip what they cannot read ------------------------------------------------------------


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty"])
def test_report_names_a_damaged_run_file_and_reports_the_others(tmp_path, capsys, how):
    folder = write_synthetic(tmp_path / "results")
    bad = run_file(folder)
    damage(bad, how)
    damaged = bad.read_bytes()
    assert main(["report", str(folder), "-o", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if str(bad) in line]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: {bad}: cannot be read (")
    assert warnings[0].endswith("; skipped") and "Traceback" not in captured.err
    assert read_count(captured.out) == RUNS_IN_SYNTHETIC - 1
    assert bad.read_bytes() == damaged  # a report moves nothing


def test_a_truncated_history_file_is_named_and_the_report_still_draws(tmp_path, capsys):
    folder = write_synthetic(tmp_path / "results")
    bad = folder / "history" / run_file(folder).name
    damage(bad, "truncated")
    assert main(["report", str(folder), "-o", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    assert f"warning: {bad}: cannot be read (" in captured.err
    assert read_count(captured.out) == RUNS_IN_SYNTHETIC  # the run row itself is fine
    assert list((tmp_path / "out").glob("learning_curves-*.png"))


def test_compare_skips_damaged_files_without_failing(tmp_path, capsys):
    base, new = write_side(tmp_path / "base"), write_side(tmp_path / "new", provenance="b")
    write_run(tmp_path / "new", SUITE, {"run_id": "extra", "status": "ok", "config": "{}"}, [{"epoch": 1}])
    bad_run, bad_history = run_file(base, "erm"), new / "history" / "extra.parquet"
    damage(bad_run, "garbage")
    damage(bad_history, "truncated")
    assert main(["compare", str(base), str(new)]) == 0  # exit 1 would read as "a gate failed"
    captured = capsys.readouterr()
    for bad in (bad_run, bad_history):
        assert f"warning: {bad}: cannot be read (" in captured.err
    assert "9 matched by configuration" in captured.out and "compare: ok" in captured.out


def test_compare_fails_when_new_cannot_read_a_run_ok_in_base(tmp_path, capsys):
    base, new = write_side(tmp_path / "base"), write_side(tmp_path / "new", provenance="b")
    bad = run_file(new, "erm")
    damage(bad, "garbage")
    assert main(["compare", str(base), str(new)]) == 1  # missing from NEW, like a run that failed there
    out = capsys.readouterr().out
    assert "- 1 runs ok in BASE_DIR are missing from NEW_DIR, where 1 run files cannot be read" in out
    assert f"(those runs may be in them): {bad}: cannot be read (" in out
    assert "## FAILED (1)" in out


def test_a_folder_with_no_readable_run_file_is_an_error_naming_the_files(tmp_path, capsys):
    folder = write_side(tmp_path / "base")
    for path in folder.glob("*.parquet"):
        damage(path, "empty")
    assert main(["report", str(folder), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"error: {folder}: no readable run file ({run_file(folder, 'erm')}: cannot be read" in err


def test_a_parquet_that_is_not_a_run_file_is_ignored_with_one_note(tmp_path, capsys):
    folder = write_synthetic(tmp_path / "results")
    pq.write_table(pa.table({"suite": ["x"], "test_acc_mean": [0.5]}), folder / "summary.parquet")
    pq.write_table(pa.table({"run_id": ["a"], "epoch": [1]}), folder / "stray-history.parquet")
    pq.write_table(pa.table({"run_id": ["a"], "status": ["ok"], "config": [1]}), folder / "typed.parquet")
    assert main(["report", str(folder), "-o", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    notes = [line for line in captured.err.splitlines() if line.startswith("note: ")]
    assert notes == [
        f"note: {folder / 'stray-history.parquet'}: not a run file (no column status, config); ignored",
        f"note: {folder / 'summary.parquet'}: not a run file (no column run_id, status, config); ignored",
        f"note: {folder / 'typed.parquet'}: not a run file (column config is int64); ignored",
    ]
    assert "warning" not in captured.err and read_count(captured.out) == RUNS_IN_SYNTHETIC


def test_a_file_whose_column_types_clash_is_left_out_with_a_note_never_set_aside(tmp_path):
    write_run(tmp_path, "s", {"run_id": "a", "status": "ok", "config": "{}", "extra_metric": 1.5}, [])
    write_run(tmp_path, "s", {"run_id": "b", "status": "ok", "config": "{}", "extra_metric": "high"}, [])
    read = read_folder(tmp_path / "s", "run")
    assert read.rows["run_id"].tolist() == ["a"] and read.rows["extra_metric"].tolist() == [1.5]
    (skipped,) = read.skipped
    assert skipped.path == tmp_path / "s" / "b.parquet" and not skipped.damaged and skipped.level == "note"
    assert "column extra_metric is string here, double in the run files" in skipped.reason
    assert set_aside_damaged(tmp_path, "s") == [] and skipped.path.exists()


def test_the_types_of_a_removed_file_do_not_outlive_it(tmp_path):
    write_run(tmp_path, "s", {"run_id": "a", "status": "ok", "config": "{}", "flatness": "n/a"}, [])
    read_folder(tmp_path / "s", "run")  # indexed with flatness as a string
    (tmp_path / "s" / "a.parquet").unlink()
    write_run(tmp_path, "s", {"run_id": "b", "status": "ok", "config": "{}", "flatness": 0.3}, [])
    read = read_folder(tmp_path / "s", "run")
    assert read.rows["flatness"].tolist() == [0.3] and not read.skipped
    assert set_aside_damaged(tmp_path, "s") == [] and (tmp_path / "s" / "b.parquet").exists()


def test_a_foreign_table_with_the_run_columns_never_shadows_the_run_files(tmp_path):
    for run_id in ("erm-s0", "sam-s0"):
        write_run(tmp_path, "s", {"run_id": run_id, "status": "ok", "config": "{}", "test_acc": 0.9}, [])
    export = tmp_path / "s" / "0_export.parquet"  # sorts first
    pq.write_table(pa.table({"run_id": ["x"], "status": ["ok"], "config": ["{}"], "test_acc": ["90%"]}), export)
    read = read_folder(tmp_path / "s", "run")
    assert read.rows["run_id"].tolist() == ["erm-s0", "sam-s0"]
    assert [(s.path, s.problem) for s in read.skipped] == [(export, "clash")]
    assert "column test_acc is string here, double in the run files" in read.skipped[0].reason
    assert set_aside_damaged(tmp_path, "s") == [] and results.finished_run_ids(tmp_path, "s") == {"erm-s0", "sam-s0"}


def test_a_file_the_system_refuses_to_open_is_a_warning_and_never_moved(tmp_path, monkeypatch, capsys):
    folder = write_synthetic(tmp_path / "results")
    locked = run_file(folder)
    real = results.pq.ParquetFile

    def refuse(path, *args, **kwargs):  # another user's file in a shared folder (root reads any file)
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(results.pq, "ParquetFile", refuse)
    assert set_aside_damaged(folder.parent, folder.name) == [] and locked.exists()
    assert main(["report", str(folder), "-o", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert f"warning: {locked}: cannot be opened (PermissionError: [Errno 13] Permission denied" in err


def test_written_files_respect_the_umask(tmp_path):
    script = (
        "import os, sys; os.umask(0o002); from harness.results.store import write_run; "
        "write_run(sys.argv[1], 's', {'run_id': 'a', 'status': 'ok', 'config': '{}'}, [{'epoch': 1}])"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True)
    for path in (tmp_path / "s" / "a.parquet", tmp_path / "s" / "history" / "a.parquet"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o664, path  # group-writable, as the umask allows


# --- harness run sets damaged files aside and trains their runs again ---------------------------------------


def test_run_sets_damaged_files_aside_and_trains_their_runs_again(tmp_path, capsys):
    suite = write_suite(
        tmp_path / "tiny.yaml",
        """
        name: tiny
        defaults: {epochs: 1, batch_size: 512}
        methods: [erm, sam]
        models: [mlp]
        datasets: [digits]
        executor: {name: local, workers: 1}
        """,
    )
    out = tmp_path / "out"
    assert main(["run", str(suite), "--results-dir", str(out)]) == 0
    folder = out / "tiny"
    erm, sam = run_file(folder, "erm"), run_file(folder, "sam")
    first = {path.name: path.read_bytes() for path in (erm, folder / "history" / sam.name)}
    damage(erm, "truncated")
    damage(folder / "history" / sam.name, "empty")
    capsys.readouterr()
    assert main(["run", str(suite), "--results-dir", str(out)]) == 0
    captured = capsys.readouterr()
    assert "suite tiny: 2 ok; 0 already finished" in captured.out  # both trained again
    aside = sorted(p.relative_to(folder).as_posix().split(".corrupt-")[0] for p in folder.rglob("*.corrupt-*"))
    assert aside == [erm.name, f"history/{sam.name}", sam.name]  # sam's row went with its history
    assert f"warning: {erm}: cannot be read (" in captured.err and "counts as not finished" in captured.err
    assert f"warning: {sam}: its history file {folder / 'history' / sam.name} cannot be read" in captured.err
    rows = read_runs(folder)
    assert sorted(rows["status"]) == ["ok", "ok"] and not read_folder(folder / "history", "history").skipped
    assert first[erm.name] != erm.read_bytes()  # rewritten by the new training
    assert main(["run", str(suite), "--results-dir", str(out)]) == 0
    assert "0 ok" not in capsys.readouterr().out and len(list(folder.rglob("*.corrupt-*"))) == 3  # nothing more


def test_set_aside_keeps_a_file_rewritten_since_it_was_read(tmp_path, monkeypatch):
    write_run(tmp_path, "s", {"run_id": "a", "status": "ok", "config": "{}"}, [])
    path = tmp_path / "s" / "a.parquet"
    damage(path, "garbage")
    real = results.read_folder

    def read_then_rewrite(folder, kind="run"):
        found = real(folder, kind)
        if kind == "run":  # another driver's worker finishes the run between our read and our move
            write_run(tmp_path, "s", {"run_id": "a", "status": "ok", "config": "{}", "test_acc": 0.9}, [])
        return found

    monkeypatch.setattr(results, "read_folder", read_then_rewrite)
    assert set_aside_damaged(tmp_path, "s") == []
    assert read_runs(tmp_path / "s")["test_acc"].tolist() == [0.9]


def test_a_damaged_file_that_cannot_be_moved_is_an_error_naming_it(tmp_path, monkeypatch):
    write_run(tmp_path, "s", {"run_id": "a", "status": "ok", "config": "{}"}, [])
    damage(tmp_path / "s" / "a.parquet", "garbage")

    def refuse(self, target):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "rename", refuse)
    with pytest.raises(results.HarnessError, match=r"a\.parquet: cannot be read .* cannot be moved aside .*denied"):
        set_aside_damaged(tmp_path, "s")


def test_a_damaged_file_another_driver_set_aside_first_counts_as_handled(tmp_path, monkeypatch):
    write_run(tmp_path, "s", {"run_id": "a", "status": "ok", "config": "{}"}, [])
    damage(tmp_path / "s" / "a.parquet", "garbage")
    real = Path.rename

    def beaten(self, target):  # the other driver renames it between our check and our rename
        real(self, self.with_name(self.name + ".corrupt-theirs"))
        return real(self, target)

    monkeypatch.setattr(Path, "rename", beaten)
    assert set_aside_damaged(tmp_path, "s") == []


def test_a_run_file_rewritten_after_its_damaged_history_was_moved_stays(tmp_path, monkeypatch):
    write_run(tmp_path, "s", {"run_id": "a", "status": "ok", "config": "{}"}, [{"epoch": 1}])
    damage(tmp_path / "s" / "history" / "a.parquet", "empty")
    real = Path.rename

    def rename_then_retrain(self, target):
        moved = real(self, target)
        if self.parent.name == "history":  # another driver retrains the run between our two moves
            write_run(tmp_path, "s", {"run_id": "a", "status": "ok", "config": "{}", "test_acc": 0.9}, [{"epoch": 1}])
        return moved

    monkeypatch.setattr(Path, "rename", rename_then_retrain)
    assert [move.path.name for move in set_aside_damaged(tmp_path, "s")] == ["a.parquet"]  # the history only
    assert read_runs(tmp_path / "s")["test_acc"].tolist() == [0.9]  # the fresh row was not moved


# --- report output never lands where results are read ---------------------------------------------------------


def test_report_refuses_to_write_into_a_folder_it_reads(tmp_path, capsys):
    root = tmp_path / "results"
    folder = write_synthetic(root)
    other = write_side(root / "more")  # results/more/synth: a folder of suites below results
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    for out in (folder, root, folder / "history", other):
        args = ["report", str(folder if out != root else root), "-o", str(out)]
        assert main(args) == 2, out
        err = capsys.readouterr().err
        assert err.startswith(f"error: -o {out}: refusing to write the report into ") and "(the default)" in err
    assert sorted(p.relative_to(root) for p in root.rglob("*") if ".index" not in p.parts) == before


def test_the_default_report_folder_is_never_read_as_runs(tmp_path, capsys):
    root = tmp_path / "results"
    write_synthetic(root)
    assert main(["report", str(root)]) == 0
    assert (root / "report" / "summary.parquet").exists()
    first = read_count(capsys.readouterr().out)
    assert main(["report", str(root)]) == 0  # results/report is a report, not a suite
    captured = capsys.readouterr()
    assert read_count(captured.out) == first == RUNS_IN_SYNTHETIC and "report" not in captured.err
    (root / "report" / "report.md").unlink()  # as if the report had been interrupted: still not runs
    assert main(["report", str(root), "-o", str(tmp_path / "elsewhere")]) == 0
    captured = capsys.readouterr()
    assert read_count(captured.out) == RUNS_IN_SYNTHETIC
    assert f"note: {root / 'report' / 'summary.parquet'}: not a run file" in captured.err


# --- the index: each file read once ---------------------------------------------------------------------------


@pytest.fixture
def opened(monkeypatch) -> list[str]:
    """The Parquet files ``read_folder`` opens, by name (the index itself aside)."""
    names: list[str] = []
    real = results.pq.ParquetFile

    def spy(path, *args, **kwargs):
        names.append(Path(path).name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(results.pq, "ParquetFile", spy)
    return names


def row(run_id: str, **extra) -> dict:
    return {"run_id": run_id, "status": "ok", "config": "{}", "test_acc": 0.5, **extra}


def test_a_folder_is_read_through_its_index_each_file_once(tmp_path, opened):
    for run_id in ("a", "b", "c"):
        write_run(tmp_path, "s", row(run_id), [{"epoch": 1}, {"epoch": 2}] if run_id != "c" else [])
    folder = tmp_path / "s"
    first = read_folder(folder, "run").rows
    assert sorted(opened) == ["a.parquet", "b.parquet", "c.parquet"] and (folder / INDEX).exists()
    opened.clear()
    pd.testing.assert_frame_equal(read_folder(folder, "run").rows, first)
    assert opened == []
    history = read_folder(folder / "history", "history").rows
    opened.clear()
    pd.testing.assert_frame_equal(read_folder(folder / "history", "history").rows, history)
    assert opened == [] and history["run_id"].tolist() == ["a", "a", "b", "b"]  # c's empty history is indexed too
    write_run(tmp_path, "s", row("b", test_acc=0.9, hessian_max_eig=3.0), [])  # rerun: changed file, new column
    (folder / "a.parquet").unlink()
    write_run(tmp_path, "s", row("d"), [])
    opened.clear()
    rows = read_folder(folder, "run").rows
    assert sorted(opened) == ["b.parquet", "d.parquet"]
    assert rows["run_id"].tolist() == ["b", "c", "d"] and rows["test_acc"].tolist() == [0.9, 0.5, 0.5]
    (folder / INDEX).unlink()
    pd.testing.assert_frame_equal(read_folder(folder, "run").rows, rows)  # the index changes no value or type
    write_run(tmp_path, "s", row("b"), [])  # the only file with hessian_max_eig rewritten without it
    assert "hessian_max_eig" not in read_folder(folder, "run").rows


def test_a_damaged_index_is_rebuilt_and_a_read_only_folder_still_reads(tmp_path, monkeypatch):
    write_run(tmp_path, "s", row("a"), [])
    folder = tmp_path / "s"
    read_folder(folder, "run")
    damage(folder / INDEX, "garbage")
    assert read_folder(folder, "run").rows["run_id"].tolist() == ["a"]
    assert pq.read_table(folder / INDEX).num_rows == 1  # rewritten
    (folder / INDEX).unlink()

    def read_only(table, path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(results, "write_atomic", read_only)
    read = read_folder(folder, "run")
    assert read.rows["run_id"].tolist() == ["a"] and not read.skipped and not (folder / INDEX).exists()


def test_a_rewrite_with_the_same_size_and_mtime_is_read_again(tmp_path):
    write_run(tmp_path, "s", row("a", test_acc=0.5), [])
    path = tmp_path / "s" / "a.parquet"
    read_folder(tmp_path / "s", "run")
    before = path.stat()
    write_run(tmp_path, "s", row("a", test_acc=0.9), [])  # a coarse-mtime filesystem: same size, same mtime
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size
    assert read_folder(tmp_path / "s", "run").rows["test_acc"].tolist() == [0.9]


@pytest.mark.parametrize(
    "about",
    [
        {"version": results._INDEX_VERSION},
        {"version": results._INDEX_VERSION, "kind": "run", "schemas": 3, "files": {}},
        [1],
        {"version": results._INDEX_VERSION, "kind": "run", "schemas": [], "files": {"a.parquet": 0}},
    ],
)
def test_an_index_with_malformed_metadata_is_rebuilt(tmp_path, about):
    write_run(tmp_path, "s", row("a"), [])
    folder = tmp_path / "s"
    read_folder(folder, "run")
    index = pq.read_table(folder / INDEX)
    pq.write_table(index.replace_schema_metadata({"harness_index": json.dumps(about)}), folder / INDEX)
    assert read_folder(folder, "run").rows["run_id"].tolist() == ["a"]


def test_reading_history_as_runs_leaves_the_history_index_alone(tmp_path, opened):
    write_run(tmp_path, "s", row("a"), [{"epoch": 1}])
    history = tmp_path / "s" / "history"
    assert read_folder(history, "history").rows["run_id"].tolist() == ["a"]
    read = read_folder(history, "run")  # what `harness report results/s/history` used to do
    assert read.rows.empty and [s.problem for s in read.skipped] == ["foreign"]
    opened.clear()
    assert read_folder(history, "history").rows["epoch"].tolist() == [1] and opened == []


def test_report_and_compare_never_take_the_index_or_history_for_a_suite(tmp_path, capsys):
    folder = write_synthetic(tmp_path / "results")
    assert main(["report", str(folder), "-o", str(tmp_path / "out")]) == 0  # writes the indexes
    capsys.readouterr()
    assert main(["report", str(folder / "history"), "-o", str(tmp_path / "out2")]) == 2
    assert f"error: {folder / 'history'}: a suite's history folder" in capsys.readouterr().err
    for path in folder.glob("*.parquet"):
        path.unlink()
    assert main(["compare", str(folder), str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {folder}: no result files") and "Traceback" not in err


def test_ddp_driver_reads_its_own_row_even_when_the_folder_has_a_clash(tmp_path, tiny_run, monkeypatch):  # noqa: F811
    import torch.multiprocessing

    from harness.execution import worker

    results_dir = tmp_path / "out"
    pq.write_table(
        pa.table({"run_id": ["x"], "status": ["ok"], "config": ["{}"], "test_acc": ["high"]}),
        (results_dir / tiny_run.suite).mkdir(parents=True) or results_dir / tiny_run.suite / "0_export.parquet",
    )
    written = {"run_id": tiny_run.run_id, "status": "ok", "config": "{}", "test_acc": 0.75}

    def ranks(*args, **kwargs):  # rank 0 writes its row, as execute() does
        write_run(results_dir, tiny_run.suite, written, [{"epoch": 1}])

    monkeypatch.setattr(torch.multiprocessing, "start_processes", ranks)
    row = worker._train_ranks(tiny_run, str(results_dir), [])
    assert row["status"] == "ok" and row["test_acc"] == 0.75
    assert read_runs(results_dir / tiny_run.suite)["test_acc"].tolist() == [0.75]  # not overwritten by a crash


# --- benchmarks/results_scale.py at a tiny size ---------------------------------------------------------------


def test_results_scale_benchmark_generates_real_rows_and_times_both_commands(tmp_path):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "results_scale.py"
    spec = importlib.util.spec_from_file_location("results_scale", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    record = script.measure(tmp_path, runs=12, repeats=1)
    base = read_folder(tmp_path / "base" / script.SUITE, "run")
    assert len(base.rows) == 12 and not base.skipped and set(base.rows["method"]) == {"erm", "sam"}
    assert list(base.rows.columns[: len(results.RUN_SCHEMA)]) == results.RUN_SCHEMA.names
    assert record["files"] == 48
    for command in ("report", "compare"):
        (trial,) = record[command]["trials"]
        assert trial["exit_code"] == 0, trial["stderr_tail"]
        assert trial["seconds"] > 0 and trial["peak_rss_mib"] > 0
