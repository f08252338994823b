"""Run rows -> the tidy summary: one row per condition (dataset, model, noise rate) and method.

Every group of runs gets a row, even when none of its runs is ``ok`` (then its statistics are
NaN): nothing is dropped silently. Statistics are over the ``ok`` runs, one value per seed
(``harness.report.seed_statistics``). Accuracies stay fractions, times seconds, memory bytes; the report
formats them.

Significance: every method is tested against the reference method of the same condition (Welch's
t-test and Mann-Whitney U on the final test accuracy), and the p-values of a condition's
comparisons are Holm-adjusted together (one family per condition and test).
"""

from __future__ import annotations

import math

import pandas as pd

from harness.report.gather import CONDITION, GROUP
from harness.report.published import published
from harness.report.seed_statistics import ACCURACY_BOUNDS, describe, holm, two_sample
from harness.results.hyperparameters import PREFIX as HYPERPARAMETER_PREFIX
from harness.results.store import RUN_SCHEMA

#: Per-run columns averaged over the ok seeds of a group (when present in the results).
MEANS = (
    "best_test_acc",
    "train_acc",
    "train_acc_clean",
    "train_acc_noisy_given",
    "train_acc_noisy_true",
    "sam_fraction",
    "grad_evals",
    "train_time_s",
    "step_time_median_s",
    "throughput_samples_per_s",
    "peak_device_bytes",
    "optimizer_state_bytes",
    "perturbation_state_bytes",
    "peak_rss_bytes",
)
#: Suffixes of metric columns that record a budget or a diagnostic rather than a value.
BUDGET_SUFFIXES = ("_batches", "_samples", "_hvps", "_steps", "_iterations", "_converged", "_stderr")
#: Numeric columns of folders written before the ``references`` column: a published number
#: (``harness.report.published`` reads it), not a metric.
LEGACY = ("reference_test_acc",)
ERM, SAM = "erm", "sam"
#: What the report appends to a tuning study's finals' method name (``harness.report.studies.split``).
TUNED = " (tuned)"
NOT_OK = ("failed", "diverged")
#: Decimals an accuracy is shown with, in percent: means equal at this precision are a tie for the best.
PERCENT_DECIMALS = 2


def metric_columns(runs: pd.DataFrame) -> list[str]:
    """Columns added by metric plugins (beyond the run schema and the ``p_*`` hyperparameters) that hold a
    value, not a budget."""
    return [
        column
        for column in runs.columns
        if column not in RUN_SCHEMA.names
        and column not in ("source", *LEGACY)
        and not column.startswith(HYPERPARAMETER_PREFIX)
        and pd.api.types.is_numeric_dtype(runs[column])
        and not column.endswith(BUDGET_SUFFIXES)
    ]


def metric_names(summary: pd.DataFrame) -> list[str]:
    """The metric columns summarized in ``summary`` (each has ``<name>_mean`` and ``<name>_std``)."""
    stems = [c.removesuffix("_mean") for c in summary.columns if c.endswith("_mean")]
    return [s for s in stems if f"{s}_std" in summary and s not in ("test_acc", "train_time_s", *MEANS)]


def summarize(runs: pd.DataFrame, reference: str = SAM) -> pd.DataFrame:
    """The tidy summary of ``runs`` (rows of one or more suites); ``reference`` is the method tested against."""
    metrics = metric_columns(runs)
    # the seeds a suite's runs of one role are expected on (a tuning study's finals run on their own seeds)
    role = runs["role"].fillna("") if "role" in runs else pd.Series("", index=runs.index)
    expected = {
        key: sorted(rows["seed"].dropna().astype(int).unique()) for key, rows in runs.groupby([runs["suite"], role])
    }
    records = []
    for group, rows in runs.groupby(list(GROUP), sort=True, dropna=False):
        ok = rows[rows["status"] == "ok"]
        seeds = sorted(ok["seed"].dropna().astype(int))
        accuracy = describe(ok["test_acc"], ACCURACY_BOUNDS)
        record = dict(zip(GROUP, group, strict=True))
        kind = (record["suite"], role[rows.index[0]])
        record.update(
            runs=len(rows),
            n=accuracy.n,
            failed=int((rows["status"] == "failed").sum()),
            diverged=int((rows["status"] == "diverged").sum()),
            seeds=",".join(map(str, seeds)),
            missing_seeds=",".join(str(s) for s in expected[kind] if s not in seeds),
            test_acc_mean=accuracy.mean,
            test_acc_std=accuracy.std,
            test_acc_median=accuracy.median,
            test_acc_ci95=accuracy.ci95,
            test_acc_ci95_low=accuracy.ci95_low,
            test_acc_ci95_high=accuracy.ci95_high,
            train_time_s_std=describe(ok["train_time_s"]).std,
        )
        record.update({f"{c}_mean": _mean(ok, c) for c in MEANS})
        for column in metrics:
            values = describe(ok[column])
            record.update({f"{column}_mean": values.mean, f"{column}_std": values.std})
        record.update(published(rows, ok), extension=_extension(rows))
        records.append(record)
    summary = pd.DataFrame.from_records(records)
    summary = _ratios(summary)
    summary = _significance(summary, runs, reference)
    summary["best"] = _best(summary)
    return summary


def _extension(rows: pd.DataFrame) -> str:
    """Why the group's runs apply their method outside its paper's setting, ``; ``-joined ('' for the paper's
    own setting, and in folders written before the ``extension`` column)."""
    texts = rows["extension"].dropna() if "extension" in rows else pd.Series([], dtype=str)
    return "; ".join(dict.fromkeys(text for text in texts if text))


def _mean(rows: pd.DataFrame, column: str) -> float:
    if column not in rows:
        return math.nan
    values = pd.to_numeric(rows[column], errors="coerce").dropna()
    return float(values.mean()) if len(values) else math.nan


def _ratios(summary: pd.DataFrame) -> pd.DataFrame:
    """Mean train time over the mean train time of ERM and of SAM in the same condition (NaN if absent); in a
    condition with only tuned runs of them, over their finals' (``<method> (tuned)``, ``harness.report.studies``)."""
    keys = ["suite", *CONDITION]
    for method in (ERM, SAM):
        candidates = summary[summary["method"].isin([method, f"{method}{TUNED}"])]
        candidates = candidates.sort_values("method", key=lambda names: names != method, kind="stable")
        base = candidates.drop_duplicates(keys)[[*keys, "train_time_s_mean"]]
        base = base.rename(columns={"train_time_s_mean": "base"})
        merged = summary[keys].merge(base, on=keys, how="left")
        summary[f"train_time_vs_{method}"] = summary["train_time_s_mean"].to_numpy() / merged["base"].to_numpy()
    return summary


def _significance(summary: pd.DataFrame, runs: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Welch and Mann-Whitney p-values against ``reference`` per condition, raw and Holm-adjusted."""
    summary["reference_method"] = reference
    for column in ("welch_p", "mannwhitney_p", "welch_p_holm", "mannwhitney_p_holm"):
        summary[column] = math.nan
    summary["test_note"] = ""
    ok = runs[runs["status"] == "ok"]
    samples = {key: rows["test_acc"].to_numpy() for key, rows in ok.groupby(list(GROUP), dropna=False)}
    for _, rows in summary.groupby(["suite", *CONDITION], sort=False, dropna=False):
        family = []
        for index, row in rows.iterrows():
            if row["method"] == reference:
                summary.loc[index, "test_note"] = "reference"
                continue
            reference_key = (*(row[k] for k in ("suite", *CONDITION)), reference)
            if reference_key not in samples and not (rows["method"] == reference).any():
                summary.loc[index, "test_note"] = f"no {reference} runs"
                continue
            test = two_sample(samples.get(tuple(row[k] for k in GROUP), []), samples.get(reference_key, []))
            summary.loc[index, ["welch_p", "mannwhitney_p", "test_note"]] = [
                test.welch_p,
                test.mannwhitney_p,
                test.note,
            ]
            family.append(index)
        for column in ("welch_p", "mannwhitney_p"):
            summary.loc[family, f"{column}_holm"] = holm(summary.loc[family, column].tolist())
    return summary


def _best(summary: pd.DataFrame) -> pd.Series:
    """True for every method whose mean test accuracy, as shown (percent, ``PERCENT_DECIMALS``), is the highest
    of its condition: two means a reader sees as equal are both marked, never one of them by a last-bit
    difference of floating-point sums."""
    shown = (100 * summary["test_acc_mean"]).map(lambda value: float(f"{value:.{PERCENT_DECIMALS}f}"))
    top = shown.groupby([summary[k] for k in ("suite", *CONDITION)], dropna=False).transform("max")
    return shown.notna() & (shown == top)


def failures(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs that did not finish ok, with their errors, in group order."""
    columns = ["suite", *CONDITION, "method", "seed", "run_id", "status", "error", "source"]
    rows = runs.loc[runs["status"] != "ok", [c for c in columns if c in runs]]
    return rows.sort_values([*GROUP, "seed"], na_position="last").reset_index(drop=True)


def warnings_for(summary: pd.DataFrame) -> list[str]:
    """Plain sentences about groups with missing seeds or with no ok run at all."""
    lines = []
    for _, row in summary.iterrows():
        where = f"{row['suite']}: {row['dataset']} / {row['model']} / noise {row['noise_rate']:g} / {row['method']}"
        if row["n"] == 0:
            lines.append(f"{where}: no ok run ({row['failed']} failed, {row['diverged']} diverged); no statistics")
        elif row["missing_seeds"]:
            total = row["n"] + len(row["missing_seeds"].split(","))
            lines.append(
                f"{where}: {row['n']} of {total} seeds; seeds {row['missing_seeds'].replace(',', ', ')} missing "
                f"({row['failed']} failed, {row['diverged']} diverged, {total - row['runs']} not run)"
            )
    return lines
