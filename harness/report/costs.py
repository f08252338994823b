"""The report's cost table per k: what a method that perturbs every k-th step (LookSAM, SAM-k, 000 Table 1)
costs per epoch, from the runs themselves.

For every condition with ERM runs (a tuned method is set against ERM's finals) and runs of methods whose
configuration has a ``p_scheduler_k`` (the periodic schedule's k), the mean train seconds per epoch
(``train_time_s / epochs_completed``) over the ok seeds, and its ratio to ERM's in the same condition beside
the ``1 + 1/k`` a single extra pass every k steps would cost (the LookSAM paper's Table 1 reports seconds per
epoch the same way).
"""

from __future__ import annotations

import pandas as pd

from harness.report.claims import CONDITION_KEYS
from harness.report.summary import ERM, TUNED
from harness.report.tables import Table

K = "p_scheduler_k"


def cost_table(runs: pd.DataFrame) -> Table | None:
    """The cost per k of ``runs`` (the report's averaged runs); None when no run has a k, or no ERM beside it."""
    if K not in runs:
        return None
    ok = runs[runs["status"] == "ok"].copy()
    ok["per_epoch"] = ok["train_time_s"] / ok["epochs_completed"].where(ok["epochs_completed"] > 0)
    rows = []
    for condition, here in ok.groupby(list(CONDITION_KEYS), sort=True, dropna=False):
        erm = {name: here.loc[here["method"] == name, "per_epoch"].mean() for name in (ERM, f"{ERM}{TUNED}")}
        periodic = here[here[K].notna()]
        suite, dataset, model, noise = condition
        for (method, k), group in periodic.groupby(["method", K], sort=True):
            # a tuned method against ERM's finals, a fixed-setting one against ERM's fixed runs (else the other)
            first, other = (
                (erm[f"{ERM}{TUNED}"], erm[ERM]) if method.endswith(TUNED) else (erm[ERM], erm[f"{ERM}{TUNED}"])
            )
            base = first if first > 0 else other
            if not base > 0:
                continue
            seconds = group["per_epoch"].mean()
            rows.append(
                [
                    f"{suite}: {model} {dataset} noise {noise:g}",
                    method,
                    f"{k:g}",
                    f"{seconds:.3f}",
                    f"{base:.3f}",
                    f"{seconds / base:.3f}",
                    f"{1 + 1 / k:.3f}",
                    str(len(group)),
                ]
            )
    if not rows:
        return None
    return Table(["condition", "method", "k", "s / epoch", "ERM s / epoch", "x ERM", "1 + 1/k", "seeds"], rows)
