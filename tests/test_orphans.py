"""A driver killed with SIGKILL takes its workers, the forkserver and the resource tracker along; a driver
stopped with Ctrl-C takes the ranks of a DDP run along too.

The driver is a real ``harness run --workers 2`` in its own session; its runs use the executor tests'
``held`` model, which waits while a file exists. Once both runs are in flight the test kills the driver;
every process the driver started must end while the hold is still there (an orphaned worker would wait
on it, then train on and write its row once it is lifted).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness.results.store import suite_dir

from .conftest import write_suite
from .test_executors import _alive, _children, _wait_for, test_plugin  # noqa: F401  (test_plugin is a fixture)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the driver's processes through /proc"),
]


@pytest.mark.parametrize(
    ("start_method", "nproc", "stop"),
    [("forkserver", 1, "kill"), ("spawn", 1, "kill"), ("forkserver", 2, "kill"), ("forkserver", 2, "ctrl-c")],
    ids=["forkserver", "spawn", "ddp-ranks", "ddp-ranks-ctrl-c"],
)
def test_a_dead_or_interrupted_driver_leaves_no_process_behind(test_plugin, tmp_path, start_method, nproc, stop):  # noqa: F811
    hold = tmp_path / "hold"
    hold.touch()
    runs = 2 // nproc  # two workers, or one worker and its two DDP ranks
    suite = write_suite(
        tmp_path / "orphans.yaml",
        f"""
        name: orphans
        defaults: {{epochs: 1, batch_size: 256, nproc: {nproc}}}
        methods: [erm]
        models: [{{name: held, hold: {str(hold)!r}}}]
        datasets: [digits]
        seeds: {list(range(runs))}
        executor: {{name: local, start_method: {start_method}}}
        """,
    )
    results = tmp_path / "out"
    logs = suite_dir(results, "orphans") / "logs"
    command = [sys.executable, "-m", "harness.cli", "run", str(suite), "--results-dir", str(results), "--workers", "2"]
    with (tmp_path / "driver.log").open("w") as log:
        driver = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as a terminal's foreground job
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # not ignored as in a background job
        )
    tree: set[int] = set()

    def training() -> bool:
        return len(list(logs.glob("*.log"))) == runs and Path(f"{hold}.reached").exists()

    try:
        _wait_for(lambda: training() or driver.poll() is not None, 180, "the runs to train")
        assert driver.poll() is None, (tmp_path / "driver.log").read_text()
        tree = _children(driver.pid)
        assert len(tree) >= 3  # the resource tracker, two workers or a worker and its ranks, the forkserver if any
        if stop == "kill":
            driver.kill()
        else:
            os.killpg(driver.pid, signal.SIGINT)  # what Ctrl-C on a terminal sends to the foreground job
        assert driver.wait(timeout=60) == (-signal.SIGKILL if stop == "kill" else 130)
        _wait_for(lambda: not any(_alive(pid) for pid in tree), 20, f"the driver's processes {sorted(tree)} to end")
        hold.unlink()  # nothing is left to train on and write a row
    finally:
        for pid in tree:  # only on failure: processes this test started, by pid
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert not list(suite_dir(results, "orphans").glob("*.parquet"))
    assert not list((suite_dir(results, "orphans") / ".leases").glob("*.lease"))  # released as they stopped
