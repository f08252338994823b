"""The executor API (``harness.execution``): the worker's log written and read back, ``RowWatch`` settling
a run, ``run_worker``'s log, the runner leaving a data-parallel run's ranks to the worker, and the README's
executor, built from this API alone, passing the contract kit. The built-in executors are tested end to
end in ``test_executors.py``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import types
from datetime import datetime, timezone
from pathlib import Path

import pytest

from harness import ExecutorSpec, Registry, hookimpl
from harness.execution import (
    Epoch,
    LogReader,
    RowWatch,
    Skipped,
    Started,
    log_path,
    row_path,
    run_payload,
    run_worker,
)
from harness.execution.worker_log import LogWriter, parse_line
from harness.results.read import read_history, read_runs
from harness.results.store import suite_dir, write_run
from harness.run.runner import execute
from harness.suite import load_suite
from harness.testing.checks import check_executor

from .conftest import write_suite

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture
def run(tmp_path, registry):
    suite = write_suite(
        tmp_path / "tiny.yaml",
        """
        name: tiny
        defaults: {epochs: 2, batch_size: 64, device: cpu}
        methods: [sam]
        models: [{name: mlp, hidden: 8}]
        datasets: [{name: digits, limit_train: 128, limit_test: 64}]
        seeds: [0]
        """,
    )
    return load_suite(suite, registry).runs[0]


class _Events:
    """``RunEvents`` that record what they are told."""

    def __init__(self) -> None:
        self.seen: list[tuple] = []

    def started(self, run, worker=""):
        self.seen.append(("started", run.run_id, worker))

    def epoch(self, run, epoch, test_acc):
        self.seen.append(("epoch", run.run_id, epoch, test_acc))

    def finished(self, run, row):
        self.seen.append(("finished", run.run_id, row["status"], row["error"]))

    def skipped(self, run, reason):
        self.seen.append(("skipped", run.run_id, reason))


def test_the_executor_api_and_the_executors_import_no_torch():
    # Drivers hand out payloads and read rows: torch (seconds to import) is for the processes that train.
    modules = "harness.execution, harness_executors.local, harness_executors.slurm, harness_executors.ray_tasks"
    code = f"import sys, {modules}; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch')[:3])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_lines_the_worker_writes_are_the_records_the_driver_reads(tmp_path, run):
    results = tmp_path / "out"
    path = log_path(results, run)
    path.parent.mkdir(parents=True)
    path.write_text(f"2020-01-01T00:00:00+00:00 {run.run_id}: start on old-node\nepoch 1/2 test_acc 0.1000\n")
    reader = LogReader(results, run)  # an earlier attempt's lines are not this attempt's progress
    with path.open("a", buffering=1) as log:
        writer = LogWriter(log, run)
        writer.started("node-7")
        print("what the run prints: epoch 9 of 10, test_acc high", file=log)
        writer.epoch(1, 0.51234)
        log.write("epoch 2/2 test_acc 0.6")  # a line being written is read once it is complete
        log.flush()
        assert reader.read() == [Started("node-7"), Epoch(1, 0.5123)]
        log.write("000\n")
        writer.ended("failed", "RuntimeError: boom")
    assert reader.read() == [Epoch(2, 0.6)]
    lines = path.read_text().splitlines()
    assert json.dumps(run.config(), sort_keys=True) in lines
    assert lines[-1].endswith(f" {run.run_id}: failed RuntimeError: boom")
    assert parse_line("2020-01-01T00:00:00+00:00 other-run: start on node-8", run.run_id) is None


def test_run_worker_logs_every_epoch_and_its_start_without_an_epoch_callback(tmp_path, run):
    results = tmp_path / "out"
    reader = LogReader(results, run)
    assert run_worker(run_payload(run), str(results)) == "ok"
    history = read_history(suite_dir(results, "tiny")).sort_values("epoch")
    expected = [Epoch(epoch, round(acc, 4)) for epoch, acc in zip(history["epoch"], history["test_acc"], strict=True)]
    assert reader.read() == [Started(os.uname().nodename), *expected] and len(expected) == 2


def test_a_row_watch_reports_the_fresh_row_a_crash_or_a_skipped_run(tmp_path, run):
    results = tmp_path / "out"
    now = datetime.now(timezone.utc)
    write_run(results, "tiny", {"run_id": run.run_id, "status": "failed", "error": "earlier", "finished_at": now}, [])
    events = _Events()
    # The earlier attempt's row is not this attempt's: a worker that wrote nothing is recorded failed.
    crashed = RowWatch(results, run).settle(events, "worker process killed by signal 9 (SIGKILL)")
    assert crashed["status"] == "failed" and crashed["error"].startswith("worker process killed by signal 9")
    assert read_runs(suite_dir(results, "tiny"))["error"].tolist() == [crashed["error"]]
    watch = RowWatch(results, run)
    write_run(results, "tiny", {"run_id": run.run_id, "status": "ok", "error": "", "finished_at": now}, [])
    assert watch.fresh_row()["status"] == "ok" and watch.settle(events, "unused")["status"] == "ok"
    before = row_path(results, run).stat().st_mtime_ns
    assert RowWatch(results, run).settle(events, "unused", Skipped(run.run_id, "leased by node-b:12")) is None
    assert row_path(results, run).stat().st_mtime_ns == before  # nothing written for a skipped run
    assert events.seen == [
        ("finished", run.run_id, "failed", crashed["error"]),
        ("finished", run.run_id, "ok", ""),
        ("skipped", run.run_id, "leased by node-b:12"),
    ]


def test_the_runner_trains_one_process_and_leaves_starting_ranks_to_the_worker(tmp_path, run, registry):
    two_ranks = dataclasses.replace(run, nproc=2)
    with pytest.raises(ValueError, match=r"nproc=2: execute\(\) trains one rank .*\.run_worker starts the ranks"):
        execute(two_ranks, registry, tmp_path / "out")
    assert not suite_dir(tmp_path / "out", "tiny").exists()


def _readme_executor() -> types.ModuleType:
    """The README's example executor ("Writing a plugin"), as a module."""
    text = README.read_text()
    start = text.index("```python\n# my_variant/executor.py") + len("```python\n")
    module = types.ModuleType("my_variant_executor")
    exec(compile(text[start : text.index("```", start)], "README.md", "exec"), module.__dict__)
    return module


@pytest.mark.slow
def test_the_readme_executor_gives_the_rows_of_the_local_executor():
    executor = _readme_executor().InTurn

    class Plugin:
        @hookimpl
        def register_executors(self):
            return [ExecutorSpec("in-turn", executor)]

    assert check_executor(Registry.from_plugins(plugins=[Plugin()]), "in-turn") == {"same_rows": "passed"}


def test_a_log_planted_as_a_symlink_is_not_followed(tmp_path, run):
    # Before: the run appended its whole output to whatever file the planted link pointed at.
    from harness.execution.worker_log import log_path

    results = tmp_path / "out"
    target = tmp_path / "someone_elses_file"
    target.write_text("precious\n")
    planted = log_path(results, run)
    planted.parent.mkdir(parents=True)
    planted.symlink_to(target)
    with pytest.raises(OSError):
        run_worker(run_payload(run), str(results))
    assert target.read_text() == "precious\n"
    assert not list(suite_dir(results, "tiny").glob("*.parquet"))


ORPHANED_CHILD = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", '''
from harness.execution.worker import end_with_parent
import time
end_with_parent(poll_s=0.1)
print("ready", flush=True)
time.sleep(120)
'''], stdout=subprocess.PIPE, text=True)
assert child.stdout.readline().strip() == "ready"
print(child.pid, flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX process parentage")
def test_a_process_that_ends_with_its_parent_ends_when_the_parent_is_killed():
    # What a DDP rank does: its worker killed by SIGKILL (OOM killer, the stop escalation) must not leave it
    # training, since torch's parent-death signal for ranks, SIGINT, is ignored there.
    import signal
    import time

    parent = subprocess.Popen([sys.executable, "-c", ORPHANED_CHILD], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    try:
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _running(child):
            time.sleep(0.05)
        assert not _running(child), "the child outlived its parent by 10 s"
    finally:
        if _running(child):
            os.kill(child, signal.SIGKILL)


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (not a zombie: an orphan's zombie is reaped by init)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state != "Z"
