"""Heterogeneous DAG: a random graph of CPU tasks of very different lengths, several inputs each.

The shape of a simulation campaign or an optimisation sweep: task ``i``
depends on up to ``max_deps`` tasks chosen among the ``window`` before it
(a few have none and start new work), and computes for a time drawn from a
log-normal law -- most tasks are short, a few are twenty times the median.
Each task mixes its inputs' values into its own and spins an integer
recurrence for its length; the answer is the value of every sink (a task
nothing depends on), which depends on every task upstream of it.

The graph is generated once on the driver (a list of ``(work, deps)``);
its total work and its critical path -- the longest chain of work, which
no number of workers can shorten -- are computed by `critical_path`, so an
engine's run can be set against the ideal ``max(total / workers,
critical path)``. The average parallelism, total / critical path, is
about ten at ``medium`` (a thousand tasks): enough for ten busy workers.

Stresses: dynamic scheduling -- starting each task as soon as its inputs
exist, on whichever worker is free, so long and short tasks pack together
-- with many-to-one dependencies whose inputs live on different workers.
Tasks take milliseconds, so the per-task overhead matters little.

Hypothesis: task parallel wins -- this is the graph a task scheduler is for.
Every task engine should come close to the ideal; what is left is the
scheduling delay on the critical path, where the pool (every dependency
resolved on the driver) and a central scheduler pay a round trip per edge
and a decentralised one does not. A data-parallel engine runs in stages,
each waiting for its slowest task, so the heterogeneity becomes idle
workers (and arbitrary dependencies fit stages badly); actors would need
the dependency tracking written by hand.

Measured (``archbench run --engines serial,mini-tasks,pool --workloads
hetero-dag --size small --workers 2 --repeat 3 --trace``, a 2-core
machine): serial 0.79 s; mini-tasks 0.44-0.47 s and the pool 0.44-0.48 s
over a dozen runs -- a tie, near the ideal of 0.39 s (serial / 2). The
timelines say why neither pulls ahead: both keep the workers computing
87-92 % of the run, and what is left is waiting for inputs on the critical
path, which no scheduler removes without knowing task lengths ahead. The
pool's workers take the next ready task from one shared queue when they
are free, which packs long tasks well; mini-tasks pushes a task to a worker
when its inputs are ready and steals back when one runs dry, which costs a
round trip and left 13 % idle against the pool's 8 % in the traced run.
Holding ready long tasks on the scheduler until a worker has room (Dask's
worker saturation, at two tasks a worker) was tried and did not help:
hetero-dag stayed level with the pool, and tree-reduce took 16-21 % longer,
its leaves dealt out two at a time. What mini-tasks saves per task, the
driver's round trip (about 0.3 ms against tasks of 2.6 ms on average), is
paid while the other worker computes, so it does not show here.
"""

from __future__ import annotations

import random

from workloads import Workload

MASK = (1 << 64) - 1


def make_dag(seed: int, tasks: int, max_deps: int, window: int, median_work: int) -> list[tuple[int, tuple[int, ...]]]:
    """The graph: ``(work, deps)`` per task, every dependency an earlier task. Deterministic.

    One task in twenty is a source (no dependencies); the others draw 1 to
    ``max_deps`` distinct dependencies from the ``window`` tasks before them.
    Work is ``median_work`` times a log-normal factor (sigma 1), between 1
    and 50 times the median.

    >>> dag = make_dag(1, 6, 3, 4, 100)
    >>> dag == make_dag(1, 6, 3, 4, 100), dag == make_dag(2, 6, 3, 4, 100)
    (True, False)
    >>> all(d < i for i, (_, deps) in enumerate(dag) for d in deps)
    True
    """
    rng = random.Random(seed)
    dag = []
    for i in range(tasks):
        earlier = range(max(0, i - window), i)
        k = 0 if rng.random() < 0.05 else rng.randint(1, max_deps)
        deps = tuple(sorted(rng.sample(earlier, min(k, len(earlier)))))
        work = min(max(1, int(median_work * rng.lognormvariate(0.0, 1.0))), 50 * median_work)
        dag.append((work, deps))
    return dag


def sinks(dag) -> list[int]:
    """The tasks nothing depends on: their values are the answer.

    >>> sinks([(1, ()), (1, (0,)), (1, (0,))])
    [1, 2]
    """
    used = {d for _, deps in dag for d in deps}
    return [i for i in range(len(dag)) if i not in used]


def critical_path(dag) -> tuple[int, int]:
    """``(total work, work on the longest dependency chain)``; their ratio is the average parallelism.

    >>> critical_path([(5, ()), (1, ()), (2, (0, 1)), (4, (1,))])
    (12, 7)
    """
    finish: list[int] = []
    for work, deps in dag:
        finish.append(work + max((finish[d] for d in deps), default=0))
    return sum(work for work, _ in dag), max(finish, default=0)


def simulate(seed: int, task: int, work: int, *inputs: int) -> int:
    """One task: its inputs' values mixed into its own, then ``work`` steps of a recurrence.

    >>> simulate(1, 0, 10) == simulate(1, 0, 10), simulate(1, 0, 10, 5) == simulate(1, 0, 10, 6)
    (True, False)
    """
    x = (seed * 0x9E3779B97F4A7C15 + task) & MASK
    for v in inputs:
        x = ((x ^ v) * 0xBF58476D1CE4E5B9 + 1) & MASK
    for _ in range(work):
        x = (x * 6364136223846793005 + 1442695040888963407) & MASK
    return x


class HeteroDag(Workload):
    name = "hetero-dag"
    model = "tasks"
    unit = "tasks"
    traits = ("dependent chains",)
    expect = "task parallel"
    sizes = {
        "tiny": {"tasks": 60, "max_deps": 3, "window": 20, "median_work": 2_000},
        "small": {"tasks": 300, "max_deps": 4, "window": 60, "median_work": 16_000},
        "medium": {"tasks": 1_000, "max_deps": 4, "window": 100, "median_work": 16_000},
        "large": {"tasks": 3_000, "max_deps": 4, "window": 100, "median_work": 20_000},
    }

    def generate(self, *, seed, tasks, max_deps, window, median_work):
        return {"seed": seed, "dag": make_dag(seed, tasks, max_deps, window, median_work)}

    def reference(self, inputs):
        seed, dag = inputs["seed"], inputs["dag"]
        values: list[int] = []
        for i, (work, deps) in enumerate(dag):
            values.append(simulate(seed, i, work, *(values[d] for d in deps)))
        return {i: values[i] for i in sinks(dag)}

    def run(self, session, inputs):
        seed, dag = inputs["seed"], inputs["dag"]
        with session.tasks() as tasks:
            futures = []
            for i, (work, deps) in enumerate(dag):
                futures.append(tasks.submit(simulate, seed, i, work, *(futures[d] for d in deps)))
            ends = sinks(dag)
            return dict(zip(ends, tasks.gather([futures[i] for i in ends])))

    def units(self, inputs):
        return len(inputs["dag"])
