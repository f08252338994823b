"""``harness compare``: the runs of two results folders side by side, with deltas, significance and gates.

Runs are matched by their resolved configuration (the ``config`` column without provenance: the
seed is part of it; the ``p_*`` columns, derived from it, play no part), so a run of BASE and a run of
NEW match when they ran the same thing, whatever schema version wrote either. Matched
runs are grouped by configuration without the seed (one condition and method); for each group and
metric the table shows both means over the seeds ok on both sides, their difference, and Welch's
p-value (``harness.report.seed_statistics``).

A gate ``METRIC:THRESHOLD`` fails when a group's mean change crosses the threshold: a signed
number is an absolute change (``test_acc:-0.005`` fails when new - base < -0.005), a signed
percentage a relative one (``train_time_s:+10%`` fails when new > 1.1 x base), and an unsigned
threshold bounds the change in either direction (``grad_evals:0`` fails on any change). A run ok in
BASE that failed or diverged in NEW, or whose NEW run file cannot be read, fails the comparison as
well. In the spirit of asv's ``compare`` (a factor threshold on the means, the significance beside it).

A gate ``claim:ID`` (``claim:all``: every claim NEW covers) judges a paper's claim on each side
(``harness.report.claims``) and fails where NEW does not reproduce it (the interval excludes the claimed
margin) or where BASE reproduced it and NEW no longer does.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.errors import UsageError, did_you_mean
from harness.report import claims as judged_claims
from harness.report.claims import ClaimGate
from harness.report.gather import GROUP, check_averageable, configuration, configuration_keys, group_label, load
from harness.report.seed_statistics import two_sample
from harness.report.studies import split
from harness.report.summary import PERCENT_DECIMALS
from harness.report.tables import GROUP_COLUMNS, PERCENT, Table, first_line, group_cells, markdown
from harness.results.hyperparameters import PREFIX as HYPERPARAMETER_PREFIX
from harness.results.read import Skipped
from harness.suite.claims import Claim

#: Metrics shown for every group (those present on both sides), before the gated ones.
SHOWN = ("test_acc", "train_time_s", "sam_fraction", "grad_evals", "optimizer_state_bytes", "peak_device_bytes")
#: Settings that differ between the folders named in the no-match message before "and N more".
DIFFERING_SHOWN = 8


@dataclass(frozen=True)
class Gate:
    """``METRIC:THRESHOLD``: a limit on the change of a metric's mean from BASE to NEW."""

    text: str
    metric: str
    threshold: float
    relative: bool
    direction: int  # -1: fail below the threshold, +1: fail above it, 0: fail beyond it either way

    @classmethod
    def parse(cls, text: str) -> Gate:
        metric, _, value = text.rpartition(":")
        relative = value.strip().endswith("%")
        number = value.strip().removesuffix("%").strip()
        try:
            threshold = float(number)
        except ValueError:
            threshold = math.nan
        if not metric or not math.isfinite(threshold):
            raise UsageError(
                f"--fail-on {text!r}: expected METRIC:THRESHOLD, e.g. test_acc:-0.005 (absolute change), "
                "train_time_s:+10% (relative change) or grad_evals:0 (no change either way)"
            )
        direction = -1 if number.startswith("-") else 1 if number.startswith("+") else 0
        return cls(text, metric.strip(), threshold / 100 if relative else threshold, relative, direction)

    def change(self, base: float, new: float) -> float:
        """new - base, or (new - base) / |base| for a relative gate."""
        if not self.relative:
            return new - base
        if base == 0:
            return 0.0 if new == 0 else math.copysign(math.inf, new)
        return (new - base) / abs(base)

    def fails(self, base: float, new: float) -> bool:
        change = self.change(base, new)
        if self.direction < 0:
            return change < self.threshold
        if self.direction > 0:
            return change > self.threshold
        return abs(change) > abs(self.threshold)

    def describe(self, base: float, new: float) -> str:
        """``change -1.2 (fails below -0.5)`` in the gate's units: percent for a relative gate, percentage points
        for an absolute one on an accuracy (``PERCENT``), else the metric's own."""
        scale, unit = (100, "%") if self.relative else (100, " pt") if self.metric in PERCENT else (1, "")
        if self.direction == 0:
            bound = f"beyond +-{abs(scale * self.threshold):g}{unit}"
        else:
            bound = f"{'below' if self.direction < 0 else 'above'} {scale * self.threshold:+g}{unit}"
        return f"change {scale * self.change(base, new):+.6g}{unit} (fails {bound})"


@dataclass(frozen=True)
class Comparison:
    """The table of both sides, the messages of everything that failed, and the printable Markdown."""

    table: pd.DataFrame
    failures: list[str]
    markdown: str


def _side(
    path: str | Path, name: str, on_skip: Callable[[Skipped], None] | None
) -> tuple[pd.DataFrame, tuple[Skipped, ...]]:
    """The runs of one side that record their configuration, keyed, and the files skipped reading it."""
    results = load([path], on_skip)
    runs = results.runs
    has_config = runs["config"].notna() & (runs["config"] != "")
    keys = [
        configuration_keys(c) if known else (None, None) for c, known in zip(runs["config"], has_config, strict=True)
    ]
    runs["key"], runs["group_key"] = [key for key, _ in keys], [group for _, group in keys]
    check_averageable(runs, seedless=runs["group_key"])
    runs = runs[has_config].copy()
    if runs.empty:
        raise UsageError(f"{name} {path}: no run records its configuration (config column); nothing to match")
    return runs, results.skipped


def _check_metrics(gates: Sequence[Gate], base: pd.DataFrame, new: pd.DataFrame) -> None:
    for gate in gates:
        for name, runs in (("BASE_DIR", base), ("NEW_DIR", new)):
            if gate.metric not in runs:
                numeric = [
                    c
                    for c in runs.columns
                    if pd.api.types.is_numeric_dtype(runs[c]) and not c.startswith(HYPERPARAMETER_PREFIX)
                ]
                raise UsageError(
                    f"--fail-on {gate.text!r}: {name} has no column {gate.metric!r}"
                    f"{did_you_mean(gate.metric, numeric)}; numeric columns: {', '.join(numeric)}"
                )


def parse_gate(text: str) -> Gate | ClaimGate:
    """``--fail-on TEXT``: a claim gate (``claim:ID``) or a metric gate (``METRIC:THRESHOLD``)."""
    return ClaimGate.parse(text) if text.strip().startswith("claim:") else Gate.parse(text)


def compare(
    base_dir: str | Path,
    new_dir: str | Path,
    gates: Sequence[Gate | ClaimGate] = (),
    on_skip: Callable[[Skipped], None] | None = None,
    claims: Sequence[Claim] = (),
) -> Comparison:
    """Match the runs of ``new_dir`` to those of ``base_dir`` and apply ``gates``.

    A file of either folder that cannot be read, or is not a run file, is skipped and passed to
    ``on_skip`` (``harness.report.gather.load``); it fails no gate, except a NEW run file that cannot be read
    for a run ok in BASE: that run is missing from NEW, and fails the comparison as a failed run does.
    """
    (base, _), (new, new_skipped) = _side(base_dir, "BASE_DIR", on_skip), _side(new_dir, "NEW_DIR", on_skip)
    claim_gates = [g for g in gates if isinstance(g, ClaimGate)]
    gates = [g for g in gates if not isinstance(g, ClaimGate)]
    _check_metrics(gates, base, new)
    matched = base.merge(new, on="key", suffixes=("_base", "_new"))
    if matched.empty:
        raise UsageError(
            f"no run of {new_dir} matches a run of {base_dir} by configuration (provenance ignored): "
            f"{_differences(base, new)}"
        )
    metrics = list(dict.fromkeys([*(m for m in SHOWN if m in base and m in new), *(g.metric for g in gates)]))
    failures = _status_regressions(matched) + _unread_in_new(base, matched, new_skipped)
    if claim_gates:
        failures += judged_claims.gate(claim_gates, split(base).averaged, split(new).averaged, claims)[0]
    both_ok = matched[(matched["status_base"] == "ok") & (matched["status_new"] == "ok")]
    values = [f"{metric}_{side}" for metric in metrics for side in ("base", "new")]
    shown = both_ok[list(dict.fromkeys(["group_key_base", *(f"{column}_base" for column in GROUP), *values]))]
    shown = shown.assign(**{column: pd.to_numeric(shown[column], errors="coerce") for column in values})
    records, evaluated = [], dict.fromkeys((g.text for g in gates), 0)
    for _, rows in shown.groupby("group_key_base", sort=False):  # only the columns used: each group is a copy
        first = rows.iloc[0]
        group = {column: first[f"{column}_base"] for column in GROUP}
        for metric in metrics:
            pairs = rows[[f"{metric}_base", f"{metric}_new"]].dropna()
            if pairs.empty:
                continue
            before, after = pairs.iloc[:, 0].to_numpy(), pairs.iloc[:, 1].to_numpy()
            base_mean, new_mean = float(np.mean(before)), float(np.mean(after))
            test = two_sample(after, before)
            verdicts = []
            for gate in (g for g in gates if g.metric == metric):
                evaluated[gate.text] += 1
                if gate.fails(base_mean, new_mean):
                    verdicts.append(f"FAIL {gate.text}")
                    failures.append(
                        f"{gate.text}: {group_label(group)}: {metric} {_value(metric, base_mean)} -> "
                        f"{_value(metric, new_mean)}, "
                        f"{gate.describe(base_mean, new_mean)}"
                    )
                else:
                    verdicts.append(f"pass {gate.text}")
            records.append(
                {
                    **group,
                    "metric": metric,
                    "seeds": len(pairs),
                    "base": base_mean,
                    "new": new_mean,
                    "delta": new_mean - base_mean,
                    "delta_rel": (new_mean - base_mean) / abs(base_mean) if base_mean else math.nan,
                    "welch_p": test.welch_p,
                    "test_note": test.note,
                    "gate": "; ".join(verdicts),
                }
            )
    unevaluated = [text for text, count in evaluated.items() if count == 0]
    if unevaluated:
        raise UsageError(
            f"--fail-on {', '.join(unevaluated)}: no condition has values of that metric on both sides, "
            "so the gate cannot be checked"
        )
    table = pd.DataFrame.from_records(records)
    return Comparison(table, failures, _markdown(base_dir, new_dir, base, new, matched, table, gates, failures))


def _status_regressions(matched: pd.DataFrame) -> list[str]:
    """A message per run that was ok in BASE and failed or diverged in NEW."""
    broken = matched[(matched["status_base"] == "ok") & (matched["status_new"] != "ok")]
    return [
        f"{run_id}: ok in BASE_DIR, {status} in NEW_DIR: {first_line(error)}"
        for run_id, status, error in zip(broken["run_id_new"], broken["status_new"], broken["error_new"], strict=True)
    ]


def _unread_in_new(base: pd.DataFrame, matched: pd.DataFrame, skipped: Sequence[Skipped]) -> list[str]:
    """Messages for the runs ok in BASE and missing from NEW while NEW has run files that cannot be read:
    those runs may be in them, so they must not escape the check that they are still ok. A file named
    ``<run_id>.parquet`` after such a run is named with it; the others are counted together."""
    unread = [file for file in skipped if file.kind == "run" and file.problem != "foreign"]
    lost = base.loc[(base["status"] == "ok") & ~base["key"].isin(matched["key"]), "run_id"].tolist()
    if not unread or not lost:
        return []
    by_run = {file.path.stem: file for file in unread}
    failures = [
        f"{run_id}: ok in BASE_DIR, missing from NEW_DIR: {by_run[run_id]}" for run_id in lost if run_id in by_run
    ]
    others, rest = len(lost) - len(failures), [file for file in unread if file.path.stem not in lost]
    if others and rest:
        shown = "; ".join(map(str, rest[:3])) + (f"; and {len(rest) - 3} more" if len(rest) > 3 else "")
        failures.append(
            f"{others} runs ok in BASE_DIR are missing from NEW_DIR, where {len(rest)} run files cannot be read "
            f"(those runs may be in them): {shown}"
        )
    return failures


def _differences(base: pd.DataFrame, new: pd.DataFrame) -> str:
    """What keeps two folders' runs from matching: each setting whose values differ between them
    (``epochs: 200 in BASE_DIR, 1 in NEW_DIR``), or, when none does, the seeds."""
    sides = [_setting_values(runs) for runs in (base, new)]
    keys = sorted(set(sides[0]) | set(sides[1]))
    differing = [
        f"{key}: {', '.join(sorted(sides[0].get(key, {'absent'})))} in BASE_DIR, "
        f"{', '.join(sorted(sides[1].get(key, {'absent'})))} in NEW_DIR"
        for key in keys
        if sides[0].get(key) != sides[1].get(key)
    ]
    if differing:
        more = len(differing) - DIFFERING_SHOWN
        return (
            "settings that differ: "
            + "; ".join(differing[:DIFFERING_SHOWN])
            + (f"; and {more} more" if more > 0 else "")
        )
    seeds = [", ".join(map(str, sorted(set(runs["seed"].dropna().astype(int))))) for runs in (base, new)]
    return f"the same settings, but no seed in common (seeds {seeds[0]} in BASE_DIR, {seeds[1]} in NEW_DIR)"


def _setting_values(runs: pd.DataFrame) -> dict[str, set[str]]:
    """Every setting of ``runs``' configurations but the seed, with the set of its values (as JSON)."""
    values: dict[str, set[str]] = {}
    for text in dict.fromkeys(runs["config"]):
        for key, value in configuration(text, drop=("seed",)).items():
            values.setdefault(key, set()).add(json.dumps(value, default=str))
    return values


def _value(metric: str, value: float) -> str:
    """A metric's mean as shown: ``94.60%`` for an accuracy or %SAM (``PERCENT``), else ``.6g``."""
    return f"{100 * value:.{PERCENT_DECIMALS}f}%" if metric in PERCENT else f"{value:.6g}"


def _number(value: float, fmt: str) -> str:
    """``value`` in ``fmt``; whole numbers (bytes, counts) in full."""
    if not (isinstance(value, numbers.Real) and math.isfinite(value)):
        return "-"
    return f"{int(value):{'+' if '+' in fmt else ''}d}" if float(value).is_integer() else format(value, fmt)


def _shown_metric(row: pd.Series) -> list[str]:
    """The metric, seeds, base, new and delta cells of a table row: an accuracy or %SAM (``PERCENT``) in percent
    and its delta in percentage points, another metric in its own units (whole numbers in full)."""
    metric = row["metric"]
    if metric in PERCENT:
        base, new, delta = (
            f"{100 * row[c]:{sign}.{PERCENT_DECIMALS}f}" for c, sign in (("base", ""), ("new", ""), ("delta", "+"))
        )
        return [f"{metric} (%)", str(row["seeds"]), base, new, delta]
    shown = [_number(row["base"], ".6g"), _number(row["new"], ".6g"), _number(row["delta"], "+.4g")]
    return [metric, str(row["seeds"]), *shown]


def _markdown(
    base_dir: str | Path,
    new_dir: str | Path,
    base: pd.DataFrame,
    new: pd.DataFrame,
    matched: pd.DataFrame,
    table: pd.DataFrame,
    gates: Sequence[Gate],
    failures: list[str],
) -> str:
    parts = [
        "# harness compare",
        f"BASE {base_dir}: {len(base)} runs; NEW {new_dir}: {len(new)} runs; {len(matched)} matched by "
        "configuration (provenance ignored). Means over the seeds ok on both sides (accuracies and %SAM in %, their "
        "delta in percentage points); p: Welch's t-test, two-sided.",
    ]
    if not table.empty:
        columns = [*GROUP_COLUMNS, "metric", "seeds", "base", "new", "delta", "delta %", "p Welch", "gate"]
        rows = [
            [
                *group_cells(r),
                *_shown_metric(r),
                f"{100 * r['delta_rel']:+.2f}%" if math.isfinite(r["delta_rel"]) else "-",
                f"{r['welch_p']:.4f}" if math.isfinite(r["welch_p"]) else r["test_note"] or "-",
                r["gate"],
            ]
            for _, r in table.iterrows()
        ]
        parts.append(markdown(Table(columns, rows)))
    fixed = matched[(matched["status_base"] != "ok") & (matched["status_new"] == "ok")]
    if len(fixed):
        parts.append(f"{len(fixed)} runs not ok in BASE are ok in NEW: {', '.join(fixed['run_id_new'])}")
    only_base, only_new = set(base["key"]) - set(new["key"]), set(new["key"]) - set(base["key"])
    if only_base or only_new:
        parts.append(f"Unmatched: {len(only_base)} runs only in BASE, {len(only_new)} only in NEW (not compared).")
    if gates:
        parts.append("Gates: " + ", ".join(g.text for g in gates))
    if failures:
        parts += [f"## FAILED ({len(failures)})", "\n".join(f"- {f}" for f in failures)]
    else:
        parts.append("compare: ok" + (", every gate passed" if gates else ""))
    return "\n\n".join(parts) + "\n"
