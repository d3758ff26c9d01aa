"""Skewed group-by: the median value per key, with Zipf-distributed keys.

Keys follow a Zipf law (a few keys hold most rows, like users of a social
network or products of a shop); the answer per key is ``(count, median)``.
A median cannot be combined early: every value of a key must reach the
key's owner, so the owner of the hottest key receives a large share of all
rows and sorts them while the other workers wait -- a straggler.

Stresses: skew. The exchange is as large as the input; one reducer gets
the hot key; the job takes as long as its slowest worker.

Hypothesis: no architecture escapes the straggler when the work is
grouped by key: data-parallel and task-parallel engines both end in one
busy owner (adding workers barely helps). Engines that split work into
more, smaller tasks only help with the *other* keys. Compare its scaling
from 1 to 2 workers with ``groupby``'s.
"""

from __future__ import annotations

import functools
import random
from itertools import accumulate

from engines.api import Dataflow
from workloads import Workload
from workloads.wordcount import partition_sizes


@functools.lru_cache(maxsize=4)
def zipf_weights(keys: int, exponent: float) -> list[float]:
    return list(accumulate(1.0 / (rank ** exponent) for rank in range(1, keys + 1)))


def make_rows(seed: int, part: int, rows: int, keys: int, exponent: float) -> list[tuple[int, int]]:
    """``(key, value)`` rows with Zipf keys (key 0 the hottest). Deterministic.

    >>> rows = make_rows(1, 0, 1000, 100, 1.1)
    >>> sum(k == 0 for k, _ in rows) > sum(k == 50 for k, _ in rows)
    True
    """
    rng = random.Random(seed * 1_000_003 + part)
    drawn = rng.choices(range(keys), cum_weights=zipf_weights(keys, exponent), k=rows)
    return [(k, rng.randrange(1_000_000)) for k in drawn]


def singleton(row):
    key, value = row
    return key, [value]


def concat(a: list, b: list) -> list:
    """Lists of values of one key, joined (mutates and returns ``a``, which the step owns)."""
    a.extend(b)
    return a


def count_and_median(kv):
    """``(key, values)`` -> ``(key, (count, median))``; the median of an even count is the lower one.

    >>> count_and_median((7, [5, 1, 3, 2]))
    (7, (4, 2))
    """
    key, values = kv
    values.sort()
    return key, (len(values), values[(len(values) - 1) // 2])


class SkewedGroupBy(Workload):
    name = "skewed-groupby"
    model = "dataflow"
    unit = "rows"
    traits = ("shuffle-heavy", "skew")
    expect = None   # the hypothesis names no architecture
    sizes = {
        "tiny": {"rows": 5_000, "keys": 1_000, "exponent": 1.1, "partitions": 4},
        "small": {"rows": 200_000, "keys": 20_000, "exponent": 1.1, "partitions": 8},
        "medium": {"rows": 2_000_000, "keys": 100_000, "exponent": 1.1, "partitions": 16},
        "large": {"rows": 10_000_000, "keys": 100_000, "exponent": 1.1, "partitions": 32},
    }

    def generate(self, *, seed, rows, keys, exponent, partitions):
        return [(seed, i, n, keys, exponent) for i, n in enumerate(partition_sizes(rows, partitions))]

    def reference(self, inputs):
        groups: dict = {}
        for recipe in inputs:
            for key, value in make_rows(*recipe):
                groups.setdefault(key, []).append(value)
        return {"medians": [count_and_median(kv) for kv in groups.items()]}

    def run(self, session, inputs):
        flow = Dataflow("skewed-groupby")
        rows = flow.read([functools.partial(make_rows, *r) for r in inputs])
        rows.map(singleton).reduce_by_key(concat).map(count_and_median).collect("medians")
        return session.dataflow(flow)

    def units(self, inputs):
        return sum(r[2] for r in inputs)
