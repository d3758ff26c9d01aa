"""Tree reduce: leaves make vectors of numbers; a k-ary tree of combine tasks adds them up.

Each leaf task draws ``length`` integers from its own seed and runs
``rounds`` steps of a vectorised recurrence over them (a stand-in for work
that yields a vector: a gradient on a data shard, a histogram of a
simulation); each combine task adds up to ``fan_in`` vectors element by
element, and the root's vector is the answer. Integers keep the sum exact,
so every tree shape and every order of work gives the same bits.

The tree is submitted depth first (a subtree's combine right after its
leaves), so an engine that runs tasks roughly in submission order holds
only a few vectors per level at once instead of every leaf's.

Stresses: moving medium-sized results (``length`` x 8 bytes, up to a few
hundred kilobytes) along every edge of the tree, and a fan-in that is
``log_fan_in(leaves)`` levels deep. Compare with ``fanout``, whose results
are a few numbers: here the edges cost.

Hypothesis: task parallel wins, and the gap between task engines grows with
``length``. An engine that keeps results on the worker that made them and
runs a combine where most of its inputs already are (Dask, Ray, mini-tasks)
moves each vector at most once, worker to worker; the pool brings every
vector back to the driver and ships it out again -- twice the bytes, all
through one process. Data parallel expresses this as a tree aggregate (as
Spark's ``treeAggregate``); actors would need the reduction tree written by
hand.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from workloads import Workload

MODULUS = 1_048_573   # a prime below 2**20: values stay small, sums of thousands of leaves fit in int64


def leaf_vector(seed: int, leaf: int, length: int, rounds: int) -> np.ndarray:
    """Leaf ``leaf``'s vector: ``length`` integers in [0, MODULUS), after ``rounds`` steps. Deterministic.

    >>> v = leaf_vector(1, 0, 5, 3)
    >>> v.dtype, len(v), bool((v == leaf_vector(1, 0, 5, 3)).all()), bool((v == leaf_vector(2, 0, 5, 3)).all())
    (dtype('int64'), 5, True, False)
    """
    x = np.random.default_rng([seed, leaf]).integers(0, MODULUS, length, dtype=np.int64)
    for r in range(rounds):
        x = (x * 2053 + r) % MODULUS
    return x


def add_vectors(*vectors: np.ndarray) -> np.ndarray:
    """Element-wise sum of one or more vectors.

    >>> add_vectors(np.array([1, 2]), np.array([3, 4]), np.array([10, 20])).tolist()
    [14, 26]
    """
    total = vectors[0].copy()
    for v in vectors[1:]:
        total += v
    return total


def reduce_tree(leaves: int, fan_in: int, leaf: Callable, combine: Callable):
    """``combine`` the values of ``leaf(0)`` .. ``leaf(leaves - 1)`` in a tree, ``fan_in`` children per node.

    The leaves are split into ``fan_in`` runs of ``fan_in ** (depth - 1)``
    (the last one shorter), recursively; a run of one leaf is the leaf
    itself. Built depth first: each combine comes right after its children.

    >>> reduce_tree(7, 3, str, lambda *xs: "(" + "".join(xs) + ")")
    '((012)(345)6)'
    >>> reduce_tree(4, 2, str, lambda *xs: "(" + "".join(xs) + ")")
    '((01)(23))'
    """
    if leaves < 1 or fan_in < 2:
        raise ValueError(f"need at least one leaf and fan_in >= 2, got leaves={leaves}, fan_in={fan_in}")

    def subtree(lo: int, hi: int):
        if hi - lo == 1:
            return leaf(lo)
        run = 1
        while run * fan_in < hi - lo:
            run *= fan_in
        return combine(*(subtree(i, min(i + run, hi)) for i in range(lo, hi, run)))

    return subtree(0, leaves)


def count_combines(leaves: int, fan_in: int) -> int:
    """How many combine tasks the tree has.

    >>> count_combines(7, 3), count_combines(8, 2), count_combines(1, 2)
    (3, 7, 0)
    """
    return reduce_tree(leaves, fan_in, lambda i: 0, lambda *counts: sum(counts) + 1)


class TreeReduce(Workload):
    name = "tree-reduce"
    model = "tasks"
    unit = "tasks"
    traits = ("dependent chains",)
    expect = "task parallel"
    sizes = {
        "tiny": {"leaves": 20, "length": 1_000, "rounds": 5, "fan_in": 3},
        "small": {"leaves": 256, "length": 20_000, "rounds": 40, "fan_in": 2},
        "medium": {"leaves": 1_024, "length": 50_000, "rounds": 12, "fan_in": 2},
        "large": {"leaves": 1_024, "length": 50_000, "rounds": 50, "fan_in": 4},
    }

    def generate(self, *, seed, leaves, length, rounds, fan_in):
        # a recipe: each leaf's vector is made by the task that uses it, on a worker
        return {"seed": seed, "leaves": leaves, "length": length, "rounds": rounds, "fan_in": fan_in}

    def reference(self, inputs):
        seed, length, rounds = inputs["seed"], inputs["length"], inputs["rounds"]
        total = np.zeros(length, dtype=np.int64)
        for i in range(inputs["leaves"]):
            total += leaf_vector(seed, i, length, rounds)
        return total.tolist()

    def run(self, session, inputs):
        seed, length, rounds = inputs["seed"], inputs["length"], inputs["rounds"]
        with session.tasks() as tasks:
            root = reduce_tree(inputs["leaves"], inputs["fan_in"],
                               lambda i: tasks.submit(leaf_vector, seed, i, length, rounds),
                               lambda *children: tasks.submit(add_vectors, *children))
            return root.result()

    def units(self, inputs):
        return inputs["leaves"] + count_combines(inputs["leaves"], inputs["fan_in"])
