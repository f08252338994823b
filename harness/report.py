"""Results -> comparison tables. This first report prints test accuracy per method as Markdown.

For every condition (dataset, model, noise rate) and method: test accuracy mean and standard
deviation over seeds (as percentages), the number of seeds, %SAM, gradient evaluations and train
time. Only runs with status ``ok`` count; the others are tallied in a ``not ok`` column.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.errors import HarnessError
from harness.results import read_runs

CONDITION = ["dataset", "model", "noise_rate"]


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per condition and method, over the runs with status ``ok``."""
    ok = runs[runs["status"] == "ok"]
    grouped = ok.groupby([*CONDITION, "method"], sort=True)
    summary = grouped.agg(
        test_acc_mean=("test_acc", "mean"),
        test_acc_std=("test_acc", "std"),
        seeds=("seed", "nunique"),
        sam_fraction=("sam_fraction", "mean"),
        grad_evals=("grad_evals", "mean"),
        train_time_s=("train_time_s", "mean"),
    )
    not_ok = runs[runs["status"] != "ok"].groupby([*CONDITION, "method"]).size().rename("not_ok")
    return summary.join(not_ok, how="outer").fillna({"not_ok": 0}).reset_index()


def accuracy_table(folder: str | Path) -> str:
    """The Markdown table of ``harness report`` for one suite folder."""
    runs = read_runs(folder)
    if runs.empty:
        raise HarnessError(f"{folder}: no result files (*.parquet); run a suite first: harness run SUITE")
    summary = summarize(runs)
    table = pd.DataFrame(
        {
            "dataset": summary["dataset"],
            "model": summary["model"],
            "noise": summary["noise_rate"],
            "method": summary["method"],
            "test acc % (mean +- std)": [
                f"{100 * m:.2f} +- {100 * s:.2f}" if pd.notna(s) else (f"{100 * m:.2f}" if pd.notna(m) else "-")
                for m, s in zip(summary["test_acc_mean"], summary["test_acc_std"], strict=True)
            ],
            "seeds": summary["seeds"].fillna(0).astype(int),
            "%SAM": (100 * summary["sam_fraction"]).round(1),
            "grad evals": summary["grad_evals"].round(0),
            "train time s": summary["train_time_s"].round(2),
            "not ok": summary["not_ok"].astype(int),
        }
    )
    suite = runs["suite"].iloc[0]
    return f"## Suite {suite}\n\n" + table.to_markdown(index=False) + "\n"
