"""A group's published numbers, each beside the measured column it reports.

A run carries every published cell it matched (the ``references`` column, one per suite ``reference:``
block: ``harness.suite.references``); folders written before that column hold one
``reference_test_acc`` and ``reference_source`` instead, read here as a ``final`` cell. A cell that
reports the ``final`` test accuracy is compared with the mean of ``test_acc``, one that reports the
``best`` iterate's (nuSAM's Tables 2-3: 002 Sec. 5.1, shared/papers/seed_nusam.md 6.1, 7.1) with the mean of
``best_test_acc`` (``harness.contract.run_spec.REPORTED``); a published test error is already
converted to an accuracy (``harness.results.reference``).
"""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from harness.contract.run_spec import REPORTED, ReferenceCell
from harness.report.seed_statistics import describe


def published(rows: pd.DataFrame, ok: pd.DataFrame) -> dict[str, Any]:
    """The summary columns of a group's published numbers (``rows``: its runs, ``ok``: those ok).

    ``paper_cells`` (JSON) lists every distinct cell with its source, what it reports and the mean,
    standard deviation and count of the measured column it is compared with; ``reference_test_acc``,
    ``reference_source`` and ``paper_diff`` (measured mean minus published) are the first cell's.
    """
    cells = [_compared(cell, ok) for cell in _cells(rows)]
    first = cells[0] if cells else None
    return {
        "reference_test_acc": first["test_acc"] if first else math.nan,
        "reference_source": first["source"] if first else "",
        "paper_diff": first["measured_mean"] - first["test_acc"] if first else math.nan,
        "paper_cells": json.dumps(cells),
    }


def _cells(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """The distinct cells the group's runs carry, in the order the suite's blocks gave them."""
    found: dict[str, dict[str, Any]] = {}
    for text in rows["references"].dropna() if "references" in rows else []:
        for fields in json.loads(text) if text else []:
            cell = ReferenceCell(**fields)
            found.setdefault(cell.source, {**fields, "source": cell.source})
    if found or "reference_test_acc" not in rows or not rows["reference_test_acc"].notna().any():
        return list(found.values())
    sources = rows["reference_source"].dropna() if "reference_source" in rows else pd.Series([], dtype=str)
    source = str(sources[sources != ""].iloc[0]) if (sources != "").any() else ""
    value = float(rows["reference_test_acc"].dropna().iloc[0])
    return [{"source": source, "metric": "test_acc", "test_acc": value, "reported": "final", "differs": ""}]


def _compared(cell: dict[str, Any], ok: pd.DataFrame) -> dict[str, Any]:
    """``cell`` with the measured column it reports and that column's mean, std and count over ``ok``."""
    column = REPORTED[cell["reported"]]
    measured = describe(ok[column]) if column in ok else describe([])
    return {
        **cell,
        "measured_column": column,
        "measured_mean": measured.mean,
        "measured_std": measured.std,
        "measured_n": measured.n,
    }
