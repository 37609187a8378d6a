"""Means with their uncertainty, taken in one pass (pure; no numpy, no scipy).

A `Summary` takes values one at a time (Welford's update; two summaries merge exactly, by
Chan's formula), so a million samples cost a few numbers. Its 95% interval is Wilson's score
interval when every value is 0 or 1 (a rate: `refused`), Student's t interval otherwise; the
difference of two is Newcombe's hybrid score interval for two rates (from the two Wilson
intervals), Welch's t interval for other numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.959963984540054  # the normal distribution's 0.975 quantile
# Student's t 0.975 quantiles for 1..30 degrees of freedom; beyond, the Cornish-Fisher
# expansion below is within 1e-4 of them.
T95 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)  # fmt: skip
WILSON = "wilson"
STUDENT = "t"
METHODS = {
    WILSON: "Wilson score interval (fields whose every value is 0 or 1)",
    STUDENT: "Student t interval (other numbers)",
}
DIFFERENCE_METHODS = {
    WILSON: "Newcombe's hybrid score interval",
    STUDENT: "Welch's t interval",
}


class Summary:
    """Count, mean and sum of squared deviations of the values added, and whether every one
    was 0 or 1."""

    __slots__ = ("binary", "m2", "mean", "n")

    def __init__(self) -> None:
        self.n = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.binary = True

    def add(self, value: float) -> None:
        self.n += 1
        delta = value - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (value - self.mean)
        if value != 0.0 and value != 1.0:
            self.binary = False

    def merge(self, other: Summary) -> None:
        """Adds every value `other` took, as if added here."""
        if other.n == 0:
            return
        total = self.n + other.n
        delta = other.mean - self.mean
        self.m2 += other.m2 + delta * delta * self.n * other.n / total
        self.mean += delta * other.n / total
        self.n = total
        self.binary = self.binary and other.binary

    @property
    def variance(self) -> float:
        """The sample variance (n - 1); 0 for fewer than two values."""
        return self.m2 / (self.n - 1) if self.n > 1 else 0.0

    @property
    def finite(self) -> bool:
        """Whether its numbers are (the values are bounded: report/results.LARGEST_MEANT;
        this is the last guard that no NaN reaches a page or a JSON output)."""
        return math.isfinite(self.mean) and math.isfinite(self.m2) and self.m2 >= 0

    def estimate(self) -> Estimate:
        low: float | None
        high: float | None
        if self.binary:
            low, high = wilson(self.mean * self.n, self.n)
            return Estimate(self.n, self.mean, low, high, WILSON, self.variance)
        low = high = None
        if self.n > 1:
            half = t_quantile(self.n - 1) * math.sqrt(self.variance / self.n)
            low, high = self.mean - half, self.mean + half
        return Estimate(self.n, self.mean, low, high, STUDENT, self.variance)


@dataclass(frozen=True)
class Estimate:
    """A mean over `n` values and its 95% interval (None: one value of a number has none)."""

    n: int
    mean: float
    low: float | None
    high: float | None
    method: str  # WILSON or STUDENT
    variance: float


@dataclass(frozen=True)
class Difference:
    """after - before, with its 95% interval; `excludes_zero` when the interval does."""

    delta: float
    low: float | None
    high: float | None
    method: str

    @property
    def excludes_zero(self) -> bool:
        if self.low is None or self.high is None:
            return False
        return self.low > 0 or self.high < 0


def wilson(successes: float, n: int) -> tuple[float, float]:
    """Wilson's 95% score interval of a rate; (0, 1) for no values."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def t_quantile(df: float) -> float:
    """Student's t 0.975 quantile; a fractional `df` (Welch's) is rounded down in the table,
    the conservative side."""
    if df < 1:
        return math.inf
    if df < len(T95) + 1:
        return T95[int(df) - 1]
    z = Z95
    terms = (
        (z**3 + z) / 4,
        (5 * z**5 + 16 * z**3 + 3 * z) / 96,
        (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
        (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160,
    )
    return z + sum(term / df ** (power + 1) for power, term in enumerate(terms))


def difference(before: Estimate, after: Estimate) -> Difference:
    delta = after.mean - before.mean
    if before.method == WILSON and after.method == WILSON:
        found = _newcombe(before, after, delta)
    else:
        found = _welch(before, after, delta)
    bounds = (found.low, found.high)
    if any(b is not None and not math.isfinite(b) for b in bounds):
        return Difference(delta, None, None, found.method)  # no interval, never an infinite one
    return found


def _newcombe(before: Estimate, after: Estimate, delta: float) -> Difference:
    l1, u1 = wilson(before.mean * before.n, before.n)
    l2, u2 = wilson(after.mean * after.n, after.n)
    low = delta - math.sqrt((after.mean - l2) ** 2 + (u1 - before.mean) ** 2)
    high = delta + math.sqrt((u2 - after.mean) ** 2 + (before.mean - l1) ** 2)
    return Difference(delta, low, high, WILSON)


def _welch(before: Estimate, after: Estimate, delta: float) -> Difference:
    if before.n < 2 or after.n < 2:
        return Difference(delta, None, None, STUDENT)
    a, b = before.variance / before.n, after.variance / after.n
    se = math.sqrt(a + b)
    if se == 0:
        return Difference(delta, delta, delta, STUDENT)
    df = (a + b) ** 2 / (a * a / (before.n - 1) + b * b / (after.n - 1))
    half = t_quantile(df) * se
    return Difference(delta, delta - half, delta + half, STUDENT)
