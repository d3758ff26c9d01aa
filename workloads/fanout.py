"""Fan-out / fan-in: many independent tasks, then a tree of merges.

Each leaf task throws ``samples`` random darts at the unit square (a Monte
Carlo estimate of pi, the classroom favourite) and returns a histogram of
the darts' distances from the origin; merge tasks add histograms in groups
of ``fan_in``, and one last merge adds the groups.

Stresses: scheduling many independent CPU-bound tasks and a fan-in whose
inputs live on different workers. Results are small, so transfer is cheap;
what matters is keeping every worker busy and the per-task overhead.

Hypothesis: task parallel wins -- it is the shape a task scheduler is built
for. A data-parallel engine can only express it as a two-stage job; actors
would need a hand-written pool.

Measured (``archbench run --engines serial,mini-tasks,pool --workloads
fanout --size small --workers 2 --repeat 7``, a 2-core machine, a dozen
runs): serial 0.52 s; the pool 0.26-0.29 s, mini-tasks 0.27-0.30 s -- the
pool ahead by 1-10 %, both near the machine's limit (0.26 s). The
timelines (``--trace``) show both keeping the two workers computing 94 % of
the run; what separates them is the end. The pool's workers take the next
leaf from one queue when they are free, so they finish close together;
mini-tasks deals the 64 leaves out as they are submitted, 32 to each
worker, and in the traced run one worker ended about a leaf and a half
(13 ms) before the other -- stealing starts only when a worker has nothing
left, and by then the other has little to give. What mini-tasks saves per
task over the pool (task-overhead: 57 against 180 us a task) is about
1.5 % of a leaf here.
"""

from __future__ import annotations

import math
import random

from workloads import Workload

BINS = 16


def throw_darts(seed: int, leaf: int, samples: int) -> tuple[int, ...]:
    """A histogram of ``samples`` darts' distances from the origin, in BINS bins up to sqrt(2).

    >>> sum(throw_darts(0, 1, 1000))
    1000
    """
    rng = random.Random(seed * 1_000_003 + leaf).random
    hist = [0] * BINS
    scale = BINS / math.sqrt(2.0)
    for _ in range(samples):
        x, y = rng(), rng()
        hist[min(int(math.sqrt(x * x + y * y) * scale), BINS - 1)] += 1
    return tuple(hist)


def merge(*hists: tuple[int, ...]) -> tuple[int, ...]:
    """Add histograms bin by bin.

    >>> merge((1, 2), (3, 4), (0, 1))
    (4, 7)
    """
    return tuple(map(sum, zip(*hists)))


def pi_estimate(hist: tuple[int, ...]) -> float:
    """Darts inside the quarter circle (distance < 1) over all darts, times 4 (bins are coarse)."""
    inside = sum(hist[: int(BINS / math.sqrt(2.0))])
    return 4.0 * inside / max(1, sum(hist))


class FanOutFanIn(Workload):
    name = "fanout"
    model = "tasks"
    unit = "tasks"
    traits = ("fine-grained tasks",)
    expect = "task parallel"
    quick = True
    sizes = {
        "tiny": {"leaves": 16, "samples": 2_000, "fan_in": 4},
        "small": {"leaves": 64, "samples": 30_000, "fan_in": 8},   # the quick matrix's: few enough for Spark's emulation
        "medium": {"leaves": 1_000, "samples": 40_000, "fan_in": 16},
        "large": {"leaves": 2_000, "samples": 200_000, "fan_in": 16},
    }

    def generate(self, *, seed, leaves, samples, fan_in):
        return {"seed": seed, "leaves": leaves, "samples": samples, "fan_in": fan_in}

    def reference(self, inputs):
        return merge(*(throw_darts(inputs["seed"], i, inputs["samples"]) for i in range(inputs["leaves"])))

    def run(self, session, inputs):
        seed, samples, fan_in = inputs["seed"], inputs["samples"], inputs["fan_in"]
        with session.tasks() as tasks:
            leaves = [tasks.submit(throw_darts, seed, i, samples) for i in range(inputs["leaves"])]
            groups = [tasks.submit(merge, *leaves[i:i + fan_in]) for i in range(0, len(leaves), fan_in)]
            return tasks.submit(merge, *groups).result()

    def units(self, inputs):
        leaves, fan_in = inputs["leaves"], inputs["fan_in"]
        return leaves + -(-leaves // fan_in) + 1
