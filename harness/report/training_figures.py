"""The report's figures of how training went, step by step (the step trace) and epoch by epoch (the history).

- AE-SAM's decision (001 Sec. 3.2, Figs. 1-2): for every method whose scheduler reports a ``threshold`` in the
  step trace (``trace_every``: ``harness.run.trace``), the squared gradient norm ``||g_t||^2`` of each traced
  step against the adaptive threshold ``mu_t + c_t sigma_t``, the steps that perturbed marked; one seed per
  method (its lowest), as the paper draws one run.
- %SAM per epoch, per method, from the history: drawn beside the AE-SAM panels, and on its own for a
  condition where some method's share varies between epochs or lies strictly between 0 and 1.
- GSAM's diagnostics (004 Sec. 3-5): for every method whose optimizer reports ``cos_g_gp``, the surrogate gap
  ``h = f(w + e) - f(w)`` of its perturbed steps (beside SAM's, when SAM was traced) and ``cos(g, g_p)``, the
  cosine between the clean and the perturbed gradient; means over seeds per traced step, smoothed by a
  centred moving average (its window in the caption).

Each figure is drawn only when the results hold its data (a folder run without ``trace_every`` has no step
trace: only the %SAM figure can be drawn).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from harness.report.figures import Plot, condition_title, grid, legend, slug
from harness.report.gather import CONDITION
from harness.report.summary import SAM, TUNED

#: Traced points per smoothing window of the GSAM curves (a window of ``len // SMOOTHING`` points, at least 1).
SMOOTHING = 50


def training_figures(
    suite: str, runs: pd.DataFrame, history: pd.DataFrame, steps: pd.DataFrame, colors: dict
) -> list[Plot]:
    """The figures of one suite (``runs``, ``history`` and ``steps`` hold that suite's averaged runs only)."""
    ok = runs.loc[runs["status"] == "ok", ["source", "run_id", *CONDITION, "method", "seed"]]
    traced = steps.merge(ok, on=["source", "run_id"], how="inner") if not steps.empty else pd.DataFrame()
    shares = _epoch_shares(history.merge(ok, on=["source", "run_id"], how="inner")) if not history.empty else None
    plots = []
    for condition, _ in ok.groupby(list(CONDITION), sort=True, dropna=False):
        here = _select(traced, condition)
        epochs = _select(shares, condition) if shares is not None else pd.DataFrame()
        where = condition_title(*condition)
        adaptive = _methods_with(here, "threshold")
        if adaptive or _varies(epochs):
            plots.append(_decision_figure(suite, condition, where, here, epochs, adaptive, colors))
        gsam = _methods_with(here, "cos_g_gp")
        if gsam:
            plots.append(_gsam_figure(suite, condition, where, here, gsam, colors))
    return plots


def _select(table: pd.DataFrame | None, condition: tuple) -> pd.DataFrame:
    if table is None or table.empty:
        return pd.DataFrame()
    mask = np.ones(len(table), dtype=bool)
    for key, value in zip(CONDITION, condition, strict=True):
        mask &= (table[key] == value).to_numpy()
    return table[mask]


def _methods_with(traced: pd.DataFrame, column: str) -> list[str]:
    if traced.empty or column not in traced:
        return []
    return sorted(traced.loc[traced[column].notna(), "method"].unique())


def _epoch_shares(history: pd.DataFrame) -> pd.DataFrame:
    """Per run and epoch, the share of that epoch's steps that perturbed (from the cumulative %SAM)."""
    rows = history.dropna(subset=["step", "sam_fraction"]).sort_values(["source", "run_id", "epoch"])
    perturbed = rows["sam_fraction"] * rows["step"]
    by_run = rows.groupby(["source", "run_id"], sort=False)
    new_steps = rows["step"] - by_run["step"].shift(fill_value=0)
    new_perturbed = perturbed - perturbed.groupby([rows["source"], rows["run_id"]], sort=False).shift(fill_value=0)
    share = (new_perturbed / new_steps.where(new_steps > 0)).clip(0, 1)
    return rows.assign(epoch_share=share)[[*CONDITION, "method", "seed", "epoch", "epoch_share"]]


def _varies(epochs: pd.DataFrame) -> bool:
    """Whether some method's per-epoch %SAM changes over training or lies strictly between 0 and 1."""
    if epochs.empty:
        return False
    spread = epochs.groupby("method")["epoch_share"].agg(["min", "max"])
    return bool(((spread["max"] - spread["min"] > 1e-9) | ((spread["min"] > 0) & (spread["max"] < 1))).any())


def _decision_figure(
    suite: str, condition: tuple, where: str, traced: pd.DataFrame, epochs: pd.DataFrame, adaptive: list, colors: dict
) -> Plot:
    figure, axes = grid(len(adaptive) + 1, f"{suite}: when the step was sharpness-aware, {where}")
    for ax, method in zip(axes, adaptive, strict=False):
        rows = traced[(traced["method"] == method) & traced["threshold"].notna()]
        seed = rows["seed"].min()
        _threshold_panel(ax, rows[rows["seed"] == seed].sort_values("step"), colors[method])
        ax.set_title(f"{method}, seed {seed:g}: ||g||^2 against the threshold", fontsize=10)
    share = axes[-1]
    for method, rows in epochs.groupby("method", sort=True):
        curve = rows.groupby("epoch")["epoch_share"].mean()
        share.plot(curve.index, 100 * curve.to_numpy(), color=colors[method], marker="." if len(curve) < 30 else None)
    share.set(title="%SAM per epoch (mean over seeds)", xlabel="epoch", ylabel="%SAM", ylim=(-3, 103))
    share.grid(alpha=0.3)
    legend(figure, colors, epochs["method"] if not epochs.empty else adaptive)
    return Plot(
        f"sam_decisions-{slug(suite, *condition)}.png",
        f"{suite}, {where}: AE-SAM's rule (001 Figs. 1-2), the squared gradient norm of each traced step against "
        "the adaptive threshold, filled points where the step perturbed; and %SAM per epoch for every method",
        figure,
    )


def _threshold_panel(ax: Axes, rows: pd.DataFrame, color: tuple) -> None:
    steps, norms = rows["step"].to_numpy(), rows["grad_sq_norm"].to_numpy(dtype=float)
    ax.plot(steps, norms, color="0.55", lw=0.8, label="||g||^2")
    ax.plot(steps, rows["threshold"].to_numpy(dtype=float), color="tab:red", lw=1.2, label="threshold")
    hit = rows["perturbed"].to_numpy(dtype=bool)
    ax.scatter(steps[hit], norms[hit], s=9, color=color, zorder=3, label="perturbed step")
    if len(norms) and np.nanmin(norms) > 0:
        ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="||g||^2")
    ax.legend(fontsize=7, loc="best")  # inside the panel, below its title: placed where it covers least data
    ax.grid(alpha=0.3)


def _gsam_figure(suite: str, condition: tuple, where: str, traced: pd.DataFrame, gsam: list, colors: dict) -> Plot:
    compared = [*gsam, *(m for m in (SAM, f"{SAM}{TUNED}") if m in set(traced["method"]) and m not in gsam)]
    figure, (gap, cosine) = grid(2, f"{suite}: GSAM's surrogate gap and gradient angle, {where}")
    windows = [_smoothed_mean(gap, traced, method, "surrogate_gap", colors[method]) for method in compared] + [
        _smoothed_mean(cosine, traced, method, "cos_g_gp", colors[method]) for method in gsam
    ]
    gap.set(title="surrogate gap h = f(w + e) - f(w), perturbed steps", xlabel="step", ylabel="h")
    cosine.set(title="cos(g, g_p): clean against perturbed gradient", xlabel="step", ylabel="cosine")
    for ax in (gap, cosine):
        ax.grid(alpha=0.3)
    legend(figure, colors, compared)
    window = max(windows, default=1)
    return Plot(
        f"gsam_diagnostics-{slug(suite, *condition)}.png",
        f"{suite}, {where}: GSAM's surrogate gap (004 eq. 4, with SAM's where traced) and cos(g, g_p) over "
        f"training; means over seeds per traced step, moving average over up to {window} traced steps",
        figure,
    )


def _smoothed_mean(ax: Axes, traced: pd.DataFrame, method: str, column: str, color: tuple) -> int:
    """Draw ``method``'s seed mean of ``column`` per traced step, smoothed; return the window (traced steps)."""
    rows = traced[(traced["method"] == method)]
    if column not in rows:
        return 1
    curve = rows.dropna(subset=[column]).groupby("step")[column].mean()
    if curve.empty:
        return 1
    window = max(1, len(curve) // SMOOTHING)
    smooth = curve.rolling(window, min_periods=1, center=True).mean()
    ax.plot(smooth.index, smooth.to_numpy(), color=color, lw=1.2)
    return window
