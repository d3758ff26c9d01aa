"""Stream window: ad events counted per campaign in 10-second event-time windows.

The Yahoo Streaming Benchmark, scaled down: ad events (view, click,
purchase) arrive from several sources at an offered rate; the flow keeps
the views, looks up each ad's campaign in a small table (shipped with the
step: a broadcast join), and counts views per campaign in tumbling
10-second event-time windows. Events arrive slightly out of order (up to
half a second) and 1% arrive very late (2–20 s): with a watermark lag of
1 s those are dropped, the same ones on every engine. Stream time runs
faster than the wall clock (``speedup``), so a run takes seconds.

Measured: the **latency of each window result** -- the wall time the
driver sees it minus the wall time its window closed -- as p50/p99, and
the throughput at the offered rate (an engine that keeps up shows the
offered rate; one that falls behind shows growing latency). mini-data and
Bytewax run the stream natively: each source is read every tick (0.02 s),
so a window waits for the lateness (1 s of stream time) plus up to a tick.
The other engines run it as micro-batches (`engines.streaming`): a window
also waits for the batch (every 0.1 s) that passes its end, and for that
batch's job to run.

Hypothesis: native streaming (a data-parallel engine whose workers keep
window state and advance watermarks as events flow, as Bytewax and
mini-data do) wins on latency by about the batch interval: a micro-batch
engine cannot emit a window before the batch that passes its end has been
scheduled, run and merged. Throughput is the same for all that keep up.
"""

from __future__ import annotations

import functools
import math
import operator

from engines.api import Dataflow
from workloads import Workload

VIEW, CLICK, PURCHASE = 0, 1, 2
WINDOW = 10.0
LATENESS = 1.0
_MASK = (1 << 64) - 1


def mix(*parts: int) -> int:
    """A 64-bit hash of integers (splitmix64 steps): cheap, deterministic randomness per event.

    >>> mix(1, 2, 3) == mix(1, 2, 3) != mix(1, 2, 4)
    True
    """
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (p & _MASK)) * 0xBF58476D1CE4E5B9 & _MASK
        x = (x ^ (x >> 27)) * 0x94D049BB133111EB & _MASK
        x ^= x >> 31
    return x


def make_events(seed: int, source: int, rate: float, ads: int, start: float, end: float) -> list[tuple]:
    """The events that arrive at ``source`` in ``[start, end)`` stream seconds, in arrival order.

    An event is ``(event time, ad, kind)``; event ``i`` arrives at ``i / rate``.

    >>> evs = make_events(1, 0, 100.0, 50, 0.0, 1.0)
    >>> len(evs), evs == make_events(1, 0, 100.0, 50, 0.0, 0.5) + make_events(1, 0, 100.0, 50, 0.5, 1.0)
    (100, True)
    """
    out = []
    for i in range(math.ceil(start * rate), math.ceil(end * rate)):
        h = mix(seed, source, i)
        arrival = i / rate
        late = (h >> 40) % 100 == 0
        delay = 2.0 + (h >> 48) % 18_000 / 1000.0 if late else (h >> 48) % 500 / 1000.0
        out.append((max(0.0, arrival - delay), h % ads, (h >> 20) % 3))
    return out


def event_time(event) -> float:
    return event[0]


def is_view(event) -> bool:
    return event[2] == VIEW


class Campaign:
    """An event -> ``(its ad's campaign, 1)``; the ad → campaign table travels with the step."""

    def __init__(self, table: dict[int, int]):
        self.table = table

    def __call__(self, event):
        return self.table[event[1]], 1


def campaign_table(ads: int, campaigns: int) -> dict[int, int]:
    return {ad: (ad * 7_919) % campaigns for ad in range(ads)}


class StreamWindow(Workload):
    name = "stream-window"
    model = "dataflow"
    unit = "events"
    traits = ("streaming latency",)
    expect = "data parallel"
    judge_by = "latency_p50_s"
    quick = True
    sizes = {
        "tiny": {"sources": 2, "rate": 300.0, "duration": 30.0, "speedup": 150.0, "campaigns": 10},
        "small": {"sources": 2, "rate": 2_000.0, "duration": 20.0, "speedup": 40.0, "campaigns": 100},  # 0.5 s a run
        "medium": {"sources": 4, "rate": 2_000.0, "duration": 120.0, "speedup": 20.0, "campaigns": 100},
        "large": {"sources": 4, "rate": 4_000.0, "duration": 300.0, "speedup": 20.0, "campaigns": 1_000},
    }

    def generate(self, *, seed, sources, rate, duration, speedup, campaigns):
        return {"recipes": [(seed, i, rate, campaigns * 10) for i in range(sources)],
                "duration": duration, "speedup": speedup, "campaigns": campaigns}

    def reference(self, inputs):
        table = campaign_table(inputs["recipes"][0][3], inputs["campaigns"])
        counts: dict = {}
        for recipe in inputs["recipes"]:
            seen = -math.inf
            for event in make_events(*recipe, 0.0, inputs["duration"]):
                t = event[0]
                if t < seen - LATENESS:
                    continue  # late: older than this source's watermark
                seen = max(seen, t)
                if event[2] == VIEW:
                    key = (table[event[1]], math.floor(t / WINDOW) * WINDOW)
                    counts[key] = counts.get(key, 0) + 1
        return {"counts": [(campaign, (start, n)) for (campaign, start), n in counts.items()]}

    def run(self, session, inputs):
        flow = Dataflow("stream-window")
        events = flow.stream([functools.partial(make_events, *r) for r in inputs["recipes"]],
                             timestamp=event_time, duration=inputs["duration"], speedup=inputs["speedup"])
        table = campaign_table(inputs["recipes"][0][3], inputs["campaigns"])
        events.filter(is_view).map(Campaign(table), name="campaign") \
            .window(WINDOW, operator.add, lateness=LATENESS).collect("counts")
        return session.dataflow(flow)

    def units(self, inputs):
        return sum(math.ceil(inputs["duration"] * r[2]) for r in inputs["recipes"])
