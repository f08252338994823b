"""End to end through the CLI: Parquet files, counts, resume, failures and divergence recorded."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from harness.cli import main
from harness.plugins import Registry
from harness.results.read import read_history, read_runs
from harness.results.store import HISTORY_SCHEMA
from harness.run.divergence import CHECK_EVERY
from harness.run.source import source_commit

from .conftest import write_suite

QUICKSTART = Path(__file__).resolve().parents[1] / "suites" / "quickstart.yaml"
REQUIRED_COLUMNS = (
    "run_id suite method optimizer scheduler model dataset noise_rate seed epochs steps status error test_acc "
    "best_test_acc train_loss train_time_s step_time_median_s sam_fraction grad_evals optimizer_state_bytes "
    "peak_rss_bytes peak_device_bytes device torch_version harness_version started_at finished_at"
).split()

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quickstart_results(tmp_path_factory) -> tuple[Path, int]:
    results = tmp_path_factory.mktemp("results")
    code = main(["run", str(QUICKSTART), "--results-dir", str(results), "--set", "epochs=2", "--set", "seeds=[0, 1]"])
    return results, code


def test_quickstart_writes_parquet_with_the_required_columns(quickstart_results):
    results, code = quickstart_results
    assert code == 0
    runs = read_runs(results / "quickstart")
    assert len(runs) == 4 and set(runs["status"]) == {"ok"}
    assert set(REQUIRED_COLUMNS) <= set(runs.columns)
    assert set(runs["git_commit"].dropna()) <= {source_commit()}  # None: not run from a git checkout
    assert sorted(p.stem for p in (results / "quickstart").glob("*.parquet")) == sorted(runs["run_id"])
    assert not list((results / "quickstart").rglob("*.tmp"))
    assert runs["test_acc"].between(0, 1).all() and (runs["test_acc"] > 0.5).all()
    assert (runs["best_test_acc"] >= runs["test_acc"]).all()
    assert (runs["train_time_s"] > 0).all() and (runs["step_time_median_s"] > 0).all()
    assert (runs["optimizer_state_bytes"] > 0).all() and (runs["peak_rss_bytes"] > 0).all()
    assert runs["peak_device_bytes"].isna().all()  # CPU: no device memory to report
    history = read_history(results / "quickstart")
    assert set(HISTORY_SCHEMA.names) <= set(history.columns)
    assert sorted(history.groupby("run_id").size().tolist()) == [2, 2, 2, 2]  # one row per epoch


def test_quickstart_counts_sam_fraction_and_gradient_evaluations(quickstart_results):
    results, _ = quickstart_results
    runs = read_runs(results / "quickstart").set_index("method")
    erm, sam = runs.loc["erm"], runs.loc["sam"]
    steps = 2 * (1437 // 64)  # 2 epochs of full batches of digits' 1437 training images
    assert (erm["steps"] == steps).all() and (sam["steps"] == steps).all()
    assert (erm["sam_fraction"] == 0).all() and (sam["sam_fraction"] == 1).all()
    assert (erm["grad_evals"] == erm["steps"]).all() and (sam["grad_evals"] == 2 * sam["steps"]).all()
    # SAM holds a copy of the weights on top of the momentum buffers ERM holds.
    assert (sam["optimizer_state_bytes"].to_numpy() == 2 * erm["optimizer_state_bytes"].to_numpy()).all()


def test_a_second_run_trains_nothing_and_rerun_forces(quickstart_results, capsys, monkeypatch):
    results, _ = quickstart_results
    before = {p.name: p.stat().st_mtime_ns for p in (results / "quickstart").glob("*.parquet")}
    capsys.readouterr()
    args = ["run", str(QUICKSTART), "--results-dir", str(results), "--set", "epochs=2", "--set", "seeds=[0, 1]"]
    assert main(args) == 0
    assert "4 already finished (skipped)" in capsys.readouterr().out
    assert before == {p.name: p.stat().st_mtime_ns for p in (results / "quickstart").glob("*.parquet")}
    assert main([*args, "--set", "methods=[erm]", "--set", "seeds=[0]", "--rerun"]) == 0
    after = {p.name: p.stat().st_mtime_ns for p in (results / "quickstart").glob("*.parquet")}
    assert sum(after[name] != before[name] for name in before) == 1


def test_report_prints_accuracy_per_method(quickstart_results, capsys):
    results, _ = quickstart_results
    capsys.readouterr()
    assert main(["report", str(results / "quickstart")]) == 0
    out = capsys.readouterr().out
    runs = read_runs(results / "quickstart")
    sam = runs[runs["method"] == "sam"]["test_acc"]
    assert f"{100 * sam.mean():.2f} +- {100 * sam.std():.2f}" in out
    assert "| erm " in out and "%SAM" in out


FAULTY_PLUGIN = """
import torch
from torch import nn
from harness import ModelSpec, OptimizerSpec, PresetSpec, hookimpl
from harness_sam.sam import SAM


class Exploding(SAM):
    '''SAM that writes NaN into the weights after its third step.'''

    def step(self, closure=None):
        loss = super().step(closure)
        if self.steps_taken == 3:
            with torch.no_grad():
                for p in self._params:
                    p.fill_(float("nan"))
        return loss


def crashing_model(*, num_classes, input_shape):
    raise RuntimeError("this model cannot be built")


@hookimpl
def register_optimizers():
    return [OptimizerSpec("exploding", Exploding, defaults={"eps": 1e-12})]


@hookimpl
def register_models():
    return [ModelSpec("crashing", crashing_model)]


@hookimpl
def register_presets():
    return [PresetSpec("exploding", optimizer="exploding", scheduler_params={"rho": 0.05})]
"""


def test_failed_and_diverged_runs_are_recorded_and_the_suite_goes_on(tmp_path, add_entry_points, capsys):
    add_entry_points({"faulty": FAULTY_PLUGIN})
    suite = write_suite(
        tmp_path / "faults.yaml",
        """
        name: faults
        defaults: {epochs: 2, batch_size: 128}
        methods: [erm, exploding]
        models: [mlp, crashing]
        datasets: [digits]
    """,
    )
    assert main(["run", str(suite), "--results-dir", str(tmp_path / "out")]) == 1
    runs = read_runs(tmp_path / "out" / "faults").set_index(["method", "model"])
    assert runs.loc[("erm", "mlp"), "status"] == "ok"
    assert runs.loc[("exploding", "mlp"), "status"] == "diverged"
    assert "non-finite" in runs.loc[("exploding", "mlp"), "error"]
    # NaN weights after step 3 give a NaN loss at step 4: noticed at the next check (step 8 of the 11 steps
    # of an epoch here), not at the end of the epoch.
    assert runs.loc[("exploding", "mlp"), "steps"] == CHECK_EVERY
    assert f"at one of steps 1-{CHECK_EVERY}" in runs.loc[("exploding", "mlp"), "error"]
    for method in ("erm", "exploding"):
        assert runs.loc[(method, "crashing"), "status"] == "failed"
        assert "RuntimeError: this model cannot be built" in runs.loc[(method, "crashing"), "error"]
    out = capsys.readouterr().out
    assert "1 diverged, 2 failed, 1 ok" in out
    # A rerun retries the failed runs only: ok and diverged are final answers.
    capsys.readouterr()
    assert main(["run", str(suite), "--results-dir", str(tmp_path / "out")]) == 1
    assert "2 failed; 2 already finished (skipped)" in capsys.readouterr().out


def test_lifecycle_hooks_see_every_run_and_step(tmp_path, add_entry_points):
    log = tmp_path / "events.txt"
    add_entry_points(
        {
            "observer": f"""
        from harness import hookimpl

        def _write(line):
            with open({str(log)!r}, "a") as stream:
                stream.write(line + "\\n")

        @hookimpl
        def run_started(run):
            _write(f"started {{run.run_id}}")

        @hookimpl
        def step_finished(run, step, info):
            _write(f"step {{run.method}} {{step}} {{info.perturbed}}")

        @hookimpl
        def run_finished(run, result):
            _write(f"finished {{run.run_id}} {{result['status']}} {{result['steps']}}")
    """
        }
    )
    suite = write_suite(
        tmp_path / "hooks.yaml",
        """
        name: hooks
        defaults: {epochs: 1, batch_size: 512}
        methods: [erm, sam]
        models: [mlp]
        datasets: [digits]
    """,
    )
    assert main(["run", str(suite), "--results-dir", str(tmp_path / "out")]) == 0
    lines = log.read_text().splitlines()
    runs = read_runs(tmp_path / "out" / "hooks")
    steps = 1437 // 512
    for run_id, method in zip(runs["run_id"], runs["method"], strict=True):
        assert f"started {run_id}" in lines and f"finished {run_id} ok {steps}" in lines
        perturbed = "True" if method == "sam" else "False"
        assert [line for line in lines if line.startswith(f"step {method} ")] == [
            f"step {method} {i} {perturbed}" for i in range(steps)
        ]


SMOKE = Path(__file__).resolve().parents[1] / "suites" / "sam_family_smoke.yaml"


def test_every_preset_runs_and_reports_its_sam_fraction(tmp_path):
    # the MLP, not the suite's CNN: what is checked is each preset's step accounting, at a tenth of the time
    assert main(["run", str(SMOKE), "--results-dir", str(tmp_path), "--set", "epochs=2", "--set", "models=[mlp]"]) == 0
    runs = read_runs(tmp_path / "sam_family_smoke").set_index("method")
    steps = 2 * (1437 // 64)
    assert (runs["steps"] == steps).all() and (runs["status"] == "ok").all()
    every_fifth = len(range(0, steps, 5)) / steps
    exact = {
        "erm": 0.0,
        "sam": 1.0,
        "asam": 1.0,
        "sam-pinf": 1.0,
        "random-sam": 1.0,
        "gsam": 1.0,
        "layersam": 1.0,
        "sam-k": every_fifth,
        "looksam": every_fifth,
        "look-layersam": every_fifth,
        "nusam": 1 - math.ceil(0.1 * steps) / steps,
        "sam-on": 1.0,
        "fsam": 1.0,
        "vasso": 1.0,
        "msam": 0.0,  # one pass a step, at the momentum-perturbed weights: no second pass
    }
    for method, fraction in exact.items():
        assert runs.loc[method, "sam_fraction"] == pytest.approx(fraction), method
    assert 0.25 <= runs.loc["ss-sam", "sam_fraction"] <= 0.75
    assert 0.0 < runs.loc["ae-sam", "sam_fraction"] < 1.0
    expected_evals = (runs["steps"] * (1 + runs["sam_fraction"])).round()
    expected_evals["esam"] = steps * 1.5  # its second pass is on gamma = half of the batch
    assert runs.loc["esam", "sam_fraction"] == 1.0
    assert (runs["grad_evals"] == expected_evals).all()
    registry_presets = set(Registry.from_plugins().names("preset"))
    assert registry_presets <= set(runs.index)  # the smoke suite covers every preset


def test_ctrl_c_while_the_suite_loads_exits_130_without_a_traceback(tmp_path, monkeypatch, capsys):
    import harness.suite

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(harness.suite, "load_suite", interrupted)
    assert main(["run", str(QUICKSTART), "--results-dir", str(tmp_path)]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "interrupted" and "Traceback" not in err
    assert not (tmp_path / "quickstart").exists()
