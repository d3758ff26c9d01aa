"""Task chain: each task takes the previous task's Future, so the hops run one after another.

A payload of ``width`` numbers travels down a chain of ``hops`` tasks; each
hop stirs it a little (a few microseconds of work) and hands it on. The
driver submits the whole chain at once -- every hop's argument is the
previous hop's Future -- and waits for the last one, so it is the engine
that notices each input is ready and starts the next hop.

The figure to read is the **time per hop**, run time / ``hops`` (the
throughput, in hops per second, is its inverse). The recorded latency of a
hop is measured from when it was submitted -- the start of the run -- so it
grows along the chain: hop ``k`` shows the time of ``k`` hops, and the p50
is about half the run. Every engine records one sample per hop, when the
driver hears that the hop ended, whether or not its value ever reaches it.

Stresses: dependency resolution and scheduling latency on a critical path
with no parallelism at all; a little data (the payload) on every edge.

Hypothesis: serial wins outright -- a hop is a function call. Among the
distributed engines the time per hop ranks how far a finished result
travels before its dependant starts: the pool brings every result back to
the driver and submits the next hop from there (two crossings of the driver
per hop); a central scheduler (Dask) hears of the result and then assigns
the next task; an engine where the worker that holds the value can start
the next task itself, or a scheduler that places the hop where its input
lives, avoids both the driver and the transfer. More workers cannot help
and may hurt, when a hop lands away from its input. An actor would run the
same chain as messages to itself, with no scheduling at all.
"""

from __future__ import annotations

import random

from workloads import Workload

MASK = (1 << 64) - 1


def start_payload(seed: int, width: int) -> tuple[int, ...]:
    """The first hop: ``width`` numbers drawn from the seed. Deterministic.

    >>> start_payload(1, 3) == start_payload(1, 3), start_payload(1, 3) == start_payload(2, 3)
    (True, False)
    """
    rng = random.Random(seed)
    return tuple(rng.getrandbits(64) for _ in range(width))


def hop(payload: tuple[int, ...], step: int) -> tuple[int, ...]:
    """One hop: each number mixed with its left neighbour and the step number.

    >>> hop((1, 2), 0)
    (3688346636939590677, 9721873510599817258)
    """
    out = []
    left = payload[-1]
    for v in payload:
        out.append(((v ^ (left >> 17) ^ (left << 40)) * 0x9E3779B97F4A7C15 + step) & MASK)
        left = v
    return tuple(out)


class TaskChain(Workload):
    name = "task-chain"
    model = "tasks"
    unit = "hops"
    traits = ("dependent chains",)
    expect = "baseline"
    sizes = {
        "tiny": {"hops": 200, "width": 16},
        "small": {"hops": 1_000, "width": 16},   # 2-core machine: Dask ≈ 7 s (≈ 140 hops/s), Ray ≈ 2 s
        "medium": {"hops": 3_000, "width": 16},
        "large": {"hops": 20_000, "width": 16},
    }

    def generate(self, *, seed, hops, width):
        return {"seed": seed, "hops": hops, "width": width}

    def reference(self, inputs):
        payload = start_payload(inputs["seed"], inputs["width"])
        for step in range(1, inputs["hops"]):
            payload = hop(payload, step)
        return payload

    def run(self, session, inputs):
        with session.tasks() as tasks:
            f = tasks.submit(start_payload, inputs["seed"], inputs["width"])
            for step in range(1, inputs["hops"]):
                f = tasks.submit(hop, f, step)   # the Future itself: a dependency
            return f.result()

    def units(self, inputs):
        return inputs["hops"]
