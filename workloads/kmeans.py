"""K-means: an iterative job, several dataflow rounds with the centroids broadcast.

Points are integer ``(x, y)`` pairs around ``k`` hidden centres, made on the
workers. Each round is one dataflow: every point goes to its nearest
centroid (the centroids travel with the step's function: a broadcast), and
``reduce_by_key`` sums the points of each cluster; the driver turns the
sums into new centroids and starts the next round. Coordinates are integers,
so the sums are exact and every engine gets bit-identical centroids.

Stresses: iteration -- a job per round, so per-job start cost, scheduling
and the broadcast are paid again every round; tiny shuffles (k records per
partition).

Hypothesis: engines with a cheap job start win (a warm mini-data cluster,
Ray tasks); Spark pays its per-job cost every round, and an engine that
caches the points in memory across rounds would win outright at large
sizes -- which this neutral model does not express, so every engine
regenerates its points each round, the same way.
"""

from __future__ import annotations

import functools
import random

from engines.api import Dataflow
from workloads import Workload
from workloads.wordcount import partition_sizes


def make_points(seed: int, part: int, points: int, k: int) -> list[tuple[int, int]]:
    """Integer points scattered around ``k`` centres. Deterministic.

    >>> make_points(1, 0, 3, 4) == make_points(1, 0, 3, 4)
    True
    """
    centres = random.Random(seed).sample(range(100, 9900, 37), 2 * k)
    rng = random.Random(seed * 1_000_003 + part)
    out = []
    for _ in range(points):
        c = rng.randrange(k)
        out.append((centres[2 * c] + int(rng.gauss(0, 300)), centres[2 * c + 1] + int(rng.gauss(0, 300))))
    return out


class Assign:
    """A point -> ``(index of the nearest centroid, (x, y, 1))``; the centroids travel with it."""

    def __init__(self, centroids: list[tuple[float, float]]):
        self.centroids = centroids

    def __call__(self, point):
        x, y = point
        best, best_d = 0, float("inf")
        for i, (cx, cy) in enumerate(self.centroids):
            d = (x - cx) ** 2 + (y - cy) ** 2
            if d < best_d:
                best, best_d = i, d
        return best, (x, y, 1)


def add3(a, b):
    return a[0] + b[0], a[1] + b[1], a[2] + b[2]


def new_centroids(old: list, sums: dict) -> list[tuple[float, float]]:
    """Each centroid moves to the mean of its points (an empty cluster keeps its place).

    >>> new_centroids([(0.0, 0.0), (5.0, 5.0)], {0: (4, 6, 2)})
    [(2.0, 3.0), (5.0, 5.0)]
    """
    return [(sums[i][0] / sums[i][2], sums[i][1] / sums[i][2]) if i in sums else c for i, c in enumerate(old)]


def initial_centroids(seed: int, k: int) -> list[tuple[float, float]]:
    rng = random.Random(seed + 1)
    return [(float(rng.randrange(10_000)), float(rng.randrange(10_000))) for _ in range(k)]


class KMeans(Workload):
    name = "kmeans"
    model = "dataflow"
    unit = "point-rounds"
    traits = ("iterative",)
    expect = None   # the hypothesis names no architecture
    sizes = {
        "tiny": {"points": 2_000, "k": 4, "rounds": 3, "partitions": 4},
        "small": {"points": 50_000, "k": 8, "rounds": 5, "partitions": 8},
        "medium": {"points": 300_000, "k": 10, "rounds": 8, "partitions": 16},
        "large": {"points": 2_000_000, "k": 10, "rounds": 10, "partitions": 32},
    }

    def generate(self, *, seed, points, k, rounds, partitions):
        return {"recipes": [(seed, i, n, k) for i, n in enumerate(partition_sizes(points, partitions))],
                "centroids": initial_centroids(seed, k), "rounds": rounds}

    def reference(self, inputs):
        points = [p for r in inputs["recipes"] for p in make_points(*r)]
        centroids = inputs["centroids"]
        for _ in range(inputs["rounds"]):
            assign, sums = Assign(centroids), {}
            for point in points:
                i, s = assign(point)
                sums[i] = add3(sums[i], s) if i in sums else s
            centroids = new_centroids(centroids, sums)
        return {"centroids": centroids, "sizes": sorted(s[2] for s in sums.values())}

    def run(self, session, inputs):
        partitions = [functools.partial(make_points, *r) for r in inputs["recipes"]]
        centroids = inputs["centroids"]
        for round_ in range(inputs["rounds"]):
            flow = Dataflow(f"kmeans-round-{round_}")
            flow.read(partitions).map(Assign(centroids), name="assign").reduce_by_key(add3).collect("sums")
            sums = dict(session.dataflow(flow)["sums"])
            centroids = new_centroids(centroids, sums)
        return {"centroids": centroids, "sizes": sorted(s[2] for s in sums.values())}

    def units(self, inputs):
        return sum(r[2] for r in inputs["recipes"]) * inputs["rounds"]
