"""The report's cost table per k (``harness.report.costs``): seconds per epoch and the ratio to ERM, by hand."""

from __future__ import annotations

import pandas as pd

from harness.report.costs import cost_frame, cost_table


def rows(method: str, k: float | None, times: list[float], epochs: int = 4) -> list[dict]:
    return [
        dict(suite="s", dataset="digits", model="cnn", noise_rate=0.0, method=method, status="ok", seed=seed,
             train_time_s=t, epochs_completed=epochs, p_scheduler_k=k)
        for seed, t in enumerate(times)
    ]  # fmt: skip


def test_seconds_per_epoch_and_the_ratio_to_erm_per_k():
    runs = pd.DataFrame(
        rows("erm", None, [4.0, 4.4])
        + rows("looksam", 5.0, [4.8, 5.2])
        + rows("sam-k", 2.0, [6.0, 6.0])
        + rows("erm (tuned)", None, [8.0, 8.0])
        + rows("looksam (tuned)", 5.0, [10.0, 10.0])
    )
    table = cost_table(cost_frame(runs))
    by_method = {row[1]: row for row in table.rows}
    assert by_method["looksam"][2:] == ["5", "1.250", "1.050", f"{1.25 / 1.05:.3f}", "1.200", "2"]
    assert by_method["sam-k"][5:7] == [f"{1.5 / 1.05:.3f}", "1.500"]
    assert by_method["looksam (tuned)"][4:6] == ["2.000", "1.250"]  # against ERM's finals, not its fixed runs


def test_no_table_without_a_periodic_method_or_erm():
    assert cost_table(cost_frame(pd.DataFrame(rows("erm", None, [4.0])))) is None
    assert cost_table(cost_frame(pd.DataFrame(rows("looksam", 5.0, [4.0])))) is None
