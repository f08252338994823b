"""The report as a paper's reader needs it: ties marked as ties, intervals no wider than the quantity allows,
memory on CPU, learning curves on a scale that shows the final differences."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection

from harness.cli import main
from harness.report.figures import bounded_error, method_colors, suite_figures
from harness.report.seed_statistics import ACCURACY_BOUNDS, describe
from harness.results.store import write_run

from .test_report import DATASET, MODEL, SUITE, markdown_tables, run_row


def report_rows(tmp_path, accuracies: dict[str, list[float]], **extra) -> dict[str, dict[str, str]]:
    """Write runs of ``accuracies`` (method -> one accuracy per seed) at noise 0, report them, and return the
    summary's cells by method (every summary table's together)."""
    for method, values in accuracies.items():
        for seed, acc in enumerate(values):
            write_run(tmp_path / "results", SUITE, run_row(method, 0.0, seed, acc, **extra), [])
    assert main(["report", str(tmp_path / "results" / SUITE), "-o", str(tmp_path / "out")]) == 0
    rows: dict[str, dict[str, str]] = {}
    for table in markdown_tables((tmp_path / "out" / "report.md").read_text(), "| dataset "):
        for row in table:
            rows.setdefault(row["method"], {}).update(row)
    return rows


def test_equal_best_means_are_both_marked(tmp_path):
    sam, asam = [0.91, 0.92, 0.97], [0.97, 0.92, 0.91]  # the same values, summed in another order
    rows = report_rows(tmp_path, {"erm": [0.90, 0.91, 0.92], "sam": sam, "asam": asam})
    summary = pd.read_parquet(tmp_path / "out" / "summary.parquet").set_index("method")
    means = summary["test_acc_mean"]
    assert means["sam"] != means["asam"]  # the float means differ in the last bit: a tie only as shown
    cells = {method: row["test acc % (mean +- std)"] for method, row in rows.items()}
    assert cells["sam"] == cells["asam"] == f"**{100 * np.mean(sam):.2f} +- {100 * np.std(sam, ddof=1):.2f}**"
    assert not cells["erm"].startswith("**")
    assert summary["best"].to_dict() == {"asam": True, "erm": False, "sam": True}


def test_an_accuracy_interval_stops_at_100_percent_and_two_seeds_are_called_wide(tmp_path):
    rows = report_rows(tmp_path, {"erm": [0.90, 0.91, 0.92], "sam": [0.99, 0.999]})
    values = np.array([0.99, 0.999])
    half = describe(values).ci95
    assert values.mean() + half > 1.0  # the t interval of two seeds reaches past 100%
    assert rows["sam"]["95% CI %"] == f"[{100 * (values.mean() - half):.2f}, 100.00] (n=2: wide)"
    assert rows["erm"]["95% CI %"].endswith("]")  # three seeds: no mark
    summary = pd.read_parquet(tmp_path / "out" / "summary.parquet").set_index("method")
    assert summary.loc["sam", "test_acc_ci95_high"] == 1.0
    assert summary.loc["sam", "test_acc_ci95"] == pytest.approx(half)  # the half-width as computed


def test_sample_bounds_clip_the_interval_ends_only():
    sample = describe([0.001, 0.03], ACCURACY_BOUNDS)
    assert sample.ci95_low == 0.0 and sample.ci95_high == pytest.approx(sample.mean + sample.ci95)
    unbounded = describe([0.001, 0.03])
    assert unbounded.ci95_low == pytest.approx(sample.mean - sample.ci95) and unbounded.ci95_low < 0


def test_bounded_error_bars_stop_at_the_bounds():
    errors = bounded_error([99.0, 50.0, 1.0], [3.0, 3.0, float("nan")], (0.0, 100.0))
    np.testing.assert_array_equal(errors, [[3.0, 3.0, np.nan], [1.0, 3.0, np.nan]])  # lower, upper; NaN: no bar


def summary_frame(**columns) -> pd.DataFrame:
    """A one-condition summary of erm and sam with the columns the suite figures read."""
    base = {
        "suite": SUITE,
        "dataset": DATASET,
        "model": MODEL,
        "noise_rate": 0.0,
        "method": ["erm", "sam"],
        "test_acc_mean": [0.97, 0.99],
        "test_acc_std": [0.05, 0.05],
        "train_time_s_mean": [1.0, 2.0],
        "train_time_s_std": [3.0, 0.1],
        "sam_fraction_mean": [0.0, 1.0],
        "optimizer_state_bytes_mean": [2**20, 2 * 2**20],
        "peak_device_bytes_mean": [np.nan, np.nan],
        "peak_rss_bytes_mean": [300 * 2**20, 320 * 2**20],
    }
    return pd.DataFrame({**base, **columns})


def figure(plots, prefix: str):
    (plot,) = [p for p in plots if p.name.startswith(prefix)]
    return plot.figure


def no_history() -> pd.DataFrame:
    return pd.DataFrame(columns=["source", "run_id", "epoch"])


def test_error_bars_never_leave_what_accuracy_and_time_can_be():
    summary = summary_frame()
    plots = suite_figures(summary, pd.DataFrame(columns=["status"]), no_history(), method_colors(["erm", "sam"]))
    (ax,) = figure(plots, "accuracy_vs_time").axes
    segments = np.array([s for c in ax.collections if isinstance(c, LineCollection) for s in c.get_segments()])
    ys, xs = segments[:, :, 1], segments[:, :, 0]
    assert ys.max() == pytest.approx(100.0) and ys.min() == pytest.approx(92.0)  # 99 + 5 stops at 100
    assert xs.min() == 0.0  # erm's time 1 - 3 stops at 0


def test_the_memory_figure_shows_peak_rss_where_the_device_has_no_memory():
    summary = summary_frame()
    plots = suite_figures(summary, pd.DataFrame(columns=["status"]), no_history(), method_colors(["erm", "sam"]))
    state, rss = figure(plots, "memory").axes
    assert state.get_title().endswith("optimizer state") and state.get_xlabel() == "MiB"
    assert rss.get_title().endswith("peak RSS (no device memory: CPU)") and rss.get_xlabel() == "MiB"
    assert [bar.get_width() for bar in rss.patches] == [300.0, 320.0]
    with_device = summary_frame(peak_device_bytes_mean=[2**30, 2**30])
    plots = suite_figures(with_device, pd.DataFrame(columns=["status"]), no_history(), method_colors(["erm", "sam"]))
    assert figure(plots, "memory").axes[1].get_title().endswith("peak device memory")


def test_learning_curves_show_loss_on_a_log_scale_and_zoom_on_the_last_epochs():
    summary = summary_frame()
    runs = pd.DataFrame(
        {"source": "s", "run_id": ["e", "s"], "dataset": DATASET, "model": MODEL, "noise_rate": 0.0,
         "method": ["erm", "sam"], "status": "ok"}
    )  # fmt: skip
    epochs = np.arange(1, 11)
    history = pd.DataFrame(
        {"source": "s", "run_id": np.repeat(["e", "s"], 10), "epoch": np.tile(epochs, 2),
         "test_acc": np.concatenate([0.97 - 0.8 / epochs, 0.99 - 0.8 / epochs]),
         "train_loss": np.concatenate([2.0 / epochs, 1.0 / epochs])}
    )  # fmt: skip
    plots = suite_figures(summary, runs, history, method_colors(["erm", "sam"]))
    loss, accuracy = figure(plots, "learning_curves").axes
    assert (loss.get_title(), loss.get_yscale()) == ("train loss", "log")
    assert accuracy.get_title() == "test accuracy" and accuracy.get_yscale() == "linear"
    low, high = accuracy.get_ylim()
    late = 100 * np.array([0.97 - 0.8 / 6, 0.99 - 0.8 / 10])  # the last half of the epochs: 6 to 10
    assert late[0] - 5 < low < late[0] and late[1] < high <= 100  # the first epochs' 17% lies below the axis
