"""The step trace (``trace_every``): what it records, that it changes nothing that trains, and the figures
drawn from it (AE-SAM's threshold, GSAM's surrogate gap and angle) and from the runs (%SAM per epoch, extra
memory against accuracy, cost per k)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness import StepContext
from harness.cli import main
from harness.contract.run_spec import RunSpec
from harness.plugins import Registry
from harness.report.costs import cost_figure, cost_frame
from harness.report.figures import method_colors
from harness.report.training_figures import _epoch_shares
from harness.results.read import read_history, read_runs, read_steps, set_aside_damaged
from harness.run.trace import FIXED_COLUMNS

from .conftest import write_suite

pytestmark = pytest.mark.slow

SUITE = """
    name: traced
    defaults: {{epochs: 2, batch_size: 96, trace_every: {every}}}
    methods: [erm, sam, ae-sam, gsam, looksam]
    models: [mlp]
    datasets: [digits]
    seeds: [0]
"""
STEPS = 2 * (1437 // 96)


def _run(tmp_path: Path, every: int) -> Path:
    suite = write_suite(tmp_path / f"traced-{every}.yaml", SUITE.format(every=every))
    results = tmp_path / f"results-{every}"
    assert main(["run", str(suite), "--results-dir", str(results)]) == 0
    return results / "traced"


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[int, Path]:
    base = tmp_path_factory.mktemp("trace")
    return {every: _run(base, every) for every in (0, 1, 4)}


def test_tracing_changes_nothing_that_trains(folders):
    plain, traced = (read_runs(folders[n]).set_index("method") for n in (0, 1))
    for column in ("test_acc", "train_loss", "test_loss", "sam_fraction", "grad_evals", "perturbed_steps"):
        assert traced[column].to_dict() == plain[column].to_dict(), column
    curves = [read_history(folders[n]).set_index(["run_id", "epoch"]).sort_index() for n in (0, 1)]
    assert np.array_equal(curves[0]["train_loss"].to_numpy(), curves[1]["train_loss"].to_numpy())
    assert not (folders[0] / "steps").exists()  # trace_every: 0 writes no trace
    # the setting is in the run id only when it is set: untraced results keep the ids they had
    assert "trace_every" not in json.loads(plain["config"].iloc[0])
    assert json.loads(traced["config"].iloc[0])["trace_every"] == 1


def test_every_nth_step_is_traced_with_the_exact_running_sam_fraction(folders):
    every_step, every_fourth = read_steps(folders[1]), read_steps(folders[4])
    runs = read_runs(folders[1]).set_index("run_id")
    for run_id, rows in every_step.groupby("run_id"):
        rows = rows.sort_values("step")
        assert rows["step"].tolist() == list(range(1, STEPS + 1))
        assert rows["epoch"].tolist() == [1 + (s - 1) // (STEPS // 2) for s in rows["step"]]
        running = rows["perturbed"].cumsum() / rows["step"]
        assert np.allclose(rows["sam_fraction"], running, rtol=0, atol=1e-12)
        assert rows["perturbed"].sum() == runs.loc[run_id, "perturbed_steps"]
        assert (rows.loc[~rows["perturbed"], "rho"] == 0).all()
    assert sorted(set(every_fourth["step"])) == list(range(4, STEPS + 1, 4))
    # the fourth steps of the stride-4 trace are the same steps as in the stride-1 trace
    method = {f: read_runs(folders[f]).set_index("run_id")["method"] for f in (1, 4)}
    every_fourth["method"], every_step["method"] = (
        every_fourth["run_id"].map(method[4]),
        every_step["run_id"].map(method[1]),
    )
    both = every_fourth.merge(every_step, on=["method", "step"], suffixes=("", "_all"))
    assert len(both) == len(every_fourth)
    assert (both["perturbed"] == both["perturbed_all"]).all()
    assert np.allclose(both["grad_norm"], both["grad_norm_all"], rtol=0, atol=0, equal_nan=True)  # ERM: none


def test_ae_sam_s_trace_shows_its_rule(folders):
    trace = read_steps(folders[1])
    ae = trace[trace["run_id"].str.startswith("ae-sam-")].sort_values("step")
    assert {"grad_sq_norm", "threshold", "mu", "sigma", "c_t"} <= set(ae.columns)
    # AE-SAM perturbs exactly where ||g||^2 reaches the threshold mu + c_t sigma (001 Alg. 1)
    assert (ae["perturbed"] == (ae["grad_sq_norm"] >= ae["threshold"])).all()
    assert np.allclose(ae["threshold"], ae["mu"] + ae["c_t"] * ae["sigma"], rtol=1e-12)
    # the scheduler's s_t is the square of the optimizer's clean gradient norm
    assert np.allclose(ae["grad_sq_norm"], ae["grad_norm"] ** 2, rtol=1e-5)
    # c_t falls linearly from lambda2 = 1 to lambda1 = -1 over the run (step t = step number - 1)
    assert np.allclose(ae["c_t"], 1 - 2 * (ae["step"] - 1) / STEPS, rtol=0, atol=1e-12)
    erm = trace[trace["run_id"].str.startswith("erm-")]
    assert "threshold" not in erm.dropna(axis=1, how="all").columns and not erm["perturbed"].any()


def test_gsam_s_trace_holds_its_angle_and_the_surrogate_gap_of_perturbed_steps(folders):
    trace = read_steps(folders[1])
    gsam = trace[trace["run_id"].str.startswith("gsam-")]
    assert gsam["perturbed"].all()
    assert gsam["cos_g_gp"].between(-1 - 1e-6, 1 + 1e-6).all() and gsam["surrogate_gap"].notna().all()
    look = trace[trace["run_id"].str.startswith("looksam-")]
    # LookSAM perturbs every k = 5th step; the others reuse its stored direction and have no surrogate gap
    assert look["surrogate_gap"].notna().tolist() == look["perturbed"].tolist()


def test_the_report_draws_the_trace_figures_only_where_the_results_trace(folders, tmp_path):
    for every, expect_gsam in ((0, False), (1, True)):
        out = tmp_path / f"report-{every}"
        assert main(["report", str(folders[every]), "-o", str(out)]) == 0
        names = {p.name for p in out.glob("*.png")}
        html = (out / "report.html").read_text()
        assert any(n.startswith("gsam_diagnostics-") for n in names) is expect_gsam
        # %SAM per epoch varies for AE-SAM: its decision figure is drawn with or without the trace
        decisions = [n for n in names if n.startswith("sam_decisions-")]
        assert len(decisions) == 1 and decisions[0] in html
        assert any(n.startswith("extra_memory_vs_accuracy-") for n in names)
        assert any(n.startswith("cost_per_k-") for n in names)  # looksam (k = 5) beside ERM


def test_epoch_shares_follow_from_the_cumulative_sam_fraction():
    history = pd.DataFrame(
        {
            "source": "f",
            "run_id": "a",
            "dataset": "d",
            "model": "m",
            "noise_rate": 0.0,
            "method": "x",
            "seed": 0,
            "epoch": [1, 2, 3],
            "step": [10, 20, 30],
            "sam_fraction": [0.1, 0.3, 0.5],  # 1, then 5, then 9 of 10 steps perturbed
        }
    )
    assert np.allclose(_epoch_shares(history)["epoch_share"], [0.1, 0.5, 0.9])


def test_cost_figure_one_per_suite_a_panel_per_condition():
    runs = pd.DataFrame(
        {
            "suite": "s",
            "dataset": "d",
            "model": "m",
            "noise_rate": [0.0, 0.0, 0.5, 0.5],
            "method": ["erm", "looksam", "erm", "looksam"],
            "status": "ok",
            "train_time_s": [10.0, 12.0, 10.0, 13.0],
            "epochs_completed": 2,
            "p_scheduler_k": [None, 5.0, None, 5.0],
        }
    )
    frame = cost_frame(runs)
    assert frame["ratio"].tolist() == [1.2, 1.3]
    (plot,) = cost_figure(frame, method_colors(runs["method"]))
    assert plot.name == "cost_per_k-s.png" and len([a for a in plot.figure.axes if a.get_visible()]) == 2


def test_trace_every_must_be_a_whole_number_of_steps(tmp_path, capsys):
    suite = write_suite(tmp_path / "bad.yaml", SUITE.format(every=-1))
    assert main(["validate", str(suite)]) == 2
    assert "defaults.trace_every" in capsys.readouterr().err


def test_a_damaged_step_trace_is_set_aside_with_its_run(folders, tmp_path):
    import shutil

    folder = tmp_path / "copy" / "traced"
    shutil.copytree(folders[4], folder)
    victim = next((folder / "steps").glob("gsam-*.parquet"))
    victim.write_bytes(b"not parquet")
    moved = {m.path.name for m in set_aside_damaged(folder.parent, "traced")}
    assert moved == {victim.name}  # the step file and the run file of the same name
    assert not victim.exists() and not (folder / victim.name).exists()


def test_delayed_reports_its_inner_scheduler_s_diagnostics_once_it_decides():
    scheduler = Registry.from_plugins().create(
        "scheduler", "delayed", fraction=0.5, inner="adaptive", inner_params={"rho": 0.05}
    )
    ctx = StepContext(step=0, total_steps=4, lr=0.1, grad_sq_norm=2.0, lr_min=0.0, lr_max=0.1)
    scheduler.decide(ctx)
    assert scheduler.diagnostics() == {}
    scheduler.decide(StepContext(step=3, total_steps=4, lr=0.1, grad_sq_norm=2.0, lr_min=0.0, lr_max=0.1))
    values = scheduler.diagnostics()
    assert values["grad_sq_norm"] == 2.0 and math.isfinite(values["threshold"])


def test_the_trace_s_own_columns_are_the_declared_ones():
    assert FIXED_COLUMNS == ("run_id", "step", "epoch", "perturbed", "rho", "sam_fraction")
    assert RunSpec.__dataclass_fields__["trace_every"].default == 0
