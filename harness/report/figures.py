"""The report's figures (matplotlib), one suite at a time.

- accuracy against train time per condition, the Pareto front (fastest for its accuracy) marked;
- accuracy against noise rate per method, per dataset and model (when the suite has several rates);
- learning curves per condition: train and test loss (log scale), test accuracy, and train accuracy on the
  noisy-labelled samples against the given (wrong) labels and against the true ones, by epoch, per method; the
  y axis spans the last half of training (``LATE``), so the final differences show instead of the first
  epochs' climb;
- %SAM against accuracy per condition;
- memory bars: optimizer-state bytes, and peak device memory (peak RSS of the process where there is none:
  on CPU), per method, a panel each in its own unit;
- accuracy against the optimizer state beyond the base optimizer's (nuSAM's comparison, 002 Table 2), when
  the runs recorded it.

The per-step and per-epoch diagnostics (AE-SAM's threshold, GSAM's surrogate gap, %SAM per epoch) are
``harness.report.training_figures``; the cost per k is ``harness.report.costs``.

Means over the ok seeds with one standard deviation as error bars or bands (none from one seed), clipped to
what the quantity can be (``bounded_error``: an accuracy in [0, 100] %, a time or a loss not below 0). Each
figure's one legend sits outside its panels, so it covers no title or data. Figures are built with
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
from matplotlib.ticker import MaxNLocator

from harness.report.gather import CONDITION

CURVES = (  # history column, panel title, y label
    ("train_loss", "train loss", "loss"),
    ("test_loss", "test loss", "loss"),
    ("test_acc", "test accuracy", "accuracy %"),
    (
        "train_acc_noisy_given",
        "noisy-labelled train samples,\naccuracy against the given labels (memorization)",
        "accuracy %",
    ),
    ("train_acc_noisy_true", "noisy-labelled train samples,\naccuracy against the true labels", "accuracy %"),
)
#: The share of the epochs, the last ones, whose values a learning curve's y axis spans.
LATE = 0.5
PERCENT_RANGE = (0.0, 100.0)
NON_NEGATIVE = (0.0, math.inf)
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


def bounded_error(mean: object, spread: object, bounds: tuple[float, float]) -> np.ndarray:
    """Error bars ``mean +- spread`` as matplotlib's (2, n) lower and upper lengths, the ends clipped to
    ``bounds``: no accuracy bar above 100 %, no time below 0. A NaN spread (one seed) stays NaN: no bar, no cap."""
    mean = np.atleast_1d(np.asarray(mean, dtype=float))
    spread = np.atleast_1d(np.asarray(spread, dtype=float))
    low, high = np.clip(mean - spread, *bounds), np.clip(mean + spread, *bounds)
    return np.vstack([mean - low, high - mean])


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
            f"memory-{slug(suite)}.png",
            f"{suite}: optimizer state and peak memory per method (mean over seeds): the device's, or the process's "
            "peak RSS where the device has none (CPU)",
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
            timed = x == "train_time_s_mean"
            ax.errorbar(
                r[x] * scale,
                100 * r["test_acc_mean"],
                yerr=bounded_error(100 * r["test_acc_mean"], 100 * r["test_acc_std"], PERCENT_RANGE),
                xerr=bounded_error(r[x], r["train_time_s_std"], NON_NEGATIVE) if timed else None,
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
                yerr=bounded_error(100 * r["test_acc_mean"], 100 * r["test_acc_std"], PERCENT_RANGE),
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
                yerr=bounded_error(100 * line["test_acc_mean"], 100 * line["test_acc_std"], PERCENT_RANGE),
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
    """A panel per dataset, model and kind of memory (``_memory_kinds``), each in its own unit: optimizer state
    is MiB where the process peak is GiB, and one axis would hide it."""
    panels = [
        (dataset, model, column, label)
        for (dataset, model), rows in summary.groupby(["dataset", "model"], sort=True)
        for column, label in _memory_kinds(rows)
    ]
    figure, axes = grid(len(panels), f"{summary['suite'].iloc[0]}: memory per method (mean over seeds)")
    for ax, (dataset, model, column, label) in zip(axes, panels, strict=True):
        rows = summary[(summary["dataset"] == dataset) & (summary["model"] == model)]
        means = rows.groupby("method", sort=True)[column].mean()
        unit, scale = next(((u, s) for u, s in UNITS if means.max() >= s), UNITS[-1])
        positions = np.arange(len(means))
        ax.barh(positions, means.fillna(0) / scale, color=[colors[m] for m in means.index], edgecolor="k")
        ax.set_yticks(positions, means.index)
        ax.invert_yaxis()  # methods top to bottom in alphabetical order
        ax.set(xlabel=unit, title=f"{dataset} / {model}: {label}")
        ax.title.set_fontsize(10)
        ax.grid(alpha=0.3, axis="x")
    return _Draft(figure)


def _memory_kinds(rows: pd.DataFrame) -> list[tuple[str, str]]:
    """(summary column, title) of the memory a condition's runs measured: optimizer state, and peak device memory
    or, where the device has none (CPU: ``peak_device_bytes`` is null), the process's peak RSS."""
    kinds = [("optimizer_state_bytes_mean", "optimizer state")]
    if rows["peak_device_bytes_mean"].notna().any():
        kinds.append(("peak_device_bytes_mean", "peak device memory"))
    elif "peak_rss_bytes_mean" in rows and rows["peak_rss_bytes_mean"].notna().any():
        kinds.append(("peak_rss_bytes_mean", "peak RSS (no device memory: CPU)"))
    return [(column, label) for column, label in kinds if rows[column].notna().any()]


def _learning_curves(suite: str, runs: pd.DataFrame, history: pd.DataFrame, colors: dict) -> list[Plot]:
    """One figure per condition with history; a panel per curve that has values."""
    if history.empty or "epoch" not in history or history["epoch"].isna().all():
        return []
    ok = runs.loc[runs["status"] == "ok", ["source", "run_id", *CONDITION, "method"]]
    joined = history.merge(ok, on=["source", "run_id"], how="inner")
    plots = []
    for condition, rows in joined.groupby(list(CONDITION), sort=True, dropna=False):
        curves = [curve for curve in CURVES if curve[0] in rows and rows[curve[0]].notna().any()]
        if not curves:
            continue
        where = condition_title(*condition)
        figure, axes = grid(len(curves), f"{suite}: learning curves, {where}")
        for ax, (column, title, label) in zip(axes, curves, strict=True):
            percent = label.startswith("accuracy")
            bounds = PERCENT_RANGE if percent else NON_NEGATIVE
            late = _mean_band(ax, rows, column, colors, 100 if percent else 1, bounds)
            log = not percent and late.size > 0 and late.min() > 0
            if log:
                ax.set_yscale("log")
            _zoom(ax, late, bounds, log=log)
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
        legend(figure, colors, rows["method"])
        plots.append(
            Plot(
                f"learning_curves-{slug(suite, *condition)}.png",
                f"{suite}, {where}: learning curves (mean over seeds, band = one standard deviation; the y axis spans "
                "the last half of the epochs, so the final differences show; losses on a log scale)",
                figure,
            )
        )
    return plots


def _mean_band(
    ax: Axes, rows: pd.DataFrame, column: str, colors: dict, scale: float, bounds: tuple[float, float]
) -> np.ndarray:
    """Each method's mean of ``column`` by epoch (times ``scale``) with a one-std band clipped to ``bounds``;
    returns the means and the band's finite ends over the last ``LATE`` of the epochs, what the y axis must show."""
    late = []
    last = rows["epoch"].max()
    for method, curve in rows.groupby("method", sort=True):
        by_epoch = curve.groupby("epoch")[column].agg(["mean", "std"]).dropna(subset=["mean"])
        if by_epoch.empty:
            continue
        epochs, mean = by_epoch.index.to_numpy(), scale * by_epoch["mean"].to_numpy()
        error = bounded_error(mean, scale * by_epoch["std"].to_numpy(), bounds)
        lower, upper = mean - error[0], mean + error[1]
        ax.plot(epochs, mean, color=colors[method], marker="." if len(epochs) < 30 else None)
        ax.fill_between(epochs, lower, upper, color=colors[method], alpha=0.2)
        kept = epochs >= last - LATE * (last - rows["epoch"].min())
        late += [mean[kept], lower[kept], upper[kept]]
    values = np.concatenate(late) if late else np.array([])
    return values[np.isfinite(values)]


def _zoom(ax: Axes, values: np.ndarray, bounds: tuple[float, float], *, log: bool) -> None:
    """Y limits around ``values`` with a margin, within ``bounds`` (a log axis: a margin by factor)."""
    if not values.size:
        return
    low, high = float(values.min()), float(values.max())
    if log:
        ax.set_ylim(low / 1.25, high * 1.25)
        return
    margin = 0.15 * (high - low) or max(abs(high) * 0.01, 0.5)
    ax.set_ylim(max(low - margin, bounds[0]), min(high + margin, bounds[1]))
