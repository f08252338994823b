"""The statistics of ``harness bench`` over its rounds: quartiles, paired ratios, excess over theory.

Following asv: medians with a spread, not means, and ratios taken per round between blocks of the same
round (the same drift hits both), the median of those paired ratios reported.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import numpy as np


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """First quartile, median and third quartile (numpy's linear interpolation; one value: itself three times)."""
    q1, median, q3 = np.percentile(values, (25, 50, 75))
    return float(q1), float(median), float(q3)


def paired_ratio(times: dict[str, list[float]], numerator: str, denominator: str) -> tuple[float, float] | None:
    """Median and IQR of the per-round ratios ``numerator / denominator``; None if either is missing."""
    if numerator not in times or denominator not in times:
        return None
    ratios = [a / b for a, b in zip(times[numerator], times[denominator], strict=True) if b > 0]
    if not ratios:
        return None
    q1, median, q3 = quartiles(ratios)
    return median, q3 - q1


def excess_over_theory(
    times: dict[str, list[float]], name: str, erm: str, expected: float | None, fractions: Sequence[float]
) -> float | None:
    """Median over rounds of (ratio to ERM - theoretical ratio), the theory per round for measured fractions.

    The theory is 1 + the share of steps with a second pass: ``expected`` when the scheduler states it,
    else each round's measured share (``fractions``): AE-SAM's varies from round to round (its threshold
    moves with t/T), so each round's ratio is compared with 1 + that round's share.
    """
    if name not in times or erm not in times:
        return None
    values = []
    for r, (mine, base) in enumerate(zip(times[name], times[erm], strict=True)):
        fraction = expected if expected is not None else (fractions[r] if r < len(fractions) else None)
        if fraction is None or base <= 0:
            continue
        values.append(mine / base - (1.0 + fraction))
    return statistics.median(values) if values else None
