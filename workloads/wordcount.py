"""Word count: the shuffle in its simplest form.

Stresses: a narrow step that multiplies the records (lines into words), a
keyed reduction and the exchange between them. Words follow a Zipf-like law,
so a few keys are hot and most are rare -- as in real text.

Hypothesis: data parallel wins. Combining on the sending side shrinks each
partition to one record per distinct word before anything crosses the
network, and identical workers need no scheduler in the loop. A task engine
runs the same stages as split and merge tasks (close behind, plus a
scheduler round trip per task); an actor pipeline pays a message per batch.

Measured (``archbench run --engines all --workloads wordcount --size medium
--workers 2``, a 2-core machine, medians of 3): serial 1.18 s, mini-data
0.66 s (parallel efficiency 0.89), Bytewax 0.67 s, Ray 0.82 s, Dask 0.88 s,
the pool 0.93 s. Where mini-data's time goes (the spans of ``--trace``, one
worker, a 0.61 s run): 0.57 s in its split, of which making its eight
partitions' lines takes 0.39 s (`make_lines`, the same on every engine) and
counting their words 0.18 s (one C loop, ``Counter.update``); 18 ms waiting
for the other worker's counts, 10 ms merging, 16 ms sending the answer to
the driver. So the run is about 10 % above serial ÷ 2, the floor of any
engine on two cores, and making the input is two thirds of it. Bytewax is
as close to that floor, which is why the two tie: on this workload an
engine's lead is how far the other is from the floor.
"""

from __future__ import annotations

import functools
import random
from collections import Counter
from itertools import accumulate

from engines.api import Dataflow
from workloads import Workload

WORDS_PER_LINE = 10


@functools.lru_cache(maxsize=4)
def vocabulary(size: int) -> tuple[list[str], list[float]]:
    """``size`` made-up words and Zipf cumulative weights (rank r has weight 1/r)."""
    rng = random.Random(size)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = sorted({"".join(rng.choices(letters, k=rng.randint(2, 9))) for _ in range(size * 2)})[:size]
    rng.shuffle(words)
    return words, list(accumulate(1.0 / rank for rank in range(1, len(words) + 1)))


def make_lines(seed: int, part: int, words: int, vocab: int) -> list[str]:
    """Partition ``part`` of the text: ``words`` words in lines of ten. Deterministic.

    >>> make_lines(1, 0, 20, 50) == make_lines(1, 0, 20, 50)
    True
    >>> sum(len(line.split()) for line in make_lines(1, 0, 25, 50))
    25
    """
    vocab_words, weights = vocabulary(vocab)
    drawn = random.Random(seed * 1_000_003 + part).choices(vocab_words, cum_weights=weights, k=words)
    return [" ".join(drawn[i:i + WORDS_PER_LINE]) for i in range(0, words, WORDS_PER_LINE)]


def line_rows(seed: int, part: int, words: int, vocab: int) -> list[tuple[str]]:
    """`make_lines` as rows of a one-column frame (the columnar form)."""
    return [(line,) for line in make_lines(seed, part, words, vocab)]


def partition_sizes(words: int, partitions: int) -> list[int]:
    """Split ``words`` into ``partitions`` near-equal counts.

    >>> partition_sizes(10, 3)
    [4, 3, 3]
    """
    base, extra = divmod(words, partitions)
    return [base + (i < extra) for i in range(partitions)]


class WordCount(Workload):
    name = "wordcount"
    model = "dataflow"
    unit = "words"
    traits = ("shuffle-heavy",)
    expect = "data parallel"
    quick = True
    sizes = {
        "tiny": {"words": 2_000, "partitions": 4, "vocab": 500},
        "small": {"words": 200_000, "partitions": 8, "vocab": 10_000},
        "medium": {"words": 2_000_000, "partitions": 16, "vocab": 50_000},
        "large": {"words": 20_000_000, "partitions": 32, "vocab": 100_000},
    }

    def generate(self, *, seed, words, partitions, vocab):
        # recipes, not data: each partition is made on the worker that reads it
        return [(seed, i, n, vocab) for i, n in enumerate(partition_sizes(words, partitions))]

    def reference(self, inputs):
        counts = Counter()
        for recipe in inputs:
            for line in make_lines(*recipe):
                counts.update(line.split())
        return {"counts": list(counts.items())}

    def run(self, session, inputs):
        flow = Dataflow("wordcount")
        lines = flow.read([functools.partial(make_lines, *recipe) for recipe in inputs])
        lines.flat_map(str.split).count_by_key().collect("counts")
        return session.dataflow(flow)

    def run_columnar(self, session, inputs):
        """Split, explode into one word per row, count per word: planned by the engine (spark-df, dask-df, flink-sql)."""
        lines = session.frame([functools.partial(line_rows, *recipe) for recipe in inputs], {"line": str})
        if session.frames == "spark":
            from pyspark.sql import functions as F

            words = lines.select(F.explode(F.split("line", " ")).alias("word"))  # words joined by one space
            counts = words.groupBy("word").count()
        elif session.frames == "flink-sql":     # words joined by one space
            counts = session.sql("SELECT word, COUNT(*) FROM {lines} CROSS JOIN UNNEST(SPLIT(line, ' ')) AS w(word) "
                                 "GROUP BY word", lines=lines)
        else:
            counts = lines.line.str.split().explode().value_counts()
        [table] = session.collect(counts)
        return {"counts": table}

    def units(self, inputs):
        return sum(n for _, _, n, _ in inputs)
