"""The report's cost per k: what a method that perturbs every k-th step (LookSAM, SAM-k, 000 Table 1) costs
per epoch, from the runs themselves, as a table and a figure.

For every condition with ERM runs (a tuned method is set against ERM's finals) and runs of methods whose
configuration has a ``p_scheduler_k`` (the periodic schedule's k), the mean train seconds per epoch
(``train_time_s / epochs_completed``) over the ok seeds, and its ratio to ERM's in the same condition beside
the ``1 + 1/k`` a single extra pass every k steps would cost (the LookSAM paper's Table 1 reports seconds per
epoch the same way).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.report.claims import CONDITION_KEYS
from harness.report.figures import Plot, grid, legend, slug
from harness.report.summary import ERM, TUNED
from harness.report.tables import Table

K = "p_scheduler_k"


def cost_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per condition, periodic method and k of ``runs`` (the report's averaged runs): ``suite``,
    ``condition``, ``method``, ``k``, ``seconds`` (per epoch), ``erm_seconds``, ``ratio``, ``seeds``. Empty when
    no run has a k, or no ERM ran beside it."""
    columns = ["suite", "condition", "method", "k", "seconds", "erm_seconds", "ratio", "seeds"]
    if K not in runs:
        return pd.DataFrame(columns=columns)
    ok = runs[runs["status"] == "ok"].copy()
    ok["per_epoch"] = ok["train_time_s"] / ok["epochs_completed"].where(ok["epochs_completed"] > 0)
    rows = []
    for condition, here in ok.groupby(list(CONDITION_KEYS), sort=True, dropna=False):
        erm = {name: here.loc[here["method"] == name, "per_epoch"].mean() for name in (ERM, f"{ERM}{TUNED}")}
        suite, dataset, model, noise = condition
        for (method, k), group in here[here[K].notna()].groupby(["method", K], sort=True):
            # a tuned method against ERM's finals, a fixed-setting one against ERM's fixed runs (else the other)
            first, other = (
                (erm[f"{ERM}{TUNED}"], erm[ERM]) if method.endswith(TUNED) else (erm[ERM], erm[f"{ERM}{TUNED}"])
            )
            base = first if first > 0 else other
            if not base > 0:
                continue
            seconds = group["per_epoch"].mean()
            where = f"{model} {dataset} noise {noise:g}"
            rows.append([suite, where, method, float(k), seconds, base, seconds / base, len(group)])
    return pd.DataFrame(rows, columns=columns)


def cost_table(frame: pd.DataFrame) -> Table | None:
    """``cost_frame``'s rows as the report's table; None when it has none."""
    if frame.empty:
        return None
    rows = [
        [
            f"{r.suite}: {r.condition}",
            r.method,
            f"{r.k:g}",
            f"{r.seconds:.3f}",
            f"{r.erm_seconds:.3f}",
            f"{r.ratio:.3f}",
            f"{1 + 1 / r.k:.3f}",
            str(r.seeds),
        ]
        for r in frame.itertuples()
    ]
    return Table(["condition", "method", "k", "s / epoch", "ERM s / epoch", "x ERM", "1 + 1/k", "seeds"], rows)


def cost_figure(frame: pd.DataFrame, colors: dict) -> list[Plot]:
    """Per suite, the measured cost ratio to ERM against k, a panel per condition, beside the ``1 + 1/k`` curve."""
    plots = []
    for suite, rows in frame.groupby("suite", sort=True):
        conditions = list(rows.groupby("condition", sort=True))
        figure, axes = grid(len(conditions), f"{suite}: train time per epoch against ERM's, per k")
        for ax, (where, points) in zip(axes, conditions, strict=True):
            ks = np.linspace(1, max(points["k"].max(), 2), 100)
            ax.plot(ks, 1 + 1 / ks, color="0.4", ls="--", lw=1, label="1 + 1/k")
            for method, line in points.groupby("method", sort=True):
                line = line.sort_values("k")
                ax.plot(line["k"], line["ratio"], marker="o", color=colors.get(method), label=method)
            ax.axhline(1, color="0.7", lw=0.8)
            ax.set(title=where, xlabel="k (a perturbed step every k steps)", ylabel="x ERM (s / epoch)")
            ax.grid(alpha=0.3)
        legend(figure, colors, rows["method"])
        plots.append(
            Plot(
                f"cost_per_k-{slug(suite)}.png",
                f"{suite}: mean train seconds per epoch of each periodic method over ERM's, against k, with the "
                "1 + 1/k one extra pass every k steps costs (000 Table 1)",
                figure,
            )
        )
    return plots
