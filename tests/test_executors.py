"""Executors end to end through the CLI: local worker processes, submitit's local cluster, a local Ray.

Worker processes are fresh interpreters: they do not see entry points monkeypatched into the test
process, so the test models here come from a plugin installed for real (a module and its
``.dist-info`` on a temporary ``sys.path`` folder, also on ``PYTHONPATH`` for subprocesses).
Every run is tiny (digits, a 16-unit MLP, 1-2 epochs): the cost is starting the workers.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import types
from pathlib import Path

import pytest
from harness_executors.local import LocalExecutor, available_cpus, exit_cause, gpu_mask, visible_gpus

from harness.cli import main
from harness.errors import PluginError, UsageError
from harness.execution import RUN_MODULES, worker_modules
from harness.plugins import Registry
from harness.results.read import read_history, read_runs
from harness.suite import load_suite

from .conftest import write_suite

pytestmark = pytest.mark.slow

TEST_PLUGIN = """
    '''Test models for the executor tests (installed with a .dist-info so worker processes find them).'''
    import os
    import signal
    import time

    from harness import ModelSpec, hookimpl


    def _guard():
        if os.getpid() == int(os.environ.get("EXECUTOR_TEST_DRIVER_PID", "0")):
            raise RuntimeError("this test model must train in a worker process, not in the test process")


    def tiny(*, num_classes, input_shape, hidden=16):
        import math

        import torch

        gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
        print(f"worker env: CUDA_VISIBLE_DEVICES={gpus} threads={torch.get_num_threads()}")
        return torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(math.prod(input_shape), hidden), torch.nn.ReLU(),
            torch.nn.Linear(hidden, num_classes),
        )


    def raising(*, num_classes, input_shape):
        raise RuntimeError("this model cannot be built")


    def marked(*, num_classes, input_shape):
        import executor_test_mark  # on the driver's sys.path only from the test that uses this model

        print(f"worker mark: {os.environ.get('EXECUTOR_TEST_MARK')} {executor_test_mark.VALUE}")
        return tiny(num_classes=num_classes, input_shape=input_shape)


    def diverging(*, num_classes, input_shape):
        model = tiny(num_classes=num_classes, input_shape=input_shape)
        forward = model.forward
        model.forward = lambda x: forward(x) * float("nan")
        return model


    def killer(*, num_classes, input_shape):
        import torch

        class Killer(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.linear = torch.nn.Linear(1, 1)

            def forward(self, x):
                _guard()
                os.kill(os.getpid(), signal.SIGKILL)

        return Killer()


    def held(*, num_classes, input_shape, hold=""):
        '''Trains only while the file ``hold`` is absent (or until asked to stop); writes ``hold + ".reached"``
        when it waits.'''
        from harness.run.stop import stop_requested

        model = tiny(num_classes=num_classes, input_shape=input_shape)
        forward = model.forward

        def waiting_forward(x):
            _guard()
            if os.path.exists(hold):
                open(hold + ".reached", "w").close()
                while os.path.exists(hold) and stop_requested() is None:
                    time.sleep(0.05)
            return forward(x)

        model.forward = waiting_forward
        return model


    @hookimpl
    def register_models():
        return [
            ModelSpec("tiny", tiny, defaults={"hidden": 16}),
            ModelSpec("raising", raising),
            ModelSpec("marked", marked),
            ModelSpec("diverging", diverging),
            ModelSpec("killer", killer),
            ModelSpec("held", held, defaults={"hold": ""}),
        ]
"""


@pytest.fixture(scope="module")
def test_plugin(tmp_path_factory):
    """Install the test models as a real distribution, visible to this process and to every subprocess."""
    site = tmp_path_factory.mktemp("site")
    (site / "executor_test_plugin.py").write_text(textwrap.dedent(TEST_PLUGIN))
    dist_info = site / "executor_test_plugin-0.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: executor-test-plugin\nVersion: 0.0\n")
    (dist_info / "entry_points.txt").write_text("[sam_harness]\nexecutor-test = executor_test_plugin\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(site))
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
        patch.setenv("EXECUTOR_TEST_DRIVER_PID", str(os.getpid()))
        yield site


def _suite(path: Path, name: str, models: str, executor: str = "", epochs: int = 2) -> Path:
    block = f"executor: {executor}" if executor else ""
    return write_suite(
        path / f"{name}.yaml",
        f"""
        name: {name}
        defaults: {{epochs: {epochs}, batch_size: 256}}
        methods: [erm]
        models: {models}
        datasets: [digits]
        {block}
        """,
    )


def _run(*argv: str) -> tuple[int, str]:
    """``harness run ARGV``, returning the exit code and what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["run", *argv])
    return code, out.getvalue()


def _rows(results: Path, suite: str) -> dict[str, dict]:
    runs = read_runs(results / suite)
    return {row["run_id"]: row for row in runs.to_dict("records")}


# --- local: a fresh process per run ----------------------------------------------------------------------------

LOCAL_MODELS = "[{name: tiny, hidden: 16}, {name: tiny, hidden: 8}, raising]"


@pytest.fixture(scope="module")
def local_runs(test_plugin, tmp_path_factory):
    """The same suite with one worker and with two (GPUs "5,6" handed out: no GPU is needed to see them)."""
    folder = tmp_path_factory.mktemp("local")
    suite = _suite(folder, "local", LOCAL_MODELS, executor='{name: local, gpus: "5,6"}')
    one = _run(str(suite), "--results-dir", str(folder / "one"), "--workers", "1")
    two = _run(str(suite), "--results-dir", str(folder / "two"), "--workers", "2")
    return folder, suite, one, two


def test_two_workers_write_the_same_rows_as_one(local_runs):
    folder, _, (code_one, _), (code_two, _) = local_runs
    one, two = _rows(folder / "one", "local"), _rows(folder / "two", "local")
    assert len(one) == 3 and set(one) == set(two)
    assert {k: r["status"] for k, r in one.items()} == {k: r["status"] for k, r in two.items()}
    for results in (one, two):
        assert sorted(r["status"] for r in results.values()) == ["failed", "ok", "ok"]
    assert code_one == code_two == 1
    history = read_history(folder / "two" / "local")
    assert sorted(history.groupby("run_id").size().tolist()) == [2, 2]  # the failed run has no epochs


def test_a_raising_run_fails_alone_and_the_summary_counts_each_status(local_runs):
    folder, _, (_, out_one), (_, out_two) = local_runs
    for results, out in ((folder / "one", out_one), (folder / "two", out_two)):
        rows = _rows(results, "local").values()
        failed = [r for r in rows if r["status"] == "failed"]
        assert [r["model"] for r in failed] == ["raising"]
        assert "RuntimeError: this model cannot be built" in failed[0]["error"]
        assert all(r["test_acc"] > 0 for r in rows if r["status"] == "ok")
        assert "suite local: 1 failed, 2 ok; 0 already finished (skipped)" in out


def _worker_env(logs: Path) -> set[str]:
    """What the ``tiny`` models printed about their worker process."""
    return set(re.findall(r"^worker env: (.*)$", "\n".join(p.read_text() for p in logs.glob("*.log")), re.M))


def test_one_worker_trains_in_order_and_workers_split_threads_and_gpus(local_runs):
    folder, _, _, _ = local_runs
    runs = read_runs(folder / "one" / "local").sort_values("started_at")
    assert list(runs["model_params"].str.contains('"hidden": 16')) == [True, False, False]  # suite order
    assert (runs["started_at"].iloc[1:].to_numpy() >= runs["finished_at"].iloc[:-1].to_numpy()).all()
    one_env = _worker_env(folder / "one" / "local" / "logs")
    assert one_env == {f"CUDA_VISIBLE_DEVICES=5 threads={available_cpus()}"}
    two_env = _worker_env(folder / "two" / "local" / "logs")
    threads = max(1, available_cpus() // 2)
    assert two_env <= {f"CUDA_VISIBLE_DEVICES={gpu} threads={threads}" for gpu in (5, 6)} and two_env


def test_every_run_has_a_log_with_its_epochs(local_runs):
    folder, _, _, _ = local_runs
    for results in ("one", "two"):
        rows = _rows(folder / results, "local")
        logs = {p.stem: p.read_text() for p in (folder / results / "local" / "logs").glob("*.log")}
        assert set(logs) == set(rows)
        for run_id, row in rows.items():
            if row["status"] == "ok":
                assert "epoch 1/2 test_acc" in logs[run_id] and "epoch 2/2 test_acc" in logs[run_id]
            else:
                assert "this model cannot be built" in logs[run_id]


def test_plain_progress_prints_a_line_per_run_started_and_finished(local_runs):
    folder, _, (_, out_one), (_, out_two) = local_runs
    for out, workers in ((out_one, 1), (out_two, 2)):
        for run_id, row in _rows(folder / ("one" if workers == 1 else "two"), "local").items():
            started = re.findall(rf"^\[\d/3\] {run_id} \[worker (\d)(, GPU \d)?\]: training 2 epochs$", out, re.M)
            finished = re.findall(rf"^\[\d/3\] {run_id}: {row['status']}", out, re.M)
            assert len(started) == 1 and len(finished) == 1, out
            assert int(started[0][0]) < workers
        assert out.count("[3/3] ") == 1


def test_a_second_run_trains_only_the_failed_run(local_runs):
    folder, suite, _, _ = local_runs
    results = folder / "two"
    before = {p.name: p.stat().st_mtime_ns for p in (results / "local").glob("*.parquet")}
    code, out = _run(str(suite), "--results-dir", str(results), "--workers", "2")
    assert code == 1 and "suite local: 1 failed; 2 already finished (skipped)" in out
    after = {p.name: p.stat().st_mtime_ns for p in (results / "local").glob("*.parquet")}
    changed = [name for name in before if before[name] != after[name]]
    assert len(changed) == 1 and _rows(results, "local")[changed[0].removesuffix(".parquet")]["model"] == "raising"


def test_a_raising_a_diverging_and_a_killed_run_are_recorded_and_the_others_finish(test_plugin, tmp_path):
    # The spawn start method (the other tests use the default, forkserver): a fresh interpreter per run.
    models = "[tiny, raising, diverging, killer, {name: tiny, hidden: 8}]"
    suite = _suite(tmp_path, "faults", models, executor="{name: local, start_method: spawn}")
    code, out = _run(str(suite), "--results-dir", str(tmp_path / "out"), "--workers", "2")
    assert code == 1
    rows = {(r["model"], r["model_params"]): r for r in _rows(tmp_path / "out", "faults").values()}
    statuses = {model: row["status"] for (model, _), row in rows.items() if model != "tiny"}
    assert statuses == {"raising": "failed", "diverging": "diverged", "killer": "failed"}
    assert [row["status"] for (model, _), row in rows.items() if model == "tiny"] == ["ok", "ok"]
    errors = {model: row["error"] for (model, _), row in rows.items()}
    assert "RuntimeError: this model cannot be built" in errors["raising"]
    assert "non-finite" in errors["diverging"]
    assert "killed by signal 9 (SIGKILL)" in errors["killer"]
    assert "suite faults: 1 diverged, 2 failed, 2 ok" in out


# --- Ctrl-C ---------------------------------------------------------------------------------------------------


def _children(pid: int) -> set[int]:
    """Every descendant of ``pid`` (from /proc: no psutil needed)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds worker processes through /proc")
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_stops_the_workers_keeps_finished_rows_and_a_rerun_resumes(test_plugin, tmp_path, stop):
    hold = tmp_path / "hold"
    hold.touch()
    suite = _suite(tmp_path, "interrupted", f"[tiny, {{name: held, hold: {str(hold)!r}}}]")
    results = tmp_path / "out"
    with (tmp_path / "driver.log").open("w") as log:
        driver = subprocess.Popen(
            [sys.executable, "-m", "harness.cli", "run", str(suite), "--results-dir", str(results), "--workers", "1"],
            stdout=log,
            stderr=subprocess.STDOUT,
            # A shell runs background jobs with SIGINT ignored, and an ignored SIGINT is inherited and kept by
            # Python (no KeyboardInterrupt): give the driver the default disposition a terminal would.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:
            reached = Path(f"{hold}.reached")
            _wait_for(lambda: reached.exists() or driver.poll() is not None, 180, "the held run to start training")
            assert driver.poll() is None, (tmp_path / "driver.log").read_text()
            workers = _children(driver.pid)
            assert workers
            driver.send_signal(stop)  # SIGTERM: what kill, timeout and Slurm preemption send
            assert driver.wait(timeout=60) == 130
        finally:
            if driver.poll() is None:
                driver.kill()
    output = (tmp_path / "driver.log").read_text()
    assert "suite interrupted: 1 not run, 1 ok" in output and "interrupted: finished runs are kept" in output
    _wait_for(lambda: not any(_alive(pid) for pid in workers), 30, f"the driver's processes {workers} to end")
    rows = _rows(results, "interrupted")
    assert [r["model"] for r in rows.values()] == ["tiny"] and next(iter(rows.values()))["status"] == "ok"
    assert not list((results / "interrupted").rglob("*.tmp"))
    # the stopped worker finished its step and wrote the run's checkpoint (harness.run.checkpoint) before it ended
    assert len(list((results / "interrupted" / "checkpoints").glob("*.pt"))) == 1

    hold.unlink()
    code, out = _run(str(suite), "--results-dir", str(results), "--workers", "1")
    assert code == 0 and "suite interrupted: 1 ok; 1 already finished (skipped)" in out
    rows = _rows(results, "interrupted")
    assert sorted(r["model"] for r in rows.values()) == ["held", "tiny"]
    assert {r["model"]: r["restarts"] for r in rows.values()} == {"held": 1, "tiny": 0}, "resumed from its checkpoint"
    assert not list((results / "interrupted" / "checkpoints").glob("*.pt")), "removed once the run is recorded"
    before = {p.name: p.stat().st_mtime_ns for p in (results / "interrupted").glob("*.parquet")}
    code, out = _run(str(suite), "--results-dir", str(results), "--workers", "1")
    assert code == 0 and "nothing to train; 2 already finished (skipped)" in out
    assert before == {p.name: p.stat().st_mtime_ns for p in (results / "interrupted").glob("*.parquet")}


# --- submitit and Ray ------------------------------------------------------------------------------------------

#: Result columns every executor must reproduce exactly (timing, memory and host columns may differ).
REPRODUCED = (
    "status", "steps", "epochs_completed", "test_acc", "best_test_acc", "test_loss", "train_loss", "train_acc",
    "train_acc_clean", "sam_fraction", "perturbed_steps", "grad_evals", "optimizer_state_bytes", "config",
)  # fmt: skip
REPRODUCED_HISTORY = ("epoch", "step", "lr", "rho", "train_loss", "train_acc", "test_loss", "test_acc")


@pytest.fixture(scope="module")
def smoke_suite(test_plugin, tmp_path_factory):
    """A 4-run suite (erm and sam, two MLPs) and its results from ``local --workers 1``, the reference."""
    folder = tmp_path_factory.mktemp("smoke")
    suite = write_suite(
        folder / "smoke4.yaml",
        """
        name: smoke4
        defaults: {epochs: 2, batch_size: 256}
        methods: [erm, sam]
        models: [{name: tiny, hidden: 16}, {name: tiny, hidden: 8}]
        datasets: [digits]
        executor: {name: local, workers: 1, threads_per_worker: 1}
        """,
    )
    code, out = _run(str(suite), "--results-dir", str(folder / "reference"))
    assert code == 0, out
    return folder, suite


def _assert_same_results(expected: Path, got: Path, suite: str) -> None:
    want, have = _rows(expected, suite), _rows(got, suite)
    assert len(want) == 4 and set(have) == set(want)
    for run_id, row in want.items():
        for column in REPRODUCED:
            if isinstance(row[column], float):
                assert have[run_id][column] == pytest.approx(row[column], abs=1e-6, nan_ok=True), (run_id, column)
            else:
                assert have[run_id][column] == row[column], (run_id, column)
    history = [read_history(folder / suite).sort_values(["run_id", "epoch"]) for folder in (expected, got)]
    assert history[1]["run_id"].tolist() == history[0]["run_id"].tolist()
    for column in REPRODUCED_HISTORY:
        want_column, have_column = (frame[column].tolist() for frame in history)
        assert have_column == pytest.approx(want_column, abs=1e-6, nan_ok=True), column


@pytest.mark.parametrize(
    ("backend", "executor"),
    [
        ("local", "{name: local, workers: 2, threads_per_worker: 1}"),
        ("submitit", "{name: submitit, cluster: local, cpus_per_task: 1}"),
        ("ray", "{name: ray, local_num_cpus: 2, num_cpus: 1}"),
    ],
    ids=["local-2-workers", "submitit", "ray"],
)
def test_every_executor_writes_the_rows_of_one_local_worker(smoke_suite, backend, executor):
    # One torch thread per run everywhere, as in the reference: float reductions then do not depend on the machine.
    if backend != "local":
        pytest.importorskip(backend)
    folder, suite = smoke_suite
    code, out = _run(str(suite), "--results-dir", str(folder / backend), "--set", f"executor={executor}")
    assert code == 0 and "suite smoke4: 4 ok" in out, out
    _assert_same_results(folder / "reference", folder / backend, "smoke4")


def test_submitit_local_cluster_trains_runs_and_records_a_dead_job(test_plugin, tmp_path):
    pytest.importorskip("submitit")
    suite = _suite(tmp_path, "jobs", "[tiny, killer]", executor="{name: submitit, cluster: local, cpus_per_task: 1}")
    code, out = _run(str(suite), "--results-dir", str(tmp_path / "out"))
    assert code == 1 and "suite jobs: 1 failed, 1 ok" in out
    rows = {r["model"]: r for r in _rows(tmp_path / "out", "jobs").values()}
    assert rows["tiny"]["status"] == "ok" and rows["tiny"]["test_acc"] > 0
    assert "epoch 2/2 test_acc" in (tmp_path / "out" / "jobs" / "logs" / f"{rows['tiny']['run_id']}.log").read_text()
    assert rows["killer"]["status"] == "failed"
    assert re.search(r"submitit job \d+ ended in state \w+ without writing the run's row", rows["killer"]["error"])
    assert list((tmp_path / "out" / "jobs" / "submitit").glob("*_submitted.pkl"))


def test_ray_local_cluster_trains_runs_and_records_a_dead_worker(test_plugin, tmp_path):
    pytest.importorskip("ray")
    suite = _suite(tmp_path, "tasks", "[tiny, killer]", executor="{name: ray, local_num_cpus: 2}")
    code, out = _run(str(suite), "--results-dir", str(tmp_path / "out"))
    assert code == 1 and "suite tasks: 1 failed, 1 ok" in out
    rows = {r["model"]: r for r in _rows(tmp_path / "out", "tasks").values()}
    assert rows["tiny"]["status"] == "ok" and rows["tiny"]["test_acc"] > 0
    assert "epoch 2/2 test_acc" in (tmp_path / "out" / "tasks" / "logs" / f"{rows['tiny']['run_id']}.log").read_text()
    assert rows["killer"]["status"] == "failed" and "ray task failed" in rows["killer"]["error"]
    assert re.search(r"\[\d/2\] \S+ \[\S+, ray\]: training 2 epochs", out)


def test_ray_with_address_empty_starts_its_own_ray_whatever_ray_address_says(test_plugin, tmp_path, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # a stray head's address: ray.init() alone would join it
    suite = _suite(tmp_path, "own", "[tiny]", executor="{name: ray, local_num_cpus: 1}", epochs=1)
    code, out = _run(str(suite), "--results-dir", str(tmp_path / "out"))
    assert code == 0 and "suite own: 1 ok" in out, out


def test_ray_cluster_that_cannot_be_reached_is_a_usage_error(test_plugin, tmp_path, capsys):
    pytest.importorskip("ray")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    suite = _suite(tmp_path, "away", "[tiny]", executor=f"{{name: ray, address: '127.0.0.1:{port}'}}", epochs=1)
    assert main(["run", str(suite), "--results-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"executor ray: cannot connect to the Ray cluster at address='127.0.0.1:{port}'" in err
    assert "ray start --head" in err and not list((tmp_path / "out").rglob("*.parquet"))


def test_sigterm_to_a_ray_driver_cancels_its_tasks_and_exits_130(test_plugin, tmp_path):
    pytest.importorskip("ray")
    hold = tmp_path / "hold"
    hold.touch()
    executor = "{name: ray, local_num_cpus: 2, num_cpus: 1}"
    suite = _suite(tmp_path, "raystop", f"[tiny, {{name: held, hold: {str(hold)!r}}}]", executor=executor)
    results = tmp_path / "out"
    with (tmp_path / "driver.log").open("w") as log:
        driver = subprocess.Popen(
            [sys.executable, "-m", "harness.cli", "run", str(suite), "--results-dir", str(results)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the test then finds every process Ray started below the driver
        )
        try:
            reached = Path(f"{hold}.reached")
            finished = lambda: len(list((results / "raystop").glob("*.parquet"))) == 1  # noqa: E731
            _wait_for(lambda: (reached.exists() and finished()) or driver.poll() is not None, 180, "tiny to finish")
            assert driver.poll() is None, (tmp_path / "driver.log").read_text()
            processes = _children(driver.pid)
            driver.send_signal(signal.SIGTERM)
            assert driver.wait(timeout=90) == 130, (tmp_path / "driver.log").read_text()
        finally:
            if driver.poll() is None:
                os.killpg(driver.pid, signal.SIGKILL)
    output = (tmp_path / "driver.log").read_text()
    assert "suite raystop: 1 not run, 1 ok" in output and "interrupted: finished runs are kept" in output
    _wait_for(lambda: not any(_alive(pid) for pid in processes), 30, f"Ray's processes {processes} to end")
    assert [row["model"] for row in _rows(results, "raystop").values()] == ["tiny"]


# --- units: no worker processes -------------------------------------------------------------------------------


def test_a_slurm_time_limit_that_leaves_no_training_before_usr2_is_refused():
    pytest.importorskip("submitit")
    refused = r"timeout_min=2 \(120 s\) leaves 30 s before Slurm's USR2 at signal_delay_s=90"
    with pytest.raises(UsageError, match=refused):
        Registry.from_plugins().create("executor", "submitit", timeout_min=2)
    Registry.from_plugins().create("executor", "submitit", timeout_min=2, signal_delay_s=30)  # 90 s to train


def test_slurm_is_detected_from_a_working_sinfo_not_from_sbatch_on_path(tmp_path, monkeypatch):
    from harness_executors import slurm

    for name, code in (("sinfo", 1), ("sbatch", 0), ("squeue", 1)):  # a client without a reachable controller
        (tmp_path / name).write_text(f"#!/bin/sh\necho 'cannot reach slurmctld' >&2\nexit {code}\n")
        (tmp_path / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert not slurm.slurm_answers()
    assert slurm.listed_jobs(["12_0"]) is None, "squeue that cannot answer: no judgement from it"
    (tmp_path / "sinfo").write_text("#!/bin/sh\necho debug\n")
    assert slurm.slurm_answers()


def test_a_slurm_job_is_judged_only_once_squeue_no_longer_lists_it(monkeypatch):
    from harness_executors import slurm

    class Job:
        def __init__(self, job_id):
            self.job_id = job_id

        def done(self):  # what sacct says of a cancelled task during KillWait: over
            return True

    jobs = [Job("7_0"), Job("7_1")]
    monkeypatch.setattr(slurm, "listed_jobs", lambda ids: {"7_0"})  # still completing
    assert slurm._ended_jobs(jobs, slurm=True) == {"7_1"}
    monkeypatch.setattr(slurm, "listed_jobs", lambda ids: None)  # squeue cannot tell: submitit's view
    assert slurm._ended_jobs(jobs, slurm=True) == {"7_0", "7_1"}


@pytest.mark.parametrize(("name", "extra"), [("submitit", "slurm"), ("ray", "ray")])
def test_a_missing_backend_says_which_extra_to_install(monkeypatch, name, extra):
    monkeypatch.setitem(sys.modules, name, None)  # import fails as if it were not installed
    with pytest.raises(PluginError, match=re.escape(f'pip install -e ".[{extra}]"')):
        Registry.from_plugins().create("executor", name)


def test_gpus_and_threads_are_split_between_workers(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert visible_gpus("auto") == ["2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus("auto") == []
    assert visible_gpus("0, 1") == ["0", "1"] and visible_gpus("") == [] and visible_gpus([4]) == ["4"]
    assert LocalExecutor(workers=2).threads == max(1, available_cpus() // 2)
    assert LocalExecutor(workers=2, threads_per_worker=3).threads == 3


def test_an_unwritable_results_dir_is_refused_before_anything_trains(test_plugin, tmp_path, capsys):
    suite = _suite(tmp_path, "unwritable", "[tiny]")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["run", str(suite), "--results-dir", str(blocker)]) == 2
    error = capsys.readouterr().err
    assert f"cannot write results to {blocker / 'unwritable'}" in error and "Traceback" not in error
    assert main(["run", str(suite), "--results-dir", str(tmp_path / "out"), "--nproc", "0"]) == 2  # as --set nproc=0
    assert "nproc: 0 is invalid; expected an integer >= 1" in capsys.readouterr().err


def test_sigterm_is_handled_during_a_run_from_the_main_thread_and_run_works_from_others():
    from harness.cli import _terminate_as_interrupt

    before = signal.getsignal(signal.SIGTERM)
    with _terminate_as_interrupt():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before
    errors: list[BaseException] = []

    def elsewhere() -> None:
        try:
            with _terminate_as_interrupt():
                pass
        except BaseException as error:  # signal.signal raises ValueError outside the main thread
            errors.append(error)

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join()
    assert not errors


def test_a_worker_gets_one_gpu_per_rank_and_none_when_the_run_names_its_device():
    def run(device="cuda", nproc=1):
        return types.SimpleNamespace(device=device, nproc=nproc)

    gpus = ["0", "1", "2", "3"]
    assert [gpu_mask(gpus, slot, run()) for slot in range(5)] == ["0", "1", "2", "3", "0"]
    assert [gpu_mask(gpus, slot, run(nproc=2)) for slot in range(3)] == ["0,1", "2,3", "0,1"]  # ranks take cuda:<rank>
    assert gpu_mask(gpus, 0, run(nproc=5)) is None  # more ranks than GPUs: the worker sees them all
    assert gpu_mask(gpus, 1, run(device="cuda:3")) is None  # GPU 3 as the machine numbers it
    assert gpu_mask([], 0, run()) is None


def test_a_forked_worker_has_the_drivers_environment_and_path_of_when_its_run_started(test_plugin, tmp_path):
    first = _suite(tmp_path, "first", "[tiny]", executor="{name: local, start_method: forkserver}")
    assert _run(str(first), "--results-dir", str(tmp_path / "out"))[0] == 0  # the forkserver is running now
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "executor_test_mark.py").write_text("VALUE = 'from-the-new-path'\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(modules))
        patch.setenv("EXECUTOR_TEST_MARK", "set-after-the-server-started")
        second = _suite(tmp_path, "second", "[marked]", executor="{name: local, start_method: forkserver}")
        code, out = _run(str(second), "--results-dir", str(tmp_path / "out"))
    assert code == 0, out
    log = next((tmp_path / "out" / "second" / "logs").glob("*.log")).read_text()
    assert "worker mark: set-after-the-server-started from-the-new-path" in log


def test_the_forkserver_preloads_the_suites_modules_that_import(monkeypatch):
    from harness_executors import local

    monkeypatch.setattr(local, "worker_modules", lambda runs, registry: ["torch", "json", "no_such_module_x1"])
    assert local.preload_modules([], []) == ["torch", "json", *local.FORKSERVER_PRELOAD]
    auto = LocalExecutor()
    assert auto.start_method == ("forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn")
    with pytest.raises(UsageError, match=r"start_method='fork'; expected one of \('auto', 'spawn', 'forkserver'\)"):
        LocalExecutor(start_method="fork")


NO_CUDA_AT_IMPORT = """
import glob, importlib, sys, torch
queried = []
if hasattr(torch._C, "_cuda_getDeviceCount"):  # CUDA builds: count who asks for devices (cuInit; breaks a fork)
    count = torch._C._cuda_getDeviceCount
    torch._C._cuda_getDeviceCount = lambda: queried.append(1) or count()
from harness.execution import worker_modules
from harness.plugins import Registry
from harness.suite import load_suite
from harness_executors.local import FORKSERVER_PRELOAD
registry = Registry.from_plugins()
modules = set(FORKSERVER_PRELOAD)
for path in glob.glob(sys.argv[1] + "/*.yaml"):
    modules.update(worker_modules(load_suite(path, registry).runs, registry))
for name in sorted(modules):
    importlib.import_module(name)
print(len(modules), "modules imported;", len(queried), "CUDA device queries;", torch.cuda.is_initialized())
"""


def test_importing_what_the_forkserver_preloads_never_touches_cuda():
    # A server that initialized CUDA would hand every forked worker a broken CUDA driver (GPU runs fail).
    suites = Path(__file__).resolve().parents[1] / "suites"
    done = subprocess.run(
        [sys.executable, "-c", NO_CUDA_AT_IMPORT, str(suites)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    count, _, rest = done.stdout.strip().partition(" modules imported; ")
    assert int(count) > 20 and rest == "0 CUDA device queries; False", done.stdout


def test_worker_modules_are_the_cores_and_the_lazy_factories_of_the_runs(test_plugin, tmp_path):
    registry = Registry.from_plugins()
    suite = write_suite(
        tmp_path / "modules.yaml",
        """
        name: modules
        methods: [sam, gsam]
        models: [small-cnn, tiny]
        datasets: [digits]
        """,
    )
    runs = load_suite(suite, registry).runs
    listed = worker_modules(runs, registry)
    assert listed[: len(RUN_MODULES)] == list(RUN_MODULES)
    components = {"harness_sam.sam", "harness_sam.gsam", "harness_schedules.basic", "harness_schedules.lr_linked"}
    components |= {"harness_vision.small_models", "harness_vision.digits"}  # tiny's factory is a callable
    assert set(listed[len(RUN_MODULES) :]) == components and len(listed) == len(set(listed))


def test_exit_causes_name_the_signal():
    assert exit_cause(-9).startswith("worker process killed by signal 9 (SIGKILL)")
    assert exit_cause(-15) == "worker process killed by signal 15 (SIGTERM)"
    assert exit_cause(3) == "worker process exited with code 3"
