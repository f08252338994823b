"""The report's Claims section: does a set of results reproduce each paper's headline claim?

For every claim (``harness.suite.claims``) and every condition (suite, dataset, model, noise rate) the results
cover it in, the measured effect with a 95% confidence interval over seeds, judged separately on the
fixed-setting runs and on a tuning study's finals (``<method> (tuned)``), so a reader sees which one a verdict
rests on:

- accuracy (``test_acc``, ``best_test_acc``): method minus against, in percentage points; paired by seed (a
  t interval of the per-seed differences) when both ran on the same seeds, Welch's interval otherwise;
- ``cost_ratio``: train time of method over against, the interval of the log ratio (paired or Welch) taken
  back with exp (a ratio of geometric means);
- ``sam_fraction``: the method's own mean with its t interval;
- ``extra_state_ratio``: the method's perturbation state (``perturbation_state_bytes``: optimizer state beyond
  its base optimizer's) over against's; bytes do not vary with the seed: exact, judged from one seed.

Verdict: **reproduced** when the interval lies on the claimed side of the bound, **not reproduced** when it
lies wholly on the other side (it excludes the claimed margin), **inconclusive** otherwise (one seed, or an
interval that straddles the bound; the number of seeds per method that would settle it, were the effect and
the spread as measured, is estimated). A claim the results cannot test is listed as not covered, saying what is
missing and which shipped suites test it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from harness.report.gather import CONDITION
from harness.report.summary import TUNED
from harness.report.tables import Table
from harness.suite.claims import Claim

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
JUDGED = {"": "fixed settings", "final": "tuned"}
CONDITION_KEYS = ("suite", *CONDITION)
#: Beyond this many seeds per method the estimate says "more than".
MAX_SEEDS = 1000


@dataclass(frozen=True)
class Verdict:
    """One claim judged in one condition on one kind of runs (``judged``: fixed settings or tuned)."""

    claim: Claim
    judged: str
    condition: tuple
    method: str
    against: str
    n: int
    paired: bool
    effect: float
    low: float
    high: float
    verdict: str
    settle: str


@dataclass(frozen=True)
class Uncovered:
    """A claim no condition of the results can test, and why."""

    claim: Claim
    missing: str


def judge(runs: pd.DataFrame, claims: Sequence[Claim]) -> tuple[list[Verdict], list[Uncovered]]:
    """Every claim judged on ``runs`` (the report's averaged runs: fixed settings and renamed finals)."""
    ok = runs[runs["status"] == "ok"].reset_index(drop=True)
    ok["_role"] = ok["role"].fillna("") if "role" in ok else ""
    verdicts: list[Verdict] = []
    uncovered: list[Uncovered] = []
    for claim in claims:
        found = [v for role in JUDGED for v in _judge_claim(claim, ok[ok["_role"] == role], JUDGED[role])]
        verdicts += found
        if not found:
            uncovered.append(Uncovered(claim, _missing(claim, ok)))
    return verdicts, uncovered


def _of_preset(rows: pd.DataFrame, preset: str, params=None) -> pd.DataFrame:
    """The rows of methods built from ``preset``; a row that records no preset (a folder written by hand or
    before the column) counts when its method is named after it."""
    recorded = rows["preset"].fillna("") if "preset" in rows else pd.Series("", index=rows.index)
    named = rows["method"].isin([preset, f"{preset}{TUNED}"])
    chosen = rows[(recorded == preset) | ((recorded == "") & named)]
    for key, value in (params or {}).items():
        if key not in chosen:
            return chosen.iloc[:0]
        chosen = chosen[chosen[key] == value]
    return chosen


def _judge_claim(claim: Claim, rows: pd.DataFrame, judged: str) -> list[Verdict]:
    rows = rows[(rows["noise_rate"] >= claim.noise_min) & (rows["noise_rate"] <= claim.noise_max)]
    verdicts = []
    for condition, here in rows.groupby(list(CONDITION_KEYS), sort=True, dropna=False):
        subjects = _of_preset(here, claim.method, claim.params)
        against = _reference(_of_preset(here, claim.against), claim.against) if claim.against else None
        if claim.against and against is None:
            continue
        for method, mine in subjects.groupby("method", sort=True):
            if against is not None and method == against[0]:
                continue
            verdicts.append(_verdict(claim, judged, condition, method, mine, against))
    return verdicts


def _reference(rows: pd.DataFrame, preset: str) -> tuple[str, pd.DataFrame] | None:
    """The method a claim compares with: the one named after its preset (or its tuned finals), else the first."""
    names = sorted(rows["method"].unique())
    if not names:
        return None
    name = next((n for n in (preset, f"{preset}{TUNED}") if n in names), names[0])
    return name, rows[rows["method"] == name]


def _verdict(claim, judged, condition, method, mine, against) -> Verdict:
    column = claim.column
    a = _by_seed(mine, column)
    b = _by_seed(against[1], column) if against is not None else None
    name = against[0] if against is not None else ""
    if claim.metric == "extra_state_ratio":
        extra = b.mean()
        effect = a.mean() / extra if extra > 0 else math.nan
        n = min(len(a), len(b))
        verdict = (REPRODUCED if claim.holds(effect) else NOT_REPRODUCED) if math.isfinite(effect) else INCONCLUSIVE
        settle = "" if math.isfinite(effect) else f"no perturbation_state_bytes of {name} (folder written before it)"
        return Verdict(claim, judged, condition, method, name, n, False, effect, effect, effect, verdict, settle)
    log = claim.metric == "cost_ratio"
    scale = 100.0 if claim.unit == "points" else 1.0
    a = np.log(a) if log else a * scale
    b = (np.log(b) if log else b * scale) if b is not None else None
    paired = b is not None and len(a) >= 2 and set(a.index) == set(b.index)
    if b is None:
        sample, mean, spread = a.to_numpy(), a.mean(), a.std(ddof=1) if len(a) > 1 else math.nan
        n = len(a)
    elif paired:
        diffs = (a - b.reindex(a.index)).to_numpy()
        sample, mean, spread, n = diffs, diffs.mean(), diffs.std(ddof=1), len(diffs)
    else:
        sample, mean, n = None, a.mean() - b.mean(), min(len(a), len(b))
        spread = math.sqrt(a.var(ddof=1) + b.var(ddof=1)) if len(a) > 1 and len(b) > 1 else math.nan
    low, high = _interval(sample, a, b)
    bound = math.log(claim.bound) if log and claim.bound > 0 else claim.bound
    if log:
        mean, low, high = math.exp(mean), math.exp(low), math.exp(high)
    verdict, settle = _decide(claim, low, high, n, abs(math.log(mean) - bound) if log else abs(mean - bound), spread)
    return Verdict(claim, judged, condition, method, name, n, paired, mean, low, high, verdict, settle)


def _by_seed(rows: pd.DataFrame, column: str) -> pd.Series:
    """The column's values by seed (the mean where one seed ran twice, e.g. in two folders)."""
    values = pd.to_numeric(rows[column], errors="coerce") if column in rows else pd.Series(np.nan, index=rows.index)
    return values.groupby(rows["seed"]).mean().dropna()


def _interval(sample, a: pd.Series, b: pd.Series | None) -> tuple[float, float]:
    """The 95% interval: one sample (paired differences or one method's values) or Welch's of two."""
    if sample is not None:
        if len(sample) < 2:
            return math.nan, math.nan
        if np.ptp(sample) == 0:
            return float(sample[0]), float(sample[0])
        interval = stats.ttest_1samp(sample, 0.0).confidence_interval(0.95)
        return float(interval.low), float(interval.high)
    if len(a) < 2 or len(b) < 2:
        return math.nan, math.nan
    if a.var() == 0 and b.var() == 0:
        return a.mean() - b.mean(), a.mean() - b.mean()
    interval = stats.ttest_ind(a.to_numpy(), b.to_numpy(), equal_var=False).confidence_interval(0.95)
    return float(interval.low), float(interval.high)


def _decide(claim: Claim, low: float, high: float, n: int, gap: float, spread: float) -> tuple[str, str]:
    """The verdict from the interval, and what would settle an inconclusive one."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return INCONCLUSIVE, f"{n} seed{'s' if n != 1 else ''}: no interval; run at least 3 seeds per method"
    on_side = low >= claim.bound if claim.direction == "at_least" else high <= claim.bound
    off_side = high < claim.bound if claim.direction == "at_least" else low > claim.bound
    if on_side:
        return REPRODUCED, ""
    if off_side:
        return NOT_REPRODUCED, ""
    return INCONCLUSIVE, _seeds_to_settle(gap, spread, n)


def _seeds_to_settle(gap: float, spread: float, n: int) -> str:
    """``about N seeds per method would settle it``: the n whose t interval half-width is below ``gap``."""
    if not math.isfinite(spread) or gap == 0:
        return "the effect sits on the bound: no number of seeds settles it"
    for seeds in range(max(n, 2), MAX_SEEDS + 1):
        if stats.t.ppf(0.975, seeds - 1) * spread / math.sqrt(seeds) < gap:
            return f"straddles the bound; about {seeds} seeds per method would settle it (at this effect and spread)"
    return f"straddles the bound; more than {MAX_SEEDS} seeds per method would be needed"


def _missing(claim: Claim, ok: pd.DataFrame) -> str:
    """What the results lack for ``claim``, and what to run."""
    needed = [claim.method, *([claim.against] if claim.against else [])]
    absent = [p for p in needed if _of_preset(ok, p, claim.params if p == claim.method else None).empty]
    what = (
        f"no ok run of preset {', '.join(absent)}"
        + (f" with {_params(claim)}" if claim.method in absent and claim.params else "")
        if absent
        else f"no condition with {' and '.join(needed)} together at noise rate in "
        f"[{claim.noise_min:g}, {claim.noise_max:g}]"
    )
    run = f"; run {', '.join('suites/' + s for s in claim.suites)}" if claim.suites else ""
    return what + run


def _params(claim: Claim) -> str:
    return ", ".join(f"{key} = {value}" for key, value in claim.params.items())


def verdict_frame(verdicts: Sequence[Verdict]) -> pd.DataFrame:
    """The verdicts as a tidy table (``claims.parquet``), one row per claim, condition and kind of runs."""
    return pd.DataFrame.from_records(
        [
            {
                "claim": v.claim.id,
                "paper": v.claim.paper,
                "table": v.claim.table,
                "metric": v.claim.metric,
                "judged": v.judged,
                **dict(zip(CONDITION_KEYS, v.condition, strict=True)),
                "method": v.method,
                "against": v.against,
                "n": v.n,
                "paired": v.paired,
                "effect": v.effect,
                "ci95_low": v.low,
                "ci95_high": v.high,
                "direction": v.claim.direction,
                "bound": v.claim.bound,
                "unit": v.claim.unit,
                "paper_effect": v.claim.paper_effect,
                "verdict": v.verdict,
                "settle": v.settle,
            }
            for v in verdicts
        ],
        columns=[
            "claim", "paper", "table", "metric", "judged", *CONDITION_KEYS, "method", "against", "n", "paired",
            "effect", "ci95_low", "ci95_high", "direction", "bound", "unit", "paper_effect", "verdict", "settle",
        ],
    )  # fmt: skip


def verdict_table(verdicts: Sequence[Verdict]) -> Table:
    columns = [
        "claim",
        "paper",
        "judged on",
        "condition",
        "effect",
        "95% CI",
        "claimed",
        "paper shows",
        "n",
        "verdict",
        "to settle",
    ]
    rows = []
    for v in verdicts:
        suite, dataset, model, noise = v.condition
        versus = f"{v.method} vs {v.against}" if v.against else v.method
        rows.append(
            [
                v.claim.id,
                f"{v.claim.paper.split('_')[0]} {v.claim.table}",
                v.judged,
                f"{suite}: {model} {dataset} noise {noise:g}; {versus}",
                _number(v.effect, v.claim.unit),
                f"[{_number(v.low, v.claim.unit)}, {_number(v.high, v.claim.unit)}]" if math.isfinite(v.low) else "-",
                v.claim.describe_bound(),
                _number(v.claim.paper_effect, v.claim.unit),
                f"{v.n}{' paired' if v.paired else ''}",
                v.verdict,
                v.settle,
            ]
        )
    return Table(columns, rows)


def uncovered_table(uncovered: Sequence[Uncovered]) -> Table:
    return Table(
        ["claim", "paper", "statement", "what the results lack"],
        [
            [u.claim.id, f"{u.claim.paper.split('_')[0]} {u.claim.table}", u.claim.statement, u.missing]
            for u in uncovered
        ],
    )


def _number(value: float, unit: str) -> str:
    if not math.isfinite(value):
        return "-"
    if unit == "points":
        return f"{value:+.2f} pt"
    if unit == "fraction":
        return f"{100 * value:.1f}%"
    return f"{value:.3f}x"


@dataclass(frozen=True)
class ClaimGate:
    """``--fail-on claim:ID`` (or ``claim:all``): NEW must not contradict the claim, nor lose BASE's reproduction."""

    text: str
    claim: str  # an id, or "all"

    @classmethod
    def parse(cls, text: str) -> ClaimGate:
        return cls(text, text.partition(":")[2].strip())


def gate(
    gates: Sequence[ClaimGate], base: pd.DataFrame, new: pd.DataFrame, claims: Sequence[Claim]
) -> tuple[list[str], list[Verdict]]:
    """The failures of ``gates`` and NEW's verdicts they judged. A gate fails where NEW's verdict is not
    reproduced, and where BASE reproduced the claim (same condition, runs and method) and NEW does not; a
    claim NEW does not cover cannot be checked (``UsageError``), nor can an unknown id."""
    from harness.errors import UsageError, did_you_mean

    known = {c.id: c for c in claims}
    for g in gates:
        if g.claim != "all" and g.claim not in known:
            raise UsageError(
                f"--fail-on {g.text!r}: no claim {g.claim!r}{did_you_mean(g.claim, known)}; claims: "
                f"{', '.join(sorted(known)) or 'none'} (or claim:all)"
            )
    wanted = [c for c in claims if any(g.claim in ("all", c.id) for g in gates)]
    before, _ = judge(base, wanted)
    after, _ = judge(new, wanted)
    for g in gates:
        if g.claim != "all" and not any(v.claim.id == g.claim for v in after):
            raise UsageError(
                f"--fail-on {g.text!r}: NEW_DIR's results do not cover claim {g.claim!r}, so it cannot be checked"
            )
    if not after:
        raise UsageError(f"--fail-on {', '.join(g.text for g in gates)}: NEW_DIR's results cover no claim")
    reproduced = {_key(v) for v in before if v.verdict == REPRODUCED}
    failures = []
    for v in after:
        where = f"claim:{v.claim.id}: {v.judged}, {' '.join(map(str, v.condition))}, {v.method}"
        if v.verdict == NOT_REPRODUCED:
            failures.append(
                f"{where}: not reproduced in NEW_DIR (effect {_number(v.effect, v.claim.unit)}, "
                f"claimed {v.claim.describe_bound()})"
            )
        elif v.verdict != REPRODUCED and _key(v) in reproduced:
            failures.append(f"{where}: reproduced in BASE_DIR, {v.verdict} in NEW_DIR ({v.settle})")
    return failures, after


def _key(verdict: Verdict) -> tuple:
    return verdict.claim.id, verdict.judged, verdict.condition, verdict.method
