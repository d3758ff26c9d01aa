"""Group-by: sum, count and mean of two value columns by key, as db-benchmark asks.

Rows are ``(key, v1, v2)`` with ``keys`` distinct keys drawn uniformly;
the answer is ``(key, (sum of v1, count, mean of v2))`` per key. The rows
are made on the workers from a seed, so no data passes through the driver.

Stresses: a shuffle whose size is set by the number of distinct keys (about
100k at medium size): map-side combining shrinks each partition to one
record per key it holds, which with many keys is still a lot of records.

Hypothesis: data parallel wins (a hash exchange of combined records, no
scheduler per record); the task engines run the same split/merge stages
with one scheduled task per partition and bucket, close behind; columnar
engines (Spark DataFrame, Dask dataframe) would beat every record-at-a-time
Python engine by an order of magnitude, which is why they are offered as
separate, named variants. Their columnar form (`GroupBy.run_columnar`) makes
the rows with the same Python generator, so what differs is the group-by
itself and how the rows reach it.

Measured (``archbench run --engines all --workloads groupby --size medium
--workers 2``, a 2-core machine, medians of 3): serial 4.6 s, mini-data
2.41 s, mini-actors 2.44 s, Ray 2.99 s, Bytewax 3.23 s, Dask 3.27 s, the
pool 3.68 s, Spark's DataFrame 4.53 s (Python makes its rows). Where
mini-data's time goes (the spans of ``--trace``, one worker, a 2.32 s run):
2.01 s in its split -- making its million rows 0.89 s (`make_rows`), and
folding them into one partial per key 1.1 s, a call of ``to_partial`` and,
for a key seen before, of ``add_partials`` per row; 85 ms waiting for the
other worker's partials, 68 ms merging its 50k keys, 37 ms finishing them
and 105 ms for the driver to receive the 100k answers. About a tenth of the
split (timed in one process) is Python's cyclic garbage collector, run by
the tuples made per row; the engine leaves it on, since a user's function
may make cycles. Only an engine that does not call the user's functions
per row could go much below serial ÷ 2: that is the columnar variants'
job, and here their rows come from the same Python generator.
"""

from __future__ import annotations

import functools
import random

from engines.api import Dataflow
from workloads import Workload
from workloads.wordcount import partition_sizes


def make_rows(seed: int, part: int, rows: int, keys: int) -> list[tuple[str, int, float]]:
    """``rows`` rows of partition ``part``: ``(key, v1, v2)``. Deterministic.

    >>> make_rows(1, 0, 2, 10) == make_rows(1, 0, 2, 10)
    True
    >>> len(make_rows(1, 0, 5, 10))
    5
    """
    rng = random.Random(seed * 1_000_003 + part)
    rand, randrange = rng.random, rng.randrange
    return [(f"id{randrange(keys)}", randrange(100), round(rand() * 100.0, 3)) for _ in range(rows)]


#: the rows as a frame's columns (the columnar form)
COLUMNS = {"key": str, "v1": int, "v2": float}


def to_partial(row):
    key, v1, v2 = row
    return key, (v1, 1, v2)


def add_partials(a, b):
    return a[0] + b[0], a[1] + b[1], a[2] + b[2]


def finish(kv):
    key, (s1, n, s2) = kv
    return key, (s1, n, s2 / n)


def partitions(inputs) -> list:
    """The input partitions, each a generator called on the worker that reads it."""
    return [functools.partial(make_rows, *recipe) for recipe in inputs]


class GroupBy(Workload):
    name = "groupby"
    model = "dataflow"
    unit = "rows"
    traits = ("shuffle-heavy",)
    expect = "data parallel"
    sizes = {
        "tiny": {"rows": 5_000, "keys": 500, "partitions": 4},
        "small": {"rows": 200_000, "keys": 10_000, "partitions": 8},
        "medium": {"rows": 2_000_000, "keys": 100_000, "partitions": 16},
        "large": {"rows": 20_000_000, "keys": 100_000, "partitions": 32},
    }

    def generate(self, *, seed, rows, keys, partitions):
        return [(seed, i, n, keys) for i, n in enumerate(partition_sizes(rows, partitions))]

    def reference(self, inputs):
        acc: dict = {}
        for recipe in inputs:
            for key, v1, v2 in make_rows(*recipe):
                s1, n, s2 = acc.get(key, (0, 0, 0.0))
                acc[key] = (s1 + v1, n + 1, s2 + v2)
        return {"stats": [finish(kv) for kv in acc.items()]}

    def run(self, session, inputs):
        flow = Dataflow("groupby")
        rows = flow.read(partitions(inputs))
        rows.map(to_partial).reduce_by_key(add_partials).map(finish).collect("stats")
        return session.dataflow(flow)

    def run_columnar(self, session, inputs):
        """One group-by with three aggregates, planned by the engine (spark-df, dask-df, flink-sql)."""
        rows = session.frame(partitions(inputs), COLUMNS)
        if session.frames == "spark":
            from pyspark.sql import functions as F

            stats = rows.groupBy("key").agg(F.sum("v1"), F.count("v1"), F.avg("v2"))
        elif session.frames == "flink-sql":
            stats = session.sql("SELECT `key`, SUM(v1), COUNT(v1), AVG(v2) FROM {rows} GROUP BY `key`", rows=rows)
        else:
            stats = rows.groupby("key").agg(s1=("v1", "sum"), n=("v1", "count"), mean=("v2", "mean")).reset_index()
        [table] = session.collect(stats)
        return {"stats": [(key, (s1, n, mean)) for key, s1, n, mean in table]}

    def units(self, inputs):
        return sum(recipe[2] for recipe in inputs)
