"""The report's tuning section: what each study (``harness tune``) tried, chose and spent, and how the methods
compare across conditions once tuned.

Rows with ``role`` ``trial`` are a study's candidates, scored on its ``objective`` (a validation column);
rows with ``role`` ``final`` are the chosen setting on the final seeds, scored on the test set. The report's
main table averages the finals as ``<method> (tuned)`` beside the ordinary runs of the method (its fixed
settings, when the folder has them: ``harness run --no-tuning``), so a reader sees how much of a gap was
hyperparameters; trials never enter it (``split``). This module adds:

- per study: the setting chosen, the budget its trials spent (trials, how many its pruner stopped and
  under which rule, gradient evaluations, train seconds), every trial's objective (a pruned one: the epoch
  it stopped after), and the finals' test accuracy with its 95% confidence interval;
- a sensitivity figure per condition: the objective against each tuned key, one line per method;
- a performance profile across conditions (Dolan and Moré 2002, as MLCommons AlgoPerf scores): for each
  method the fraction of conditions in which its tuned mean test accuracy is within tau (percentage
  points) of the best method's, and its mean train time within a factor tau of the cheapest's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from harness.report import gather
from harness.report.figures import Plot, slug
from harness.report.seed_statistics import ACCURACY_BOUNDS, describe
from harness.report.summary import TUNED
from harness.report.tables import Table, interval

CONDITION = ["suite", *gather.CONDITION]
#: The accuracy gaps (percentage points) and cost ratios the profile table shows.
ACCURACY_TAUS = (0.0, 0.5, 1.0, 2.0, 5.0)
COST_TAUS = (1.0, 1.25, 1.5, 2.0, 3.0)


@dataclass(frozen=True)
class Split:
    """A folder's runs for the report: what the main table averages, and the tuning studies' trials."""

    averaged: pd.DataFrame
    trials: pd.DataFrame
    finals: pd.DataFrame


def split(runs: pd.DataFrame) -> Split:
    """Trials out of the main table; finals renamed ``<method> (tuned)`` so they never average with the
    method's fixed-setting runs (their configurations differ)."""
    role = runs["role"].fillna("") if "role" in runs else pd.Series("", index=runs.index)
    trials, finals = runs[role == "trial"], runs[role == "final"].copy()
    finals["method"] = finals["method"] + TUNED
    return Split(averaged=pd.concat([runs[role == ""], finals]), trials=trials, finals=finals)


def has_studies(parts: Split) -> bool:
    return not (parts.trials.empty and parts.finals.empty)


def studies_table(parts: Split) -> Table:
    """One row per study: chosen setting, budget spent, every trial's objective, finals' test accuracy."""
    columns = [
        "study",
        "chosen",
        "trials",
        "grad evals",
        "train s",
        "objective per trial",
        "final test acc %",
        "95% CI %",
        "seeds",
    ]
    rows, breaks = [], []
    names = sorted(set(parts.trials["study"].dropna()) | set(parts.finals["study"].dropna()))
    for name in names:
        trials = parts.trials[parts.trials["study"] == name]
        finals = parts.finals[(parts.finals["study"] == name) & (parts.finals["status"] == "ok")]
        chosen = parts.finals.loc[parts.finals["study"] == name, "tuned"].dropna()
        objective = trials["objective"].dropna().iloc[0] if trials["objective"].notna().any() else "val_acc"
        scored = "; ".join(
            f"{_setting(t.tuned)}: {_trial_outcome(t, objective)}" for t in trials.sort_values("tuned").itertuples()
        )
        sample = describe(list(finals["test_acc"]), ACCURACY_BOUNDS)
        pruned = int((trials["status"] == "pruned").sum())
        rules = trials["pruner"].dropna() if "pruner" in trials else pd.Series([], dtype=str)
        rule = next((text for text in rules if text), "")
        rows.append(
            [
                name,
                _setting(chosen.iloc[0]) if len(chosen) else "none (no final)",
                f"{len(trials)} ({pruned} pruned by {_rule(rule)})" if rule else str(len(trials)),
                f"{trials['grad_evals'].sum():.0f}",
                f"{trials['train_time_s'].sum():.1f}",
                scored or "not tuned",
                _percent(sample.mean),
                interval(sample.ci95_low, sample.ci95_high, sample.n),
                str(sample.n),
            ]
        )
    return Table(columns, rows, breaks=breaks)


def untuned_table(summary: pd.DataFrame) -> Table | None:
    """Per condition, each method with both tuned finals and fixed-setting runs: their mean test accuracy
    and 95% CI, and tuned minus untuned in points (how much of a gap was hyperparameters); None without any."""
    keys = [*CONDITION, "method"]
    tuned = summary[summary["method"].str.endswith(TUNED)].assign(method=lambda f: f["method"].str.removesuffix(TUNED))
    both = tuned.merge(summary, on=keys, suffixes=("", "_untuned"))
    if both.empty:
        return None
    columns = ["suite", "dataset", "model", "noise", "method", "untuned %", "tuned %", "tuned - untuned (points)"]
    rows = [
        [
            r.suite,
            r.dataset,
            r.model,
            f"{r.noise_rate:g}",
            r.method,
            _interval(r.test_acc_mean_untuned, r.test_acc_ci95_untuned),
            _interval(r.test_acc_mean, r.test_acc_ci95),
            f"{100 * (r.test_acc_mean - r.test_acc_mean_untuned):+.2f}",
        ]
        for r in both.sort_values(keys).itertuples()
    ]
    return Table(columns, rows)


def _interval(mean: float, half: float) -> str:
    spread = f" +- {100 * half:.2f}" if np.isfinite(half) else ""
    return f"{_percent(mean)}{spread}"


def distances(summary: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per condition (rows) and tuned method (columns): the mean test accuracy's gap to the best tuned
    method's, in points, and the mean train time over the cheapest's."""
    tuned = summary[summary["method"].str.endswith(TUNED)]
    accuracy = tuned.pivot_table(index=CONDITION, columns="method", values="test_acc_mean")
    cost = tuned.pivot_table(index=CONDITION, columns="method", values="train_time_s_mean")
    gap = 100.0 * (accuracy.max(axis=1).to_numpy()[:, None] - accuracy)
    return gap, cost / cost.min(axis=1).to_numpy()[:, None]


def profiles(summary: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The performance profiles at the table's taus: (method x tau) fractions of conditions within tau."""
    gap, ratio = distances(summary)
    return profile(gap, ACCURACY_TAUS), profile(ratio, COST_TAUS)


def profile(distance: pd.DataFrame, taus) -> pd.DataFrame:
    """Per method (a column of ``distance``), the share of conditions (rows) at a distance <= tau, per tau."""
    within = {tau: ((distance <= tau + 1e-12) & distance.notna()).sum() / len(distance) for tau in taus}
    return pd.DataFrame(within).rename_axis(columns="tau")


def profile_table(profile: pd.DataFrame, unit: str) -> Table:
    columns = ["method", *(f"tau {tau:g}{unit}" for tau in profile.columns)]
    rows = [[method, *(f"{value:.2f}" for value in row)] for method, row in profile.iterrows()]
    return Table(columns, rows)


def figures(parts: Split, summary: pd.DataFrame, colors: dict) -> list[Plot]:
    """A sensitivity figure per condition and tuned key, and the two performance profiles."""
    plots = []
    trials = parts.trials[parts.trials["status"] == "ok"]
    for condition, rows in trials.groupby(CONDITION, sort=True):
        objective = rows["objective"].iloc[0]
        where = f"{condition[0]}, {condition[1]} / {condition[2]} / noise {condition[3]:g}"
        for key in sorted({k for text in rows["tuned"] for k in json.loads(text)}):
            figure, ax = plt.subplots(figsize=(7.5, 4), layout="constrained")
            numeric = True
            for method, group in rows.groupby("method", sort=True):
                settings = [json.loads(text) for text in group["tuned"]]
                values = pd.Series([_x(s[key]) if key in s else None for s in settings], index=group.index)
                best = group[objective][values.notna()].groupby(values.dropna()).max()  # best over other keys
                if len(best):
                    ax.plot(list(best.index), best.to_numpy(), marker="o", label=method, color=colors.get(method))
                    numeric = numeric and all(isinstance(v, (int, float)) and v > 0 for v in best.index)
            ax.set(xlabel=key, ylabel=f"{objective} (trial seed; best over other keys)", title=where)
            if numeric:
                ax.set_xscale("log")
            figure.legend(loc="outside right center", fontsize=7, title="method")  # beside the panel: covers nothing
            name = slug("sensitivity", *condition, key) + ".png"
            plots.append(Plot(name, f"Sensitivity: {objective} against {key}, one line per method; {where}", figure))
    if summary["method"].str.endswith(TUNED).any():
        plots.append(_profile_figure(summary, colors))
    return plots


def _profile_figure(summary: pd.DataFrame, colors: dict) -> Plot:
    """Both profiles as curves over a fine grid of tau."""
    gap, ratio = distances(summary)
    figure, axes = plt.subplots(1, 2, figsize=(11.5, 4), layout="constrained")
    panels = (
        (gap, np.linspace(0.0, max(5.0, float(np.nanmax(gap.to_numpy()))), 200), "accuracy gap to the best (points)"),
        (
            ratio,
            np.linspace(1.0, max(3.0, float(np.nanmax(ratio.to_numpy()))), 200),
            "train time over the cheapest (x)",
        ),
    )
    for ax, (distance, taus, label) in zip(axes, panels, strict=True):
        for method, row in profile(distance, taus).iterrows():
            ax.step(taus, list(row), where="post", label=method, color=colors.get(method))
        ax.set(xlabel=f"tau: {label}", ylabel="fraction of conditions within tau", ylim=(0, 1.05))
    figure.legend(*axes[0].get_legend_handles_labels(), loc="outside right center", fontsize=7, title="method")
    caption = "Performance profiles of the tuned methods across conditions: accuracy (left) and cost (right)"
    return Plot("performance_profiles.png", caption, figure)


def _trial_outcome(trial, objective: str) -> str:
    """A trial's objective (%); a pruned trial's epoch it stopped after; otherwise its status."""
    if trial.status == "ok":
        return _percent(getattr(trial, objective))
    if trial.status == "pruned":
        return f"pruned after epoch {trial.epochs_completed:.0f}"
    return trial.status


def _rule(text: str) -> str:
    """``{"name": "median", "n_startup_trials": 2}`` as ``median(n_startup_trials=2)``."""
    rule = json.loads(text)
    name = rule.pop("name")
    return f"{name}({', '.join(f'{key}={value}' for key, value in sorted(rule.items()))})"


def _setting(text: str) -> str:
    values = json.loads(text) if isinstance(text, str) and text else {}
    return ", ".join(f"{key}={json.dumps(value)}" for key, value in sorted(values.items())) or "preset values"


def _percent(value: float) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{100 * value:.2f}"


def _x(value):
    """A setting's value as an x coordinate: a number as it is, anything else (a block) as its JSON text."""
    return (
        value if isinstance(value, (int, float)) and not isinstance(value, bool) else json.dumps(value, sort_keys=True)
    )
