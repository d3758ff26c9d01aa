"""Actor pipeline: routers count words and message counter actors directly.

The driver sends batches of lines to router actors (``call``); each router
counts its batch and ``tell``s every counter actor the partial counts of the
words that counter owns -- actor to actor, never through the driver. The
driver then asks each counter for its totals once the counter has received
every message the routers reported sending.

Stresses: actor-to-actor messaging, per-actor state, and the ask/tell
pattern (a reply per batch, fire-and-forget between actors).

Hypothesis: actors win on latency per batch (a batch is one message to a
warm actor, no scheduling), but lose on total throughput to data parallel
word count, which moves less: the driver here ships every line.
"""

from __future__ import annotations

from collections import Counter

from engines.plan import owner
from workloads import Workload
from workloads.wordcount import make_lines, partition_sizes


class Router:
    """Counts a batch of lines and tells each counter its share."""

    def __init__(self, counters):
        self.counters = counters

    def route(self, lines: list[str]) -> dict[int, int]:
        """Count ``lines``; tell each owning counter; ``{counter index: messages sent}``."""
        counts = Counter()
        for line in lines:
            counts.update(line.split())
        shares: dict[int, dict] = {}
        for word, n in counts.items():
            shares.setdefault(owner(word, len(self.counters)), {})[word] = n
        for i, share in shares.items():
            self.counters[i].tell("add", share)
        return {i: 1 for i in shares}


class WordCounter:
    """Holds the totals of the words it owns."""

    def __init__(self):
        self.counts = Counter()
        self.received = 0

    def add(self, share: dict) -> None:
        self.counts.update(share)
        self.received += 1

    def totals_if_complete(self, expected: int):
        """The totals once ``expected`` messages have arrived, else None (ask again)."""
        return dict(self.counts) if self.received >= expected else None


class ActorPipeline(Workload):
    name = "actor-pipeline"
    model = "actors"
    unit = "words"
    traits = ("stateful actors",)
    expect = "actors"
    judge_by = "latency_p50_s"
    quick = True
    sizes = {
        "tiny": {"words": 2_000, "batch_lines": 20, "vocab": 500},
        "small": {"words": 100_000, "batch_lines": 100, "vocab": 10_000},
        "medium": {"words": 1_000_000, "batch_lines": 200, "vocab": 50_000},
        "large": {"words": 10_000_000, "batch_lines": 500, "vocab": 100_000},
    }

    def generate(self, *, seed, words, batch_lines, vocab):
        lines = [line for i, n in enumerate(partition_sizes(words, 4)) for line in make_lines(seed, i, n, vocab)]
        return [lines[i:i + batch_lines] for i in range(0, len(lines), batch_lines)]

    def reference(self, inputs):
        counts = Counter()
        for batch in inputs:
            for line in batch:
                counts.update(line.split())
        return dict(counts)

    def run(self, session, inputs):
        n = max(2, session.workers)
        with session.actors() as actors:
            counters = [actors.spawn(WordCounter) for _ in range(n)]
            routers = [actors.spawn(Router, counters) for _ in range(n)]
            replies = actors.gather([routers[i % n].call("route", batch) for i, batch in enumerate(inputs)])
            expected = Counter()
            for sent in replies:
                expected.update(sent)
            totals: dict = {}
            waiting = set(range(n))
            while waiting:  # each ask queues behind the tells already in the mailbox
                asks = {i: counters[i].call("totals_if_complete", expected[i]) for i in waiting}
                for i, ask in asks.items():
                    result = ask.result()
                    if result is not None:
                        totals.update(result)
                        waiting.discard(i)
            return totals

    def units(self, inputs):
        return sum(len(line.split()) for batch in inputs for line in batch)
