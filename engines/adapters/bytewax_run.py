"""One Bytewax run inside a worker process: its state, and the guard every step runs in.

What the Bytewax adapter's two translations share -- a flow of batches
(`engines.adapters.bytewax`) and a timed stream
(`engines.adapters.bytewax_streams`):

- `Run` -- one run's state in one process: the first error, what the sinks
  gathered, and (while a trace records) the stamps of every step call;
- `Guard` -- a step as Bytewax calls it. A Python error inside an operator
  makes every Bytewax process panic, so a failing step never raises: its
  guard keeps the first error (naming the step) in the run, and from then
  on passes nothing on, so the run ends normally and the driver raises
  that error;
- `bytewax_id` -- the Bytewax step id for an archbench step;
- `list_sink` -- a Bytewax sink that appends what its worker writes to a
  list (the adapter's sinks, the hand-written twins and the benchmarks').

    >>> run = Run()
    >>> halve = Guard(run, Step("flat_map", "halve", ()), lambda batch: [x / 2 for x in batch])
    >>> halve([2, 4]), halve([1, 0])
    ([1.0, 2.0], [0.5, 0.0])
    >>> invert = Guard(run, Step("flat_map", "invert", ()), lambda batch: [1 / x for x in batch])
    >>> invert([1, 0]), invert([1])     # the error is kept; the step passes nothing on
    ((), ())
    >>> print(str(run.error).splitlines()[0])
    step 'invert' raised ZeroDivisionError: division by zero
"""

from __future__ import annotations

import time

from engines.api import DataflowError, Step
from engines.plan import step_error


class Run:
    """One run's state in one process: the first error, what the sinks gathered, and -- while a
    trace records -- the stamps ``(bytewax step id, kind, start, end)`` of every call of a step.

    ``store``: the run's recovery store folder (`engines.adapters.bytewax_recovery`), None without
    recovery; ``proc_id``: this process's index in the run."""

    def __init__(self, tracing: bool = False, store: str | None = None, proc_id: int = 0):
        self.error: DataflowError | None = None
        self.sinks: dict[str, list] = {}
        self.stamps: list[tuple] | None = [] if tracing else None
        self.store, self.proc_id = store, proc_id

    def timed(self, name: str, kind: str, fn, *args):
        """``fn(*args)``, stamped as ``name`` while a trace records."""
        stamps = self.stamps
        if stamps is None:
            return fn(*args)
        start = time.time()
        try:
            return fn(*args)
        finally:
            stamps.append((name, kind, start, time.time()))


class Guard:
    """A step as bytewax calls it: the first error is kept and from then on nothing passes.

    ``fallback(*args)`` is what the operator gets instead of a result (no items by default).
    While a trace records, each call is stamped as ``name`` (the bytewax step id) of ``kind``.
    """

    def __init__(self, run: Run, step: Step, fn, fallback=lambda *args: (), name: str | None = None,
                 kind: str = "compute"):
        self.run, self.step, self.fn, self.fallback = run, step, fn, fallback
        self.name, self.kind = name or bytewax_id(step.name), kind

    def __call__(self, *args):
        run = self.run
        if run.error is None:
            stamps = run.stamps
            start = time.time() if stamps is not None else 0.0
            try:
                return self.fn(*args)
            except Exception as e:
                run.error = step_error(e, (self.step,))
            finally:
                if stamps is not None:
                    stamps.append((self.name, self.kind, start, time.time()))
        return self.fallback(*args)


def bytewax_id(name: str, part: str = "") -> str:
    """A bytewax step id for archbench step ``name`` (bytewax ids may not contain dots).

    >>> bytewax_id("count.words", "route")
    'count_words__route'
    """
    return name.replace(".", "_") + (f"__{part}" if part else "")


def list_sink(items: list):
    """A Bytewax ``DynamicSink`` appending every item its worker writes to ``items`` (imported when called:
    Bytewax is needed only where a flow runs)."""
    from bytewax.outputs import DynamicSink, StatelessSinkPartition

    class Into(StatelessSinkPartition):
        def write_batch(self, batch):
            items.extend(batch)

    class ToList(DynamicSink):
        def build(self, step_id, worker_index, worker_count):
            return Into()

    return ToList()
