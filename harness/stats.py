"""Statistics a reviewer accepts: intervals, a winner only when the data says so, repeats needed.

A benchmark run gives a handful of repeats per cell on a shared, noisy
machine. From them this module answers, with scipy:

- **a cell's median and its confidence interval** (`median_interval`): the
  exact distribution-free interval between two order statistics, whose
  coverage comes from the binomial distribution. With few repeats the
  95 % interval may not exist; the widest one (min to max) is then given
  with the confidence it really has (3 repeats: 75 %).
- **whether two engines differ** (`compare`): a two-sided Mann–Whitney U
  test (exact for small samples) on their run times. With 3 repeats each
  the smallest p-value possible is 0.1, so no difference can be called
  significant at 0.05 however clear it looks: the answer then says
  *indistinguishable at 3 repeats* and how many repeats would decide
  (`repeats_needed`).
- **the winner of a group of cells** (`rank`): the lowest median; each
  engine's ratio to it with a bootstrap interval; significant only when
  the winner beats the runner-up by the test above.

    >>> fast, slow = [1.00, 1.02, 0.99, 1.01, 1.00], [1.50, 1.48, 1.52, 1.49, 1.51]
    >>> result = compare(fast, slow)
    >>> result.significant, round(result.p, 4)
    (True, 0.0079)
    >>> compare([1.0, 1.1, 0.9], [1.05, 0.95, 1.0]).verdict
    'indistinguishable at 3 repeats'
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

ALPHA = 0.05
CONFIDENCE = 0.95


def median_interval(values: list[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """``(low, high, achieved confidence)``: the narrowest order-statistic interval for the median
    with at least ``confidence`` coverage, or the widest there is (min, max) with what it covers.

    >>> median_interval([3.0, 1.0, 2.0])
    (1.0, 3.0, 0.75)
    >>> low, high, level = median_interval([float(i) for i in range(1, 21)])
    >>> (low, high), level >= 0.95
    ((6.0, 15.0), True)
    """
    from scipy.stats import binom

    xs = sorted(values)
    n = len(xs)
    if n == 0:
        raise ValueError("no values")
    best = (xs[0], xs[-1], 1.0 - 2 * binom.cdf(0, n, 0.5))   # [x(1), x(n)]
    for j in range(1, n // 2 + 1):                          # [x(j), x(n-j+1)], 1-based, narrowing
        level = 1.0 - 2 * binom.cdf(j - 1, n, 0.5)
        if level < confidence:
            break
        best = (xs[j - 1], xs[n - j], level)
    return best[0], best[1], round(float(best[2]), 4)


def repeats_needed(a: list[float], b: list[float], alpha: float = ALPHA, power: float = 0.8) -> int:
    """About how many repeats per engine a two-sided Mann–Whitney test needs to tell ``a`` from ``b``.

    At least the smallest n at which even a complete separation can reach ``alpha``; beyond
    that, the normal approximation for the observed effect (difference of medians over the pooled
    spread), with the test's efficiency of 3/pi relative to a t-test.

    >>> repeats_needed([1.0, 1.01, 0.99], [2.0, 2.01, 1.99])
    4
    """
    from scipy.stats import norm

    floor = 2
    while _min_p(floor) >= alpha:
        floor += 1
    spread = statistics.pstdev(a + b) if len(a + b) > 1 else 0.0
    within = math.sqrt((statistics.pvariance(a) + statistics.pvariance(b)) / 2) if len(a) > 1 and len(b) > 1 else spread
    effect = abs(statistics.median(a) - statistics.median(b)) / within if within > 0 else math.inf
    if effect == math.inf:
        return floor
    if effect == 0:
        return 10_000
    n = 2 * ((norm.ppf(1 - alpha / 2) + norm.ppf(power)) / effect) ** 2 * math.pi / 3
    return max(floor, math.ceil(n))


def _min_p(n: int) -> float:
    """The smallest two-sided exact Mann–Whitney p-value possible with n values per side."""
    return 2.0 / math.comb(2 * n, n)


@dataclass(frozen=True)
class Comparison:
    """Two samples of run times compared: ``p`` of the two-sided test and what it allows one to say."""

    p: float
    significant: bool
    repeats: int           # per side, the smaller of the two
    needed: int            # about how many repeats would tell them apart
    verdict: str           # "a is faster" / "indistinguishable at N repeats"


def compare(a: list[float], b: list[float], alpha: float = ALPHA) -> Comparison:
    """Is ``a`` (run times) different from ``b``? Two-sided Mann–Whitney U (exact for small samples)."""
    from scipy.stats import mannwhitneyu

    n = min(len(a), len(b))
    if n == 0:
        return Comparison(1.0, False, 0, repeats_needed(a or [0.0], b or [0.0], alpha), "no repeats to compare")
    p = float(mannwhitneyu(a, b, alternative="two-sided", method="exact" if n <= 8 else "auto").pvalue)
    significant = p < alpha
    faster = "first" if statistics.median(a) < statistics.median(b) else "second"
    verdict = f"the {faster} is faster (p = {p:.3g})" if significant else f"indistinguishable at {n} repeats"
    return Comparison(p, significant, n, repeats_needed(a, b, alpha), verdict)


def ratio_interval(a: list[float], b: list[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """``(ratio, low, high)``: median(a) / median(b), with a percentile bootstrap interval
    (``low == high == ratio`` when either side has a single value).

    >>> r, low, high = ratio_interval([2.0, 2.1, 1.9, 2.0], [1.0, 1.05, 0.95, 1.0])
    >>> round(r, 2), low <= r <= high
    (2.0, True)
    """
    ratio = statistics.median(a) / statistics.median(b)
    if len(a) < 2 or len(b) < 2:
        return ratio, ratio, ratio
    import numpy as np
    from scipy.stats import bootstrap

    res = bootstrap((np.asarray(a), np.asarray(b)), lambda x, y, axis=-1: np.median(x, axis=axis) / np.median(y, axis=axis),
                    confidence_level=confidence, n_resamples=2000, method="percentile", vectorized=True,
                    random_state=np.random.default_rng(0))
    return ratio, float(res.confidence_interval.low), float(res.confidence_interval.high)


@dataclass(frozen=True)
class Ranked:
    """One engine of a group ranked: its median, interval, and ratio to the winner."""

    engine: str
    median: float
    low: float
    high: float
    level: float
    ratio: float           # median / winner's median (1.0 for the winner)
    ratio_low: float
    ratio_high: float


def rank(samples: dict[str, list[float]]) -> tuple[list[Ranked], Comparison | None]:
    """Engines by median run time, and the comparison of the first with the second (None for one engine).

    >>> ranked, leaders = rank({"a": [1.0, 1.01, 0.99, 1.0, 1.02], "b": [2.0, 2.1, 1.9, 2.0, 2.05]})
    >>> [r.engine for r in ranked], leaders.significant
    (['a', 'b'], True)
    """
    present = {e: v for e, v in samples.items() if v}
    order = sorted(present, key=lambda e: statistics.median(present[e]))
    if not order:
        return [], None
    best = present[order[0]]
    out = []
    for engine in order:
        low, high, level = median_interval(present[engine])
        ratio, r_low, r_high = ratio_interval(present[engine], best) if engine != order[0] else (1.0, 1.0, 1.0)
        out.append(Ranked(engine, statistics.median(present[engine]), low, high, level, ratio, r_low, r_high))
    leaders = compare(present[order[0]], present[order[1]]) if len(order) > 1 else None
    return out, leaders
