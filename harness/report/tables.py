"""The summary and the failed runs as tables of display strings, rendered by both the Markdown and the HTML report.

Accuracies are shown as percentages with two decimals (``PERCENT``: the fraction columns every report and
``harness compare`` show so), times in seconds, memory in binary units,
p-values with four decimals (scientific notation below 0.0001). A value that cannot be computed is
"-", and a statistic that needs more seeds says "n too small".
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass, field

import pandas as pd
from tabulate import tabulate

from harness.report.seed_statistics import FEW_SAMPLES, MIN_SAMPLES, N_TOO_SMALL
from harness.report.summary import ERM, PERCENT_DECIMALS, SAM, metric_names

ACCURACY = "test acc % (mean +- std)"
#: Result columns holding a fraction that is shown as a percentage (accuracies, %SAM).
PERCENT = (
    "test_acc",
    "best_test_acc",
    "train_acc",
    "train_acc_clean",
    "train_acc_noisy_given",
    "train_acc_noisy_true",
    "val_acc",
    "best_val_acc",
    "sam_fraction",
)
GROUP_COLUMNS = ["suite", "dataset", "model", "noise", "method"]


@dataclass(frozen=True)
class Table:
    """Display strings by row; ``bold`` marks cells (row, column) to emphasize; ``breaks`` are the
    rows that start a new condition."""

    columns: list[str]
    rows: list[list[str]]
    bold: set[tuple[int, int]] = field(default_factory=set)
    breaks: list[int] = field(default_factory=list)


def accuracy(mean: float, std: float) -> str:
    """``94.60 +- 0.34`` (percent, ``PERCENT_DECIMALS``); the mean alone without a spread."""
    if not _finite(mean):
        return "-"
    shown = f"{100 * mean:.{PERCENT_DECIMALS}f}"
    return f"{shown} +- {100 * std:.{PERCENT_DECIMALS}f}" if _finite(std) else shown


def interval(low: float, high: float, n: int) -> str:
    """``[94.18, 95.02]`` (percent); ``(n=2: wide)`` after it when fewer than ``FEW_SAMPLES`` seeds made it."""
    if n < MIN_SAMPLES:
        return N_TOO_SMALL
    shown = f"[{100 * low:.{PERCENT_DECIMALS}f}, {100 * high:.{PERCENT_DECIMALS}f}]"
    return shown if n >= FEW_SAMPLES else f"{shown} (n={n}: wide)"


def p_value(p: float, note: str) -> str:
    """A p-value, or why there is none: "reference", "n too small", "no sam runs", "no variance"."""
    if not _finite(p):
        return note or "-"
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"


def paper(reference: float, mean: float, std: float, n: int) -> str:
    """``paper 94.80 / measured 94.10 +- 0.20 (n=5), diff -0.70`` (percentages)."""
    if not _finite(reference):
        return ""
    measured = accuracy(mean, std)
    diff = f", diff {100 * (mean - reference):+.2f}" if _finite(mean) else ""
    return f"paper {100 * reference:.2f} / measured {measured} (n={n}){diff}"


def published(cells_json: str) -> str:
    """Each paper's number beside the measured column it reports (``harness.report.published``),
    ``; ``-separated: ``003 Table 4 (sam), final (test_acc): paper 84.80 / measured 84.10 +- 0.20 (n=5),
    diff -0.70 [differs: batch 256]``; a published test error is shown as the accuracy it converts to."""
    shown = []
    for cell in json.loads(cells_json) if isinstance(cells_json, str) and cells_json else []:
        text = paper(cell["test_acc"], cell["measured_mean"], cell["measured_std"], cell["measured_n"])
        if text:
            error = " (published as test error)" if cell.get("metric") == "test_error" else ""
            note = f" [differs: {cell['differs']}]" if cell.get("differs") else ""
            shown.append(f"{cell['source']}, {cell['reported']} ({cell['measured_column']}): {text}{error}{note}")
    return "; ".join(shown)


def size(value: float) -> str:
    """Bytes in binary units: ``512 B``, ``1.50 KiB``, ``2.00 MiB``, ``3.25 GiB``."""
    if not _finite(value):
        return "-"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.0f} B"


def number(value: float, digits: int) -> str:
    return f"{value:.{digits}f}" if _finite(value) else "-"


def metric(mean: float, std: float) -> str:
    if not _finite(mean):
        return "-"
    return f"{mean:.4g} +- {std:.2g}" if _finite(std) else f"{mean:.4g}"


def seeds(n: int, missing: str) -> str:
    return f"{n} of {n + len(missing.split(','))}" if missing else str(n)


def group_cells(row: pd.Series) -> list[str]:
    """The cells of ``GROUP_COLUMNS`` for a row holding suite, dataset, model, noise_rate and method."""
    return [row["suite"], row["dataset"], row["model"], f"{row['noise_rate']:g}", row["method"]]


def summary_tables(summary: pd.DataFrame, *, with_suite: bool = False) -> list[tuple[str, Table]]:
    """The summary as (title, table) pairs, one row per condition and method in each, narrow enough to read
    and print whole: accuracy and significance; cost (%SAM, time, memory); sharpness, when a metric ran. The
    best test accuracy of each condition is in bold (every one of a tie)."""
    groups = GROUP_COLUMNS[0 if with_suite else 1 :]
    reference = summary["reference_method"].iloc[0] if len(summary) else SAM
    metrics = metric_names(summary)
    with_paper = summary["reference_test_acc"].notna().any()
    parts = {
        "Accuracy": {
            ACCURACY: lambda r: accuracy(r["test_acc_mean"], r["test_acc_std"]),
            "95% CI %": lambda r: interval(r["test_acc_ci95_low"], r["test_acc_ci95_high"], r["n"]),
            "seeds": lambda r: seeds(r["n"], r["missing_seeds"]),
            "not ok": lambda r: str(r["failed"] + r["diverged"]),
            f"p Welch vs {reference} (Holm)": lambda r: p_value(r["welch_p_holm"], r["test_note"]),
            f"p MWU vs {reference} (Holm)": lambda r: p_value(r["mannwhitney_p_holm"], r["test_note"]),
            **({"paper / measured %": lambda r: published(r["paper_cells"])} if with_paper else {}),
        },
        "Cost": {
            "%SAM": lambda r: number(100 * r["sam_fraction_mean"], 1),
            "grad evals": lambda r: number(r["grad_evals_mean"], 0),
            "train time s": lambda r: number(r["train_time_s_mean"], 2),
            f"x {ERM.upper()}": lambda r: number(r["train_time_vs_erm"], 2),
            f"x {SAM.upper()}": lambda r: number(r["train_time_vs_sam"], 2),
            "peak device mem": lambda r: size(r["peak_device_bytes_mean"]),
            "peak RSS": lambda r: size(r["peak_rss_bytes_mean"]),
            "optimizer state": lambda r: size(r["optimizer_state_bytes_mean"]),
        },
        "Sharpness": {m: (lambda r, m=m: metric(r[f"{m}_mean"], r[f"{m}_std"])) for m in metrics},
    }
    return [(title, _per_method(summary, groups, cells)) for title, cells in parts.items() if cells]


def summary_table(summary: pd.DataFrame, *, with_suite: bool = False) -> Table:
    """The main table: accuracy and significance, the first of ``summary_tables``."""
    return summary_tables(summary, with_suite=with_suite)[0][1]


def _per_method(summary: pd.DataFrame, groups: list[str], cells: dict) -> Table:
    """A table of the ``groups`` columns and one column per entry of ``cells`` (title -> row -> text)."""
    columns = [*groups, *cells]
    rows, bold, breaks = [], set(), []
    previous = None
    for _, r in summary.iterrows():
        condition = (r["suite"], r["dataset"], r["model"], r["noise_rate"])
        if condition != previous:
            breaks.append(len(rows))
            previous = condition
        group = group_cells(r)
        if r.get("extension"):  # never shown as the paper's method (the texts follow the table)
            group[-1] += " (extension)"
        if r["best"] and ACCURACY in cells:
            bold.add((len(rows), columns.index(ACCURACY)))
        rows.append([*group[len(GROUP_COLUMNS) - len(groups) :], *(cell(r) for cell in cells.values())])
    return Table(columns, rows, bold, breaks)


def markdown(data: Table) -> str:
    """``data`` as a Markdown pipe table, bold cells in ``**``, pipes inside cells escaped."""
    escaped = [[cell.replace("|", "\\|") for cell in row] for row in data.rows]
    rows = [
        [f"**{cell}**" if (i, j) in data.bold else cell for j, cell in enumerate(row)] for i, row in enumerate(escaped)
    ]
    return tabulate(rows, headers=data.columns, tablefmt="pipe", disable_numparse=True)


def failures_table(failures: pd.DataFrame) -> Table:
    """One row per failed or diverged run with the first line of its error."""
    columns = [*GROUP_COLUMNS, "seed", "status", "run_id", "error"]
    rows = [
        [
            *group_cells(r),
            str(r["seed"]),
            r["status"],
            r["run_id"],
            first_line(r["error"]),
        ]
        for _, r in failures.iterrows()
    ]
    return Table(columns, rows)


def first_line(error: object) -> str:
    text = str(error).strip() if isinstance(error, str) else ""
    return text.splitlines()[0] if text else "(no error text recorded)"


def _finite(value: object) -> bool:
    return isinstance(value, numbers.Real) and math.isfinite(value)
