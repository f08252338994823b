"""Run leases: one live process trains a run; stale leases of dead holders are taken over.

Units on ``harness.execution.leases`` (no training), then ``run_worker`` under a lease, then two real drivers on
one results folder (the executor tests' ``held`` model keeps runs in flight until the test lets go).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import UsageError
from harness.execution import Skipped, lease_path, leases, log_path, run_payload, run_worker
from harness.results.read import read_runs
from harness.results.store import suite_dir, write_run
from harness.suite import load_suite

from .conftest import write_suite
from .test_executors import _wait_for, test_plugin  # noqa: F401  (test_plugin is a fixture)


def _write_lease(path: Path, age_s: float = 0.0, **fields) -> None:
    """A lease file as another process would leave it, last touched ``age_s`` seconds ago."""
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "pid_namespace": "", "process_start": ""}
    holder |= {"since": "2026-01-01T00:00:00+00:00", "token": "theirs"} | fields
    path.write_text(json.dumps(holder))
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))


def _token(path: Path) -> str:
    return json.loads(path.read_text())["token"]


# --- harness.execution.leases -----------------------------------------------------------------------------------------


def test_a_lease_is_exclusive_while_held_and_free_once_released(tmp_path):
    path = tmp_path / "run.lease"
    lease = leases.take(path)
    assert isinstance(lease, leases.Lease) and _token(path) == lease.holder.token
    other = leases.take(path)
    assert isinstance(other, leases.Holder) and other.token == lease.holder.token
    assert other.describe().startswith(f"{socket.gethostname()}:{os.getpid()} (since ")
    lease.release()
    assert not path.exists()
    with leases.take(path) as again:
        assert isinstance(again, leases.Lease)
    assert not path.exists()


def test_the_lease_of_a_dead_process_is_taken_over(tmp_path):
    path = tmp_path / "run.lease"
    code = (
        "import os, pathlib; from harness.execution import leases; "
        f"leases.take(pathlib.Path({str(path)!r})); os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)  # took the lease and died holding it
    dead = json.loads(path.read_text())
    assert dead["pid"] != os.getpid() and not leases._pid_alive(dead["pid"])
    lease = leases.take(path)
    assert isinstance(lease, leases.Lease) and _token(path) == lease.holder.token != dead["token"]
    lease.release()


@pytest.mark.skipif(not leases.process_start(os.getpid()), reason="process start times come from /proc")
def test_a_pid_reused_by_another_process_does_not_keep_the_lease(tmp_path):
    path = tmp_path / "run.lease"
    namespace = leases._pid_namespace()
    _write_lease(path, pid=os.getpid(), pid_namespace=namespace, process_start=leases.process_start(os.getpid()))
    assert isinstance(leases.take(path), leases.Holder)  # this very process: alive
    _write_lease(path, pid=os.getpid(), pid_namespace=namespace, process_start="1")  # same pid, another start
    lease = leases.take(path)
    assert isinstance(lease, leases.Lease)
    lease.release()


def test_a_lease_of_another_machine_is_live_until_its_heartbeat_stops(tmp_path, monkeypatch):
    monkeypatch.setenv(leases.TIMEOUT_ENV, "60")
    path = tmp_path / "run.lease"
    _write_lease(path, age_s=50, host="node-elsewhere", pid=1)
    holder = leases.take(path)
    assert isinstance(holder, leases.Holder)
    assert holder.describe() == "node-elsewhere:1 (since 2026-01-01T00:00:00+00:00)"
    _write_lease(path, age_s=70, host="node-elsewhere", pid=1)
    lease = leases.take(path)
    assert isinstance(lease, leases.Lease) and _token(path) == lease.holder.token
    lease.release()


def test_an_unreadable_lease_is_judged_by_its_age(tmp_path, monkeypatch):
    monkeypatch.setenv(leases.TIMEOUT_ENV, "60")
    path = tmp_path / "run.lease"
    path.write_bytes(b"")  # a holder that died between creating and writing it, or is writing it now
    holder = leases.take(path)
    assert isinstance(holder, leases.Holder) and holder.describe() == "an unreadable lease file"
    os.utime(path, (time.time() - 61, time.time() - 61))
    lease = leases.take(path)
    assert isinstance(lease, leases.Lease)
    lease.release()


def test_a_held_lease_heartbeats_and_release_spares_a_lease_taken_over_meanwhile(tmp_path):
    path = tmp_path / "run.lease"
    lease = leases.take(path, heartbeat_s=0.05)
    os.utime(path, (time.time() - 1000, time.time() - 1000))
    _wait_for(lambda: time.time() - path.stat().st_mtime < 10, 5, "a heartbeat")
    _write_lease(path, token="the-new-holder")  # judged stale and taken over while this process was stuck
    os.utime(path, (time.time() - 1000, time.time() - 1000))
    _wait_for(lambda: lease.lost, 5, "the heartbeat to notice the takeover")
    time.sleep(0.2)  # several heartbeats later: none of them touched the new holder's lease
    assert time.time() - path.stat().st_mtime > 900 and not lease.held()
    lease.release()
    assert _token(path) == "the-new-holder"


CONTENDER = """
import pathlib, sys, time
from harness.execution import leases
path, go = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
while not go.exists():
    time.sleep(0.001)
taken = leases.take(path)
print("lease" if isinstance(taken, leases.Lease) else "holder", flush=True)
if isinstance(taken, leases.Lease):
    while not pathlib.Path(sys.argv[3]).exists():
        time.sleep(0.01)
    taken.release()
"""


def test_processes_racing_for_a_stale_lease_get_exactly_one(tmp_path, monkeypatch):
    monkeypatch.setenv(leases.TIMEOUT_ENV, "60")
    path, go, done = tmp_path / "run.lease", tmp_path / "go", tmp_path / "done"
    _write_lease(path, age_s=3600, host="node-elsewhere", pid=1)  # stale: every contender breaks it at once
    contenders = [
        subprocess.Popen(
            [sys.executable, "-c", CONTENDER, str(path), str(go), str(done)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(6)
    ]
    try:
        time.sleep(0.5)  # all of them waiting for the go
        go.touch()
        answers = [contender.stdout.readline().strip() for contender in contenders]
    finally:
        done.touch()
        for contender in contenders:
            contender.wait(timeout=30)
    assert sorted(answers) == ["holder"] * 5 + ["lease"]
    assert not path.exists() and not path.with_name("run.lease.break").exists()


def test_a_bad_lease_timeout_is_refused_before_anything_trains(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(leases.TIMEOUT_ENV, "soon")
    with pytest.raises(UsageError, match=r"HARNESS_LEASE_TIMEOUT_S='soon': expected a number of seconds > 0"):
        leases.timeout_s()
    suite = write_suite(tmp_path / "s.yaml", "name: s\nmethods: [erm]\nmodels: [mlp]\ndatasets: [digits]\n")
    assert main(["run", str(suite), "--results-dir", str(tmp_path / "out")]) == 2
    assert "HARNESS_LEASE_TIMEOUT_S='soon'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# --- run_worker under a lease ----------------------------------------------------------------------------------


@pytest.fixture
def tiny_suite(tmp_path) -> Path:
    return write_suite(
        tmp_path / "tiny.yaml",
        """
        name: tiny
        defaults: {epochs: 1, batch_size: 64, device: cpu}
        methods: [erm]
        models: [{name: mlp, hidden: 8}]
        datasets: [{name: digits, limit_train: 128, limit_test: 64}]
        seeds: [0]
        """,
    )


@pytest.fixture
def tiny_run(tiny_suite, registry):
    return load_suite(tiny_suite, registry).runs[0]


def test_run_worker_leaves_a_run_another_live_process_holds(tmp_path, tiny_run):
    results = tmp_path / "out"
    with leases.take(lease_path(results, tiny_run)) as lease:
        outcome = run_worker(run_payload(tiny_run), str(results))
    assert outcome == Skipped(tiny_run.run_id, f"leased by {lease.holder.describe()}")
    assert not log_path(results, tiny_run).exists() and read_runs(suite_dir(results, "tiny")).empty


def test_run_worker_leaves_a_run_finished_since_the_driver_chose_it_and_reruns_an_older_one(tmp_path, tiny_run):
    results = tmp_path / "out"
    chose = datetime.now(timezone.utc)
    row = {"run_id": tiny_run.run_id, "status": "ok", "host": "node-b", "finished_at": chose + timedelta(seconds=1)}
    write_run(results, "tiny", row, [])  # another driver finished it after this one chose its runs
    outcome = run_worker(run_payload(tiny_run), str(results), since=chose)
    assert isinstance(outcome, Skipped) and outcome.reason.startswith("finished ok on node-b at ")
    assert not log_path(results, tiny_run).exists()
    # A driver that chose the run after that row was written (--rerun) trains it again, under its lease.
    assert run_worker(run_payload(tiny_run), str(results), since=chose + timedelta(seconds=2)) == "ok"
    rows = read_runs(suite_dir(results, "tiny"))
    assert rows["host"].tolist() == [socket.gethostname()] and rows["test_acc"].iloc[0] > 0
    assert not lease_path(results, tiny_run).exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("backend", "executor"),
    [
        ("local", "{name: local}"),
        ("submitit", "{name: submitit, cluster: local, cpus_per_task: 1}"),
        ("ray", "{name: ray, local_num_cpus: 1}"),
    ],
    ids=["local", "submitit", "ray"],
)
def test_every_executor_reports_a_run_another_process_holds_as_skipped(
    tmp_path, tiny_suite, tiny_run, backend, executor, capsys
):
    if backend != "local":
        pytest.importorskip(backend)
    results = tmp_path / "out"
    with leases.take(lease_path(results, tiny_run)) as lease:
        code = main(["run", str(tiny_suite), "--results-dir", str(results), "--set", f"executor={executor}"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"{tiny_run.run_id}: skipped, leased by {lease.holder.describe()}" in out
    assert "suite tiny: nothing to train; 0 already finished (skipped); 1 left to other processes (skipped)" in out
    assert read_runs(suite_dir(results, "tiny")).empty  # no crash record for a run another process has


# --- two drivers on one folder ---------------------------------------------------------------------------------


def _driver(suite: Path, results: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "run", str(suite), "--results-dir", str(results), "--workers", "2"],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _stop(driver: subprocess.Popen) -> None:
    """End a driver the test started (SIGTERM: it stops its own workers), if it still runs."""
    if driver.poll() is None:
        driver.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            driver.wait(timeout=30)
    if driver.poll() is None:
        driver.kill()
        driver.wait()


def _trainings(logs: Path) -> dict[str, int]:
    """How many times each run started training, from the start lines of its log."""
    return {log.stem: log.read_text().count(": start on ") for log in logs.glob("*.log")}


@pytest.mark.slow
def test_two_drivers_on_one_folder_train_each_run_once(test_plugin, tmp_path):  # noqa: F811
    hold = tmp_path / "hold"
    hold.touch()
    suite = write_suite(
        tmp_path / "shared.yaml",
        f"""
        name: shared
        defaults: {{epochs: 1, batch_size: 256}}
        methods: [erm]
        models: [{{name: held, hold: {str(hold)!r}}}]
        datasets: [digits]
        seeds: [0, 1, 2, 3]
        """,
    )
    results = tmp_path / "out"
    logs = suite_dir(results, "shared") / "logs"
    first = _driver(suite, results, tmp_path / "first.log")
    second = None
    try:
        _wait_for(lambda: len(list(logs.glob("*.log"))) >= 2, 120, "the first driver's two runs to start")
        second = _driver(suite, results, tmp_path / "second.log")
        # The second driver's workers find two runs leased and take the two others, all held.
        _wait_for(lambda: len(list(logs.glob("*.log"))) == 4, 120, "the second driver to take the two other runs")
        hold.unlink()
        assert first.wait(timeout=120) == 0 and second.wait(timeout=120) == 0
    finally:
        hold.unlink(missing_ok=True)
        for driver in (first, second):
            if driver is not None:
                _stop(driver)
    assert _trainings(logs) == {run.stem: 1 for run in suite_dir(results, "shared").glob("*.parquet")}
    assert len(_trainings(logs)) == 4 and set(read_runs(suite_dir(results, "shared"))["status"]) == {"ok"}
    for name in ("first", "second"):
        out = (tmp_path / f"{name}.log").read_text()
        assert "suite shared: 2 ok; 0 already finished (skipped); 2 left to other processes (skipped)" in out, out
        assert out.count(": skipped, leased by ") + out.count(": skipped, finished ok on ") == 2, out
    assert not list((suite_dir(results, "shared") / ".leases").iterdir())


@pytest.mark.slow
def test_a_rerun_leaves_the_run_a_live_driver_is_training(test_plugin, tmp_path):  # noqa: F811
    hold = tmp_path / "hold"
    hold.touch()
    suite = write_suite(
        tmp_path / "busy.yaml",
        f"""
        name: busy
        defaults: {{epochs: 1, batch_size: 256}}
        methods: [erm]
        models: [{{name: held, hold: {str(hold)!r}}}]
        datasets: [digits]
        seeds: [0]
        """,
    )
    results = tmp_path / "out"
    first = _driver(suite, results, tmp_path / "first.log")
    try:
        _wait_for(lambda: Path(f"{hold}.reached").exists(), 120, "the held run to train")
        rerun = subprocess.run(  # a rerun that trained the held run too would wait on the hold, and time out
            [sys.executable, "-m", "harness.cli", "run", str(suite), "--results-dir", str(results)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        lease = next((suite_dir(results, "busy") / ".leases").glob("*.lease"))
        holder = json.loads(lease.read_text())
        assert f"{lease.stem}: skipped, leased by {holder['host']}:{holder['pid']} (since " in rerun.stdout
        assert "suite busy: nothing to train; 0 already finished (skipped); 1 left to other processes" in rerun.stdout
        hold.unlink()
        assert first.wait(timeout=120) == 0
    finally:
        hold.unlink(missing_ok=True)
        _stop(first)
    assert _trainings(suite_dir(results, "busy") / "logs") == {lease.stem: 1}
    assert read_runs(suite_dir(results, "busy"))["status"].tolist() == ["ok"]
