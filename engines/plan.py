"""A Dataflow as partitioned collections: the pieces every runtime shares.

A flow's steps fall in two kinds. **Narrow** steps (``flat_map`` and the
composites built on it) need nothing but the item in hand, so a chain of
them is *fused* into one loop over a partition and runs wherever the
partition is. **Keyed** steps (``reduce_by_key``, ``join``) need every item
of a key in one place, so they cut the flow into stages joined by a
**shuffle**: each partition is *split* into one bucket per owner
(``stable_hash(key) % n``), and owner ``j`` *merges* bucket ``j`` of every
partition. This is Spark's stage boundary, Dask bag's split/concat tasks,
and the exchange of a data-parallel worker; the runtimes differ only in
where the buckets travel.

`evaluate` runs a flow on a `Runner`: a way to start one function over a
list of argument tuples -- in this process (`InProcess`), in a pool, or as
tasks of any engine's task model (`OnTasks`: a dataflow compiled to a task
graph, as Dask does). The functions it ships -- `narrow`, `split`,
`merge_reduce`, `merge_join` -- are plain module-level functions, so any
worker can import them.

    >>> from engines.api import Dataflow
    >>> flow = Dataflow("wc")
    >>> flow.read([["a b a"], ["b"]]).flat_map(str.split).count_by_key().collect("n")
    >>> evaluate(flow, InProcess(), buckets=2)
    {'n': [('a', 2), ('b', 2)]}
"""

from __future__ import annotations

import operator
import pickle
import zlib
from collections import Counter
from itertools import chain
from typing import Callable, Iterable

from engines.api import (CountOne, DataflowError, Dataflow, FilterFn, MapFn, NotAPair, Step, describe_function,
                         user_function)
from engines.common import remote_traceback


# ------------------------------------------------------------- ownership


def stable_hash(key) -> int:
    """A hash that every process agrees on (Python salts ``hash`` of str per process).

    >>> stable_hash("word") == stable_hash("word") and stable_hash(7) == 7
    True
    """
    if isinstance(key, str):
        return zlib.crc32(key.encode())
    if isinstance(key, (int, float)) or key is None:
        return hash(key)  # numbers and None are not salted
    if isinstance(key, bytes):
        return zlib.crc32(key)
    if isinstance(key, tuple):
        h = 0x345678
        for part in key:
            h = ((h * 1000003) ^ stable_hash(part)) & 0xFFFFFFFFFFFF
        return h
    return zlib.crc32(pickle.dumps(key, protocol=5))


def owner(key, n: int) -> int:
    """The worker (0..n-1) that owns ``key``."""
    return stable_hash(key) % n


# ------------------------------------------------------------- per partition


def source_items(source) -> Iterable:
    """A partition's items: the list itself, or what its callable returns."""
    return source() if callable(source) else source


def fuse(items: Iterable, ops: tuple[Step, ...]) -> Iterable:
    """Chain narrow steps into one lazy loop (maps and filters run as C loops)."""
    it = iter(items)
    for step in ops:
        fn = step.fn
        if isinstance(fn, MapFn):
            it = map(fn.fn, it)
        elif isinstance(fn, FilterFn):
            it = filter(fn.pred, it)
        else:
            it = chain.from_iterable(map(fn, it))
    return it


def step_error(error: BaseException, steps: tuple[Step, ...]) -> DataflowError:
    """Name the step whose user function raised ``error`` (found in its traceback)."""
    if isinstance(error, DataflowError):
        return error
    codes = {}
    for step in _unwrapped(steps):
        code = getattr(user_function(step.fn), "__code__", None) if step.fn else None
        if code is not None:
            codes[code] = step
    culprit = None
    tb = error.__traceback__
    while tb is not None:
        culprit = codes.get(tb.tb_frame.f_code, culprit)
        tb = tb.tb_next
    if culprit is None:  # a builtin (str.split) or the engine's own unpacking
        culprit = next((s for s in reversed(steps) if s.fn is not None), steps[-1])
    where = f" ({describe_function(culprit.fn)})" if culprit.fn is not None else ""
    return DataflowError(f"step {culprit.name!r}{where} raised {remote_traceback(error)}")


def _unwrapped(steps) -> Iterable[Step]:
    """``steps``, and the user's steps an engine's own step runs inside (its function's ``steps``)."""
    for step in steps:
        yield step
        yield from _unwrapped(getattr(step.fn, "steps", ()))


def narrow(source, ops: tuple[Step, ...]) -> list:
    """Read a partition and run its fused narrow steps."""
    try:
        return list(fuse(source_items(source), ops))
    except Exception as e:
        raise step_error(e, ops) from None


def combine(pairs: Iterable, fn: Callable, step: Step) -> dict:
    """Fold ``(key, value)`` pairs into ``{key: combined value}``."""
    acc = {}
    get = acc.get
    missing = acc  # a sentinel no value can be
    for item in pairs:
        try:
            key, value = item
        except (TypeError, ValueError):
            raise NotAPair(step.name, item) from None
        old = get(key, missing)
        acc[key] = value if old is missing else fn(old, value)
    return acc


def counting(ones: Step | None, keyed: Step) -> CountOne | None:
    """The `CountOne` of a ``count_by_key`` -- when ``ones`` makes ``(key, 1)`` pairs and ``keyed``
    adds them up -- else None. Such a count is made by `count_keys`, not pair by pair.

    >>> from engines.api import Dataflow
    >>> flow = Dataflow("wc")
    >>> flow.read([["a"]]).count_by_key().collect("n")
    >>> counting(flow.steps[1], flow.steps[2])
    CountOne(key=None)
    """
    fn = ones.fn if ones is not None else None
    if keyed.op == "reduce_by_key" and keyed.fn is operator.add and isinstance(fn, MapFn) \
            and isinstance(fn.fn, CountOne):
        return fn.fn
    return None


def count_keys(items: Iterable, one: CountOne) -> Counter:
    """``{key: how many items have it}`` by `collections.Counter`, whose loop is C: the answer
    ``combine`` gives for the ``(key, 1)`` pairs of a ``count_by_key``, without making a pair per item.

    >>> count_keys(["a", "b", "a"], CountOne(None))
    Counter({'a': 2, 'b': 1})
    """
    return Counter(items if one.key is None else map(one.key, items))


def partial_reduce(items: Iterable, ops: tuple[Step, ...], keyed: Step) -> dict:
    """The map side of ``reduce_by_key`` over one partition: the fused narrow steps, combined."""
    one = counting(ops[-1] if ops else None, keyed)
    if one is not None:
        return count_keys(fuse(items, ops[:-1]), one)
    return combine(fuse(items, ops), keyed.fn, keyed)


def checked_pairs(items: Iterable, step: Step) -> Iterable:
    """``items``, each checked to be a ``(key, value)`` pair for ``step`` (`NotAPair` if one is not).

    For an engine whose own keyed operators would take a non-pair apart in
    some other way (Spark's ``join`` indexes ``item[0]``, ``item[1]``).
    """
    for item in items:
        try:
            _, _ = item
        except (TypeError, ValueError):
            raise NotAPair(step.name, item) from None
        yield item


def key_of(item, step: Step):
    """The key of a ``(key, value)`` item; `NotAPair` naming ``step`` if it is not one.

    >>> key_of(("a", 1), Step("reduce_by_key", "sum", ()))
    'a'
    """
    try:
        key, _ = item
    except (TypeError, ValueError):
        raise NotAPair(step.name, item) from None
    return key


def split(source, ops: tuple[Step, ...], keyed: Step, n: int) -> list[list]:
    """Map side of a shuffle: run the narrow steps, combine if reducing, cut into n buckets."""
    steps = ops + (keyed,)
    try:
        if keyed.op == "reduce_by_key":
            items = partial_reduce(source_items(source), ops, keyed).items()
        else:
            items = fuse(source_items(source), ops)
        buckets = [[] for _ in range(n)]
        if n == 1 and keyed.op == "reduce_by_key":
            buckets[0].extend(items)        # combine has checked every pair
            return buckets
        for item in items:
            try:
                key, _ = item
            except (TypeError, ValueError):
                raise NotAPair(keyed.name, item) from None
            buckets[stable_hash(key) % n if n > 1 else 0].append(item)
        return buckets
    except Exception as e:
        raise step_error(e, steps) from None


def merge_reduce(step: Step, *buckets: list) -> list:
    """Reduce side: combine one owner's buckets from every partition."""
    try:
        return list(combine(chain.from_iterable(buckets), step.fn, step).items())
    except Exception as e:
        raise step_error(e, (step,)) from None


def merge_join(step: Step, n_left: int, *buckets: list) -> list:
    """Join side: pair every left value with every right value of the same key.

    ``buckets`` are this owner's buckets of the left side (the first
    ``n_left``), then of the right side.
    """
    table: dict = {}
    for key, value in chain.from_iterable(buckets[:n_left]):   # pairs: split checked them
        table.setdefault(key, []).append(value)
    return [(key, (lv, rv)) for key, rv in chain.from_iterable(buckets[n_left:]) for lv in table.get(key, ())]


# ------------------------------------------------------------- a whole flow


class Runner:
    """Where the per-partition functions run, and what stands for their results.

    ``map(fn, calls)`` starts ``fn(*args)`` for each argument tuple and returns
    one *handle* per call: the value itself (this process, a pool) or a
    Future (a task engine: handles then travel worker to worker as
    dependencies and never come back to the driver until a sink needs them).
    ``pick(handle, j)`` is bucket ``j`` of a split's output; ``values`` turns
    handles into values on the driver.
    """

    def map(self, fn: Callable, calls: list[tuple]) -> list:
        raise NotImplementedError

    def pick(self, handle, j: int):
        return handle[j]

    def values(self, handles: list) -> list:
        return handles


def call_label(fn: Callable, args: tuple) -> str:
    """What one call of `evaluate`'s functions does, for a trace: ``split reduce_by_key_3``.

    >>> call_label(merge_reduce, (Step("reduce_by_key", "sum", ()),))
    'merge sum'
    """
    if fn is narrow:
        return "+".join(s.name for s in args[1]) or "read"
    if fn is split:
        return f"split {args[2].name}"
    if fn in (merge_reduce, merge_join):
        return f"merge {args[0].name}"
    return getattr(fn, "__name__", "call")


class InProcess(Runner):
    """Every call in this process, one after another; each a span of ``stamps`` while it records."""

    def __init__(self, stamps=None, lane: str = "driver"):
        self.stamps, self.lane = stamps, lane

    def map(self, fn, calls):
        if self.stamps is None or not self.stamps.recording:
            return [fn(*args) for args in calls]
        out = []
        for args in calls:
            with self.stamps.span(self.lane, call_label(fn, args), "compute"):
                out.append(fn(*args))
        return out


class OnTasks(Runner):
    """Every call a task of the task model; picking a bucket is a small task too,
    run where the split's output lives, so only that bucket moves (as ``dask.bag`` does)."""

    def __init__(self, tasks):
        self.tasks = tasks

    def map(self, fn, calls):
        return [self.tasks.submit(fn, *args) for args in calls]

    def pick(self, handle, j):
        return self.tasks.submit(operator.getitem, handle, j)

    def values(self, handles):
        return self.tasks.gather(handles)


def evaluate(flow: Dataflow, runner: Runner, buckets: int) -> dict[str, list]:
    """Run ``flow`` stage by stage on ``runner``; ``{sink: items}``.

    State: ``lazy[step name] = (sources, ops)`` -- the partitions (or handles
    of them) a stream starts from and the narrow steps still to apply.
    Narrow steps only extend ``ops``; a keyed step runs a shuffle and starts a
    new stage from its merged buckets; a stream read by two or more steps is
    computed once, where its partitions are; a sink runs the narrow steps and
    brings the items to the driver (a stream the workers hold already, with no
    step left to run -- a reduce's or join's output -- is fetched as it is).
    """
    lazy: dict[str, tuple[list, tuple[Step, ...]]] = {}
    held: set[str] = set()   # streams whose partitions are results of the runner's calls, not a read's sources
    out: dict[str, list] = {}

    def shuffle(name: str, step: Step) -> list[list]:
        """Split every partition of stream ``name``; per owner j, the handles of its buckets."""
        sources, ops = lazy[name]
        parts = runner.map(split, [(src, ops, step, buckets) for src in sources])
        return [[runner.pick(p, j) for p in parts] for j in range(buckets)]

    consumers = Counter(name for step in flow.steps for name in step.inputs)
    for step in flow.steps:
        if step.op in ("read", "flat_map"):
            sources, ops = (list(step.arg), ()) if step.op == "read" else lazy[step.inputs[0]]
            ops = ops if step.op == "read" else ops + (step,)
            if consumers[step.name] > 1:  # a stream that branches is computed once, not once per branch
                sources, ops = runner.map(narrow, [(s, ops) for s in sources]), ()
                held.add(step.name)
            lazy[step.name] = (sources, ops)
        elif step.op == "reduce_by_key":
            per_owner = shuffle(step.inputs[0], step)
            lazy[step.name] = (runner.map(merge_reduce, [(step, *b) for b in per_owner]), ())
            held.add(step.name)
        elif step.op == "join":
            left, right = (shuffle(name, step) for name in step.inputs)
            calls = [(step, len(lb), *lb, *rb) for lb, rb in zip(left, right)]
            lazy[step.name] = (runner.map(merge_join, calls), ())
            held.add(step.name)
        elif step.op == "collect":
            name = step.inputs[0]
            sources, ops = lazy[name]
            if ops or name not in held:   # steps still to run, or a read's sources still to read
                sources = runner.map(narrow, [(s, ops) for s in sources])
            out[step.arg] = list(chain.from_iterable(runner.values(sources)))
        else:
            raise DataflowError(f"step {step.name!r}: unknown op {step.op!r}")
    return out
