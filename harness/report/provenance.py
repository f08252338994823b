"""Where and with what the results were made: per suite and results folder, the dates, hosts, devices and the
torch, harness and plugin versions the run files record (``harness.results.columns``, the ``environment`` and
``clock`` columns).

A reader of a paper needs them to know what the numbers were measured on; a report of runs from several
machines lists each value once (``, ``-joined). The commit of the code that ran is the ``git_commit`` column
(``harness.run.source``); runs from before it was recorded, or not run from a git checkout, have none, and the
table says so rather than leave a reader to assume one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import pandas as pd

from harness.report.tables import Table

#: (column title, run column) of the values listed as they are.
LISTED = (
    ("host", "host"),
    ("device", "device"),
    ("device name", "device_name"),
    ("torch", "torch_version"),
    ("harness", "harness_version"),
)
COMMIT = "git_commit"
NO_COMMIT = "not recorded (not run from a git checkout, or before sam-harness recorded commits)"


def provenance_table(runs: pd.DataFrame) -> Table:
    """One row per suite and results folder of ``runs``."""
    rows = []
    for (suite, source), group in runs.groupby(["suite", "source"], sort=True):
        rows.append(
            [
                suite,
                source,
                str(len(group)),
                _span(group),
                *(_distinct(group[column]) if column in group else "-" for _, column in LISTED),
                _plugins(group["plugin_versions"]) if "plugin_versions" in group else "-",
                _distinct(group[COMMIT], empty=NO_COMMIT) if COMMIT in group else NO_COMMIT,
            ]
        )
    columns = ["suite", "folder", "runs", "dates (UTC)", *(title for title, _ in LISTED), "plugins", "commit"]
    return Table(columns, rows)


def _span(runs: pd.DataFrame) -> str:
    """``2026-12-01 09:12 to 2026-12-02 17:40``: the first start to the last finish (UTC)."""
    first, last = (
        pd.to_datetime(runs[column], utc=True).agg(pick) if column in runs else pd.NaT
        for column, pick in (("started_at", "min"), ("finished_at", "max"))
    )
    if pd.isna(first) and pd.isna(last):
        return "-"
    return " to ".join("?" if pd.isna(t) else f"{t:%Y-%m-%d %H:%M}" for t in (first, last))


def _distinct(values: Iterable[object], empty: str = "-") -> str:
    found = sorted({str(v) for v in values if isinstance(v, str) and v})
    return ", ".join(found) or empty


def _plugins(texts: Iterable[object]) -> str:
    """Each distinct ``distribution version`` a run's components came from (``plugin_versions`` JSON)."""
    found = set()
    for text in texts:
        if isinstance(text, str) and text:
            found.update(value for value in json.loads(text).values() if value)
    return ", ".join(sorted(found)) or "-"
