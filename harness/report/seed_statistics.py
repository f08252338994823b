"""Statistics across seeds: mean, spread, a 95% confidence interval, two-sample tests, Holm's correction.

Following asv (``asv/_stats.py``): the raw samples stay available, a comparison is a significance
test rather than a bare difference of means, and too few samples is said plainly ("n too small")
instead of producing a number that looks meaningful. shared/DESIGN.md section 7.

An interval is clipped to what its quantity can be (``describe(values, bounds=ACCURACY_BOUNDS)``): the t
interval of two seeds near 100% reaches past 100% (t.ppf(0.975, 1) = 12.7), and no accuracy can.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

#: Fewest samples per side for a confidence interval or a two-sample test.
MIN_SAMPLES = 2
N_TOO_SMALL = "n too small"
#: Fewest samples for a t interval that says much: with 2, t.ppf(0.975, 1) = 12.7 times the standard error.
FEW_SAMPLES = 3
#: What an accuracy (a fraction) can be.
ACCURACY_BOUNDS = (0.0, 1.0)


@dataclass(frozen=True)
class Sample:
    """Summary of one sample (one value per seed): ``std`` and the interval are NaN when n < 2.

    ``ci95`` is the half-width of the 95% interval of the mean (Student's t, n - 1 degrees of freedom);
    ``ci95_low`` and ``ci95_high`` are its ends clipped to ``bounds``, what the quantity can be.
    """

    n: int
    mean: float
    std: float
    median: float
    ci95: float
    bounds: tuple[float, float] = (-math.inf, math.inf)

    @property
    def ci95_low(self) -> float:
        return max(self.mean - self.ci95, self.bounds[0])

    @property
    def ci95_high(self) -> float:
        return min(self.mean + self.ci95, self.bounds[1])


def describe(values: Sequence[float], bounds: tuple[float, float] = (-math.inf, math.inf)) -> Sample:
    """Mean, sample standard deviation (ddof=1), median and the 95% CI half-width of ``values``.

    The interval is ``t.ppf(0.975, n - 1) * std / sqrt(n)``, its ends clipped to ``bounds``; NaN values are
    dropped first.
    """
    data = _finite(values)
    n = len(data)
    if n == 0:
        return Sample(0, math.nan, math.nan, math.nan, math.nan, bounds)
    mean, median = float(np.mean(data)), float(np.median(data))
    if n < MIN_SAMPLES:
        return Sample(n, mean, math.nan, median, math.nan, bounds)
    std = float(np.std(data, ddof=1))
    return Sample(n, mean, std, median, float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)), bounds)


@dataclass(frozen=True)
class Test:
    """Two-sided p-values of Welch's t-test and the Mann-Whitney U test; ``note`` says why one is missing."""

    welch_p: float = math.nan
    mannwhitney_p: float = math.nan
    note: str = ""


def two_sample(a: Sequence[float], b: Sequence[float]) -> Test:
    """Welch's t-test (``ttest_ind(equal_var=False)``) and Mann-Whitney U (two-sided) of ``a`` against ``b``.

    Needs ``MIN_SAMPLES`` finite values on each side, else the note is "n too small". Two samples
    without any spread give no t statistic: Welch's p is then NaN with the note "no variance".
    """
    x, y = _finite(a), _finite(b)
    if len(x) < MIN_SAMPLES or len(y) < MIN_SAMPLES:
        return Test(note=N_TOO_SMALL)
    with warnings.catch_warnings():  # zero variance: scipy warns and returns NaN, which we report
        warnings.simplefilter("ignore", RuntimeWarning)
        welch = float(stats.ttest_ind(x, y, equal_var=False).pvalue)
    mannwhitney = float(stats.mannwhitneyu(x, y, alternative="two-sided").pvalue)
    return Test(welch, mannwhitney, "" if math.isfinite(welch) else "no variance")


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values; NaN entries are left out of the family.

    With the m finite p-values sorted ascending, ``p_(i)`` (i from 0) becomes
    ``max_{j <= i} min(1, (m - j) p_(j))``, then each goes back to its original position.
    """
    values = np.asarray(pvalues, dtype=float)
    adjusted = np.full(values.shape, math.nan)
    finite = np.flatnonzero(np.isfinite(values))
    order = finite[np.argsort(values[finite], kind="stable")]
    m = len(order)
    scaled = np.minimum(1.0, (m - np.arange(m)) * values[order])
    adjusted[order] = np.maximum.accumulate(scaled) if m else scaled
    return adjusted.tolist()


def _finite(values: Sequence[float]) -> np.ndarray:
    data = np.asarray(values, dtype=float)
    return data[np.isfinite(data)]
