"""The report's figures (matplotlib), one suite at a time.

- accuracy against train time per condition, the Pareto front (fastest for its accuracy) marked;
- accuracy against noise rate per method, per dataset and model (when the suite has several rates);
- learning curves per condition: test accuracy, and train accuracy on the noisy-labelled samples
  against the given (wrong) labels and against the true ones, by epoch, per method;
- %SAM against accuracy per condition;
- memory bars: optimizer-state bytes and peak device memory per method;
- accuracy against the optimizer state beyond the base optimizer's (nuSAM's comparison, 002 Table 2), when
  the runs recorded it.

The per-step and per-epoch diagnostics (AE-SAM's threshold, GSAM's surrogate gap, %SAM per epoch) are
``harness.report.training_figures``; the cost per k is ``harness.report.costs``.

Means over the ok seeds with one standard deviation as error bars or bands. Figures are built with
``matplotlib.figure.Figure`` (no pyplot, no global state) and drawn by the Agg canvas.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from harness.report.gather import CONDITION

CURVES = (  # history column, panel title
    ("test_acc", "test accuracy"),
    ("train_acc_noisy_given", "noisy-labelled train samples,\naccuracy against the given labels (memorization)"),
    ("train_acc_noisy_true", "noisy-labelled train samples,\naccuracy against the true labels"),
)
COLUMNS = 3
PANEL = (4.6, 3.4)
UNITS = (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10), ("bytes", 1))


@dataclass(frozen=True)
class Plot:
    """A figure, the file name it is saved under, and a one-line caption."""

    name: str
    caption: str
    figure: Figure


def slug(*parts: object) -> str:
    """A file-name-safe ``a-b-c`` from the parts."""
    text = "-".join(f"{p:g}" if isinstance(p, float) else str(p) for p in parts)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def method_colors(methods: Sequence[str]) -> dict[str, tuple]:
    """One stable colour per method (tab10, or tab20 beyond ten methods)."""
    names = sorted(set(methods))
    palette = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {name: palette(i % palette.N) for i, name in enumerate(names)}


def suite_figures(summary: pd.DataFrame, runs: pd.DataFrame, history: pd.DataFrame, colors: dict) -> list[Plot]:
    """Every figure of one suite (``summary``, ``runs`` and ``history`` hold that suite only)."""
    suite = summary["suite"].iloc[0]
    plots = [
        _condition_scatter(summary, colors, "train_time_s_mean", "train time s (mean)", pareto=True).named(
            f"accuracy_vs_time-{slug(suite)}.png",
            f"{suite}: test accuracy against train time; ringed points form the Pareto front "
            "(no other method is both faster and more accurate)",
        ),
        _condition_scatter(summary, colors, "sam_fraction_mean", "%SAM", scale=100).named(
            f"sam_fraction_vs_accuracy-{slug(suite)}.png", f"{suite}: test accuracy against %SAM"
        ),
        _memory(summary, colors).named(
            f"memory-{slug(suite)}.png", f"{suite}: optimizer state and peak device memory per method (mean)"
        ),
    ]
    if _extra_memory_known(summary):
        plots.append(
            _extra_memory(summary, colors).named(
                f"extra_memory_vs_accuracy-{slug(suite)}.png",
                f"{suite}: test accuracy against the optimizer state a method holds beyond its base optimizer's "
                "(perturbation_state_bytes; ERM holds none), as nuSAM's Table 2 (002) sets memory against accuracy",
            )
        )
    if summary["noise_rate"].nunique() > 1:
        plots.append(
            _accuracy_vs_noise(summary, colors).named(
                f"accuracy_vs_noise-{slug(suite)}.png", f"{suite}: test accuracy against label-noise rate"
            )
        )
    plots.extend(_learning_curves(suite, runs, history, colors))
    return plots


class _Draft:
    """A figure waiting for its name."""

    def __init__(self, figure: Figure) -> None:
        self.figure = figure

    def named(self, name: str, caption: str) -> Plot:
        return Plot(name, caption, self.figure)


def grid(count: int, title: str) -> tuple[Figure, list[Axes]]:
    """A figure of ``count`` panels, ``COLUMNS`` to a row, titled ``title``."""
    columns = min(COLUMNS, max(count, 1))
    rows = math.ceil(max(count, 1) / columns)
    figure = Figure(figsize=(PANEL[0] * columns + 1.8, PANEL[1] * rows + 0.6), layout="constrained")
    axes = list(np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel())
    for spare in axes[count:]:
        spare.set_visible(False)
    figure.suptitle(title)
    return figure, axes[:count]


def legend(figure: Figure, colors: dict, methods: Sequence[str]) -> None:
    """One legend of ``methods``' colours, outside the panels on the right (it covers no title)."""
    handles = [
        figure.axes[0].plot([], [], "o", color=colors[m], label=m)[0] for m in sorted(set(methods)) if m in colors
    ]
    figure.legend(handles=handles, loc="outside right center", title="method")


def condition_title(dataset: str, model: str, noise_rate: float) -> str:
    """``dataset / model / noise rate``: a panel's title."""
    return f"{dataset} / {model} / noise {noise_rate:g}"


def _condition_scatter(
    summary: pd.DataFrame, colors: dict, x: str, label: str, *, scale: float = 1.0, pareto: bool = False
) -> _Draft:
    conditions = list(summary.groupby(list(CONDITION), sort=True, dropna=False))
    figure, axes = grid(len(conditions), f"{summary['suite'].iloc[0]}: test accuracy against {label}")
    for ax, (condition, rows) in zip(axes, conditions, strict=True):
        rows = rows[rows["test_acc_mean"].notna() & rows[x].notna()]
        for _, r in rows.iterrows():
            xerr = r["train_time_s_std"] if x == "train_time_s_mean" else None
            ax.errorbar(
                r[x] * scale,
                100 * r["test_acc_mean"],
                yerr=100 * r["test_acc_std"] if math.isfinite(r["test_acc_std"]) else None,
                xerr=xerr if xerr is not None and math.isfinite(xerr) else None,
                fmt="o",
                color=colors[r["method"]],
                capsize=3,
            )
        if pareto and len(rows):
            front = _pareto_front(rows[x].to_numpy(), rows["test_acc_mean"].to_numpy())
            ordered = rows.iloc[front].sort_values(x)
            ax.step(ordered[x], 100 * ordered["test_acc_mean"], where="post", color="0.4", lw=1, ls="--")
            ax.scatter(ordered[x], 100 * ordered["test_acc_mean"], s=220, facecolors="none", edgecolors="k")
        ax.set_title(condition_title(*condition) + ("" if len(rows) else ": no ok runs"), fontsize=10)
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy %")
        ax.grid(alpha=0.3)
    legend(figure, colors, summary["method"])
    return _Draft(figure)


def _pareto_front(cost: np.ndarray, value: np.ndarray) -> list[int]:
    """Indices of the points no other point dominates (cost <= and value >=, one of them strictly)."""
    front = []
    for i in range(len(cost)):
        dominated = np.any((cost <= cost[i]) & (value >= value[i]) & ((cost < cost[i]) | (value > value[i])))
        if not dominated:
            front.append(i)
    return front


def _extra_memory_known(summary: pd.DataFrame) -> bool:
    """Whether some method beside another holds a measured perturbation state (results written before the
    column have none)."""
    column = "perturbation_state_bytes_mean"
    return column in summary and summary.loc[summary[column].notna(), "method"].nunique() > 1


def _extra_memory(summary: pd.DataFrame, colors: dict) -> _Draft:
    column = "perturbation_state_bytes_mean"
    largest = summary[column].max()
    unit, scale = next(((u, s) for u, s in UNITS if largest >= s), UNITS[-1])
    conditions = list(summary.groupby(list(CONDITION), sort=True, dropna=False))
    figure, axes = grid(len(conditions), f"{summary['suite'].iloc[0]}: test accuracy against extra optimizer memory")
    for ax, (condition, rows) in zip(axes, conditions, strict=True):
        rows = rows[rows[column].notna() & rows["test_acc_mean"].notna()]
        for _, r in rows.iterrows():
            ax.errorbar(
                r[column] / scale,
                100 * r["test_acc_mean"],
                yerr=100 * r["test_acc_std"] if math.isfinite(r["test_acc_std"]) else None,
                fmt="o",
                color=colors[r["method"]],
                capsize=3,
            )
            ax.annotate(
                r["method"],
                (r[column] / scale, 100 * r["test_acc_mean"]),
                fontsize=7,
                alpha=0.8,
                xytext=(4, 3),
                textcoords="offset points",
            )
        ax.set_title(condition_title(*condition), fontsize=10)
        ax.set_xlabel(f"optimizer state beyond the base optimizer's ({unit})")
        ax.set_ylabel("test accuracy %")
        ax.grid(alpha=0.3)
    legend(figure, colors, summary["method"])
    return _Draft(figure)


def _accuracy_vs_noise(summary: pd.DataFrame, colors: dict) -> _Draft:
    pairs = list(summary.groupby(["dataset", "model"], sort=True))
    figure, axes = grid(len(pairs), f"{summary['suite'].iloc[0]}: test accuracy against label noise")
    for ax, ((dataset, model), rows) in zip(axes, pairs, strict=True):
        for method, line in rows.groupby("method", sort=True):
            line = line.sort_values("noise_rate")
            ax.errorbar(
                100 * line["noise_rate"],
                100 * line["test_acc_mean"],
                yerr=100 * line["test_acc_std"].fillna(0),
                marker="o",
                color=colors[method],
                capsize=3,
            )
        ax.set_title(f"{dataset} / {model}", fontsize=10)
        ax.set_xlabel("label noise %")
        ax.set_ylabel("test accuracy %")
        ax.grid(alpha=0.3)
    legend(figure, colors, summary["method"])
    return _Draft(figure)


def _memory(summary: pd.DataFrame, colors: dict) -> _Draft:
    pairs = list(summary.groupby(["dataset", "model"], sort=True))
    kinds = [("optimizer_state_bytes_mean", "optimizer state", ""), ("peak_device_bytes_mean", "peak device", "//")]
    largest = summary[[k for k, _, _ in kinds]].max().max()
    unit, scale = next(((u, s) for u, s in UNITS if largest >= s), UNITS[-1])
    figure, axes = grid(len(pairs), f"{summary['suite'].iloc[0]}: memory per method ({unit})")
    for ax, ((dataset, model), rows) in zip(axes, pairs, strict=True):
        means = rows.groupby("method", sort=True)[[k for k, _, _ in kinds]].mean()
        shown = [(k, label, hatch) for k, label, hatch in kinds if means[k].notna().any()]
        height = 0.8 / max(len(shown), 1)
        positions = np.arange(len(means))
        for offset, (column, _, hatch) in enumerate(shown):
            ax.barh(
                positions + offset * height,
                means[column].fillna(0) / scale,
                height=height,
                color=[colors[m] for m in means.index],
                hatch=hatch,
                edgecolor="k",
            )
        ax.set_yticks(positions + height * (len(shown) - 1) / 2, means.index)
        ax.invert_yaxis()  # methods top to bottom in alphabetical order
        ax.set_xlabel(unit)
        ax.set_title(f"{dataset} / {model}" + ("" if len(shown) > 1 else " (no device memory: CPU)"), fontsize=10)
        keys = [Patch(facecolor="white", edgecolor="k", hatch=hatch, label=label) for _, label, hatch in shown]
        ax.legend(handles=keys, fontsize=8)
        ax.grid(alpha=0.3, axis="x")
    return _Draft(figure)


def _learning_curves(suite: str, runs: pd.DataFrame, history: pd.DataFrame, colors: dict) -> list[Plot]:
    """One figure per condition with history; a panel per curve that has values."""
    if history.empty or "epoch" not in history or history["epoch"].isna().all():
        return []
    ok = runs.loc[runs["status"] == "ok", ["source", "run_id", *CONDITION, "method"]]
    joined = history.merge(ok, on=["source", "run_id"], how="inner")
    plots = []
    for condition, rows in joined.groupby(list(CONDITION), sort=True, dropna=False):
        curves = [(c, label) for c, label in CURVES if c in rows and rows[c].notna().any()]
        if not curves:
            continue
        where = condition_title(*condition)
        figure, axes = grid(len(curves), f"{suite}: learning curves, {where}")
        for ax, (column, label) in zip(axes, curves, strict=True):
            _mean_band(ax, rows, column, colors)
            ax.set_title(label, fontsize=10)
            ax.set_xlabel("epoch")
            ax.set_ylabel("accuracy %")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
        legend(figure, colors, rows["method"])
        plots.append(
            Plot(
                f"learning_curves-{slug(suite, *condition)}.png",
                f"{suite}, {where}: learning curves (mean over seeds, band = one standard deviation)",
                figure,
            )
        )
    return plots


def _mean_band(ax: Axes, rows: pd.DataFrame, column: str, colors: dict) -> None:
    for method, curve in rows.groupby("method", sort=True):
        by_epoch = curve.groupby("epoch")[column].agg(["mean", "std"]).dropna(subset=["mean"])
        if by_epoch.empty:
            continue
        epochs, mean, std = by_epoch.index.to_numpy(), 100 * by_epoch["mean"], 100 * by_epoch["std"].fillna(0)
        ax.plot(epochs, mean, color=colors[method], marker="." if len(epochs) < 30 else None)
        ax.fill_between(epochs, mean - std, mean + std, color=colors[method], alpha=0.2)
