"""Task overhead: many no-op tasks, a fixed window in flight: throughput and per-task latency.

Each task returns its argument and does nothing else, so all the time a run
takes is the engine's own: pickling the call, choosing a worker, the
worker's loop, sending the result back. The driver keeps ``window`` tasks in
flight: each time the oldest comes back, it submits the next one (a closed
loop, as ``window`` clients with one request outstanding each would).

Why a window and not all tasks at once: with every task queued at the
start, task ``i``'s latency is just its place in the queue. With a window,
Little's law ties the two numbers the run records -- throughput =
``window`` / latency -- so a task's latency is its round trip under a
steady load of ``window`` tasks: the unloaded round trip when the engine
keeps up, ``window`` / capacity when it cannot.

Stresses: per-task overhead alone -- the scheduler, serialisation and the
driver round trip. No data moves and nothing computes.

Hypothesis: serial wins outright (a task is a function call, ~10 µs), and
every distributed engine is one to three orders of magnitude slower; the
ranking follows the length of the path a task travels. The pool pickles
every call and result through the driver's executor queue; a central
scheduler (Dask) adds a hop driver -> scheduler -> worker and back; an
engine that leases workers to the driver and sends tasks to them directly
(Ray) has the shortest path. More workers barely help: there is no work to
share. The measured latency is the break-even point for every other task
workload -- a task must compute for longer than this to be worth shipping.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Iterable, Iterator

from engines.api import Future
from workloads import Workload

MASK = (1 << 61) - 1


def noop(x):
    """The task: return the argument, do nothing.

    >>> noop(3)
    3
    """
    return x


def token(seed: int, i: int) -> int:
    """The argument of task ``i``: a number that depends on the seed. Deterministic.

    >>> token(1, 0) == token(1, 0), token(1, 0) == token(2, 0)
    (True, False)
    """
    return (seed * 0x9E3779B97F4A7C15 + i * 0xBF58476D1CE4E5B9) & MASK


def windowed(start: Callable[[object], Future], items: Iterable, window: int) -> Iterator:
    """``start(item)`` for each item, with at most ``window`` Futures outstanding.

    Yields the results in the order of ``items``: before starting a new item
    it waits for the oldest outstanding one. Oldest-first waiting is a
    little conservative when later items finish first, but needs nothing
    from an engine beyond ``Future.result``.

    >>> from engines.serial import SerialEngine
    >>> with SerialEngine().start() as s, s.tasks() as tasks:
    ...     list(windowed(lambda x: tasks.submit(noop, x), range(5), window=2))
    [0, 1, 2, 3, 4]
    """
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    pending: deque[Future] = deque()
    for item in items:
        if len(pending) >= window:
            yield pending.popleft().result()
        pending.append(start(item))
    while pending:
        yield pending.popleft().result()


def digest(values: Iterable[int]) -> dict[str, int]:
    """How many values, their sum, and a position-weighted sum (catches a result returned to the wrong task).

    >>> digest([5, 7])
    {'tasks': 2, 'sum': 12, 'weighted': 19}
    >>> digest([7, 5])["weighted"]
    17
    """
    n = total = weighted = 0
    for value in values:
        n += 1
        total = (total + value) & MASK
        weighted = (weighted + n * value) & MASK
    return {"tasks": n, "sum": total, "weighted": weighted}


class TaskOverhead(Workload):
    name = "task-overhead"
    model = "tasks"
    unit = "tasks"
    traits = ("fine-grained tasks",)
    expect = "baseline"
    sizes = {
        "tiny": {"tasks": 300, "window": 8},
        "small": {"tasks": 2_000, "window": 16},   # 2-core machine: Dask ≈ 10 s (≈ 200/s), Ray ≈ 2 s
        "medium": {"tasks": 6_000, "window": 16},
        "large": {"tasks": 50_000, "window": 16},
    }

    def generate(self, *, seed, tasks, window):
        return {"seed": seed, "tasks": tasks, "window": window}

    def reference(self, inputs):
        return digest(token(inputs["seed"], i) for i in range(inputs["tasks"]))

    def run(self, session, inputs):
        seed = inputs["seed"]
        with session.tasks() as tasks:
            results = windowed(lambda i: tasks.submit(noop, token(seed, i)), range(inputs["tasks"]), inputs["window"])
            return digest(results)

    def units(self, inputs):
        return inputs["tasks"]
