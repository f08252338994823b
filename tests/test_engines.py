"""Integration tests against real engines: a single-node Slurm cluster (engines/start_slurm.sh) and an external Ray
head (engines/start_ray.sh). ``.ci/run`` starts both; elsewhere (a laptop) these tests skip, saying why.

What they hold the executors to (issue: real engines, preemption-safe runs):
- the quickstart through Slurm and through the Ray head gives the local executor's rows, thread counts pinned alike
  (one torch thread per run everywhere: float reductions then do not depend on how the cores are split);
- ``scancel`` of one array task mid-run is recorded ``failed`` and stays failed, the other run finishes, and a rerun
  trains only that run, resuming from the checkpoint its SIGTERM wrote;
- SIGTERM to the driver of a Slurm or a Ray suite exits 130, leaves no job in ``squeue`` and no Ray task running,
  and keeps the finished rows;
- a run preempted mid-way (Slurm's USR2: checkpoint, then submitit requeues the job) resumes from its checkpoint and
  ends with the uninterrupted run's results.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from harness_executors.ray_tasks import _unreachable
from harness_executors.slurm import slurm_answers

from harness.results.read import read_history, read_runs

from .conftest import write_suite
from .test_executors import _wait_for

RAY_ADDRESS_FILE = Path(os.environ.get("HARNESS_RAY_DIR", "/tmp/harness-ray")) / "address"


def _ray_address() -> str:
    try:
        address = RAY_ADDRESS_FILE.read_text().strip()
    except OSError:
        return ""
    return address if address and not _unreachable(address) else ""


SLURM_UP = shutil.which("sinfo") is not None and slurm_answers()
RAY_ADDRESS = _ray_address()
slurm = pytest.mark.skipif(
    not SLURM_UP, reason="no Slurm controller answers sinfo here; engines/start_slurm.sh starts one (CI does)"
)
ray_head = pytest.mark.skipif(
    not RAY_ADDRESS, reason=f"no Ray head at the address in {RAY_ADDRESS_FILE}; engines/start_ray.sh starts one"
)
pytestmark = pytest.mark.slow

LOCAL = "{name: local, workers: 1, threads_per_worker: 1}"
SLURM = "{name: submitit, cluster: slurm, cpus_per_task: 1, timeout_min: 10, array_parallelism: %d}"
#: The quickstart, one seed and 5 epochs (its runs compared, not its accuracy).
QUICK = ("--set", "seeds=[0]", "--set", "epochs=5")
REPRODUCED = ("status", "steps", "grad_evals", "perturbed_steps", "train_loss", "test_loss", "test_acc")
#: Two runs long enough to cancel, stop or preempt one mid-way with seconds to spare, under CI load too: on one
#: thread of this 2-core machine erm trains for about 6 s and sam for about 12 s (100 epochs of 0.06 and 0.12 s; at
#: 15 epochs sam ended within a second of its second epoch, and the preemption signal once arrived too late).
LONG = """
    name: {name}
    defaults: {{epochs: 100, batch_size: 32}}
    methods: [erm, sam]
    models: [mlp]
    datasets: [digits]
    seeds: [0]
"""


def _ray(concurrent: int = 0) -> str:
    return f"{{name: ray, address: '{RAY_ADDRESS}', num_cpus: 1, max_concurrent: {concurrent}}}"


def _harness(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", *argv], capture_output=True, text=True, timeout=600
    )


def _driver(log: Path, *argv: str) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "harness.cli", "run", *argv], stdout=out, stderr=subprocess.STDOUT
        )


def _rows(folder: Path) -> dict[str, dict]:
    return {row["method"]: row for row in read_runs(folder).to_dict("records")}


def _epochs_logged(results: Path, suite: str, method: str) -> int:
    """The last epoch a run's log reports (``harness.execution.worker_log``)."""
    epochs = [0]
    for log in (results / suite / "logs").glob(f"{method}-*.log"):
        epochs += [int(number) for number in re.findall(r"^epoch (\d+)/", log.read_text(), re.MULTILINE)]
    return max(epochs)


def _jobs(name: str) -> list[str]:
    """The array tasks of the suite ``name`` that ``squeue`` lists (``harness-<suite>`` is the job name)."""
    command = ["squeue", "-h", "-r", "-n", f"harness-{name}", "-o", "%i %T"]
    listed = subprocess.run(command, capture_output=True, text=True)
    return [line.split()[0] for line in listed.stdout.splitlines() if line.strip()]


def _state(task: str) -> str:
    """The ``squeue`` state of one array task ("" once it is no longer listed)."""
    listed = subprocess.run(["squeue", "-h", "-r", "-j", task, "-o", "%i %T"], capture_output=True, text=True)
    return next((line.split()[1] for line in listed.stdout.splitlines() if line.split()[0] == task), "")


def _running_task(name: str, index: int) -> str:
    for job in _jobs(name):
        if job.endswith(f"_{index}"):
            return job
    return ""


def _ray_tasks_running() -> list[int]:
    """PIDs of Ray workers running a run (the worker retitles itself ``ray::run_worker``)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if cmdline.read_bytes().startswith(b"ray::run_worker"):
                found.append(int(cmdline.parent.name))
        except OSError:
            pass
    return found


def _same_rows(expected: Path, got: Path) -> None:
    want, have = _rows(expected), _rows(got)
    assert set(have) == set(want)
    for method, row in want.items():
        for column in REPRODUCED:
            assert have[method][column] == row[column], (method, column)
    curves = [read_history(folder).sort_values(["run_id", "epoch"]) for folder in (expected, got)]
    assert curves[0]["train_loss"].tolist() == curves[1]["train_loss"].tolist()


def _local_reference(path: str, folder: Path, *overrides: str) -> None:
    done = _harness(path, "--results-dir", str(folder), *overrides, "--set", f"executor={LOCAL}")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.skipif(not (SLURM_UP or RAY_ADDRESS), reason="no engine running (engines/start_slurm.sh, start_ray.sh)")
def test_the_quickstart_through_real_engines_gives_the_local_executors_rows(tmp_path):
    _local_reference("suites/quickstart.yaml", tmp_path / "local", *QUICK)
    engines = {"slurm": SLURM % 2} if SLURM_UP else {}
    engines |= {"ray": _ray()} if RAY_ADDRESS else {}
    for engine, executor in engines.items():
        folder = tmp_path / engine
        done = _harness("suites/quickstart.yaml", "--results-dir", str(folder), *QUICK, "--set", f"executor={executor}")
        assert done.returncode == 0 and "suite quickstart: 2 ok" in done.stdout, done.stdout + done.stderr
        _same_rows(tmp_path / "local" / "quickstart", folder / "quickstart")


@slurm
def test_a_cancelled_task_stays_failed_a_preempted_one_resumes_and_a_rerun_resumes_the_cancelled(tmp_path):
    """One array, two runs: ``scancel`` of erm's task (SIGTERM: checkpoint, no row: ``failed``, and it stays failed
    once the task is gone from squeue); USR2 to sam's task (what Slurm sends before the time limit and on preemption:
    checkpoint, submitit requeues the job, which resumes). Both end as the uninterrupted local runs do."""
    suite = write_suite(tmp_path / "preempted.yaml", LONG.format(name="preempted"))
    reference = write_suite(tmp_path / "long.yaml", LONG.format(name="long"))
    _local_reference(str(reference), tmp_path / "local")
    args = (str(suite), "--results-dir", str(tmp_path), "--set", f"executor={SLURM % 2}")
    driver = _driver(tmp_path / "driver.log", *args)
    try:
        _wait_for(
            lambda: min(_epochs_logged(tmp_path, "preempted", method) for method in ("erm", "sam")) >= 2,
            240,
            "both runs' second epoch",
        )
        erm, sam = (_running_task("preempted", index) for index in (0, 1))  # task i trains the suite's i-th run
        assert erm and sam, _jobs("preempted")
        subprocess.run(["scancel", "--signal=USR2", sam], check=True)  # sam trains longer: signal it first
        subprocess.run(["scancel", erm], check=True)
        # slurmctld holds a requeued job back (BeginTime, about 2 minutes); a test need not wait that out
        _wait_for(lambda: _state(sam) in ("PENDING", "") or driver.poll() is not None, 120, "sam's job to be requeued")
        subprocess.run(["scontrol", "update", f"jobid={sam}", "StartTime=now"], capture_output=True)
        assert driver.wait(timeout=400) == 1, (tmp_path / "driver.log").read_text()
    finally:
        if driver.poll() is None:
            driver.kill()
    output = (tmp_path / "driver.log").read_text()
    assert "suite preempted: 1 failed, 1 ok" in output, output
    assert not _jobs("preempted"), "the driver judged the tasks only once squeue no longer listed them"
    time.sleep(3)  # anything still writing would overwrite the rows now
    rows = _rows(tmp_path / "preempted")
    assert rows["erm"]["status"] == "failed" and f"job {erm} ended in state" in rows["erm"]["error"]
    assert (rows["sam"]["status"], rows["sam"]["restarts"]) == ("ok", 1), "sam resumed from its checkpoint once"
    assert rows["sam"]["restart_time_s"] > 0
    assert [p.name.split("-")[0] for p in (tmp_path / "preempted" / "checkpoints").glob("*.pt")] == ["erm"]

    again = _harness(*args)
    assert again.returncode == 0 and "suite preempted: 1 ok; 1 already finished (skipped)" in again.stdout, again.stdout
    rows = _rows(tmp_path / "preempted")
    assert (rows["erm"]["status"], rows["erm"]["restarts"]) == ("ok", 1), "the rerun trained erm from its checkpoint"
    assert not list((tmp_path / "preempted" / "checkpoints").glob("*.pt"))
    _same_rows(tmp_path / "local" / "long", tmp_path / "preempted")  # both resumed bit for bit


@slurm
def test_sigterm_to_a_slurm_driver_exits_130_cancels_its_jobs_and_keeps_finished_rows(tmp_path):
    suite = write_suite(tmp_path / "slurmstop.yaml", LONG.format(name="slurmstop"))
    driver = _driver(
        tmp_path / "driver.log", str(suite), "--results-dir", str(tmp_path), "--set", f"executor={SLURM % 1}"
    )
    try:
        _wait_for(lambda: _epochs_logged(tmp_path, "slurmstop", "sam") >= 2, 240, "sam's second epoch (erm done)")
        driver.send_signal(signal.SIGTERM)
        assert driver.wait(timeout=120) == 130, (tmp_path / "driver.log").read_text()
    finally:
        if driver.poll() is None:
            driver.kill()
    output = (tmp_path / "driver.log").read_text()
    assert "suite slurmstop: 1 not run, 1 ok" in output and "interrupted: finished runs are kept" in output, output
    assert not _jobs("slurmstop"), "no job of the suite left in squeue"
    assert list(_rows(tmp_path / "slurmstop")) == ["erm"]


@ray_head
def test_sigterm_to_a_driver_on_a_ray_cluster_exits_130_and_leaves_no_task_running(tmp_path):
    suite = write_suite(tmp_path / "raystop.yaml", LONG.format(name="raystop"))
    args = (str(suite), "--results-dir", str(tmp_path), "--set", f"executor={_ray(1)}")
    driver = _driver(tmp_path / "driver.log", *args)
    try:
        _wait_for(lambda: _epochs_logged(tmp_path, "raystop", "sam") >= 2, 240, "sam's second epoch (erm done)")
        assert _ray_tasks_running()
        driver.send_signal(signal.SIGTERM)
        assert driver.wait(timeout=120) == 130, (tmp_path / "driver.log").read_text()
    finally:
        if driver.poll() is None:
            driver.kill()
    output = (tmp_path / "driver.log").read_text()
    assert "suite raystop: 1 not run, 1 ok" in output and "interrupted: finished runs are kept" in output, output
    _wait_for(lambda: not _ray_tasks_running(), 30, "the cancelled Ray task's worker to end")
    assert list(_rows(tmp_path / "raystop")) == ["erm"]
