"""A Dataflow compiled to stages, and the pieces every runtime shares to run them.

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

`compile` does that cut once, for every engine: a flow becomes a frozen
`Plan`, a list of `Stage` s in an order where each comes after its inputs.
A stage reads **pipes**: the items of an earlier stage through the narrow
steps fused after it (`Pipe`). Every runtime and translator interprets the
plan -- none walks the flow's steps itself::

    >>> from engines.flow import Dataflow
    >>> flow = Dataflow("wc")
    >>> words = flow.read([["a b a"], ["b"]], name="lines").flat_map(str.split, name="words")
    >>> words.count_by_key(name="counts").collect("n")
    >>> words.filter(str.isupper, name="shouts").collect("loud")
    >>> for stage in compile(flow).stages:
    ...     print(stage)
    read lines
    narrow words <- lines|words  (shared)
    reduce_by_key counts <- words|count_by_key_1
    collect n <- counts
    collect loud <- words|shouts

``words`` is read by two stages, so it is computed once (a ``narrow``
stage, *shared*) and both read it where it is; the ``count_by_key`` ones
step runs fused into the reduce's map side; each sink is a stage.

`evaluate` runs a plan on a `Runner`: a way to start one function over a
list of argument tuples -- in this process (`InProcess`), in a pool, or as
tasks of any engine's task model (`OnTasks`: a dataflow compiled to a task
graph, as Dask does). The functions it ships -- `narrow`, `split`,
`merge_reduce`, `merge_join` -- are plain module-level functions, so any
worker can import them.

    >>> evaluate(compile(flow), InProcess(), buckets=2)
    {'n': [('a', 2), ('b', 2)], 'loud': []}
"""

from __future__ import annotations

import operator
import pickle
import zlib
from collections import Counter
from dataclasses import dataclass
from itertools import chain
from typing import Callable, Iterable

from engines.errors import DataflowError, NotAPair, remote_traceback
from engines.flow import CountOne, Dataflow, FilterFn, MapFn, Step, describe_function, user_function


# ------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Pipe:
    """A stage's input: the items of stage ``stage`` through the narrow steps ``ops``, fused."""

    stage: str
    ops: tuple[Step, ...] = ()

    def __str__(self):
        return "|".join([self.stage, *(step.name for step in self.ops)])


@dataclass(frozen=True)
class Stage:
    """One stage of a `Plan`: where items are read, held, exchanged or delivered.

    ``op`` is ``read`` (the step's partitions), ``stream`` (a timed source),
    ``narrow`` (a narrow chain that two or more stages read: computed once,
    kept where it runs), ``reduce_by_key`` or ``join`` (a shuffle: split on
    the map side, merged by each key's owner), ``window`` (tumbling
    event-time windows) or ``collect`` (a sink; ``name`` is the sink's).
    ``step`` is the flow's step it stands for; ``shared``: two or more
    stages read this one.
    """

    op: str
    name: str
    inputs: tuple[Pipe, ...]
    step: Step
    shared: bool = False

    def __str__(self):
        ins = f" <- {', '.join(map(str, self.inputs))}" if self.inputs else ""
        return f"{self.op} {self.name}{ins}{'  (shared)' * self.shared}"


@dataclass(frozen=True)
class Plan:
    """A compiled flow: its `Stage` s, each after its inputs. Made by `compile`; plain, frozen data."""

    name: str
    stages: tuple[Stage, ...]
    streaming: bool

    @property
    def sinks(self) -> list[str]:
        """The sinks' names, in definition order."""
        return [stage.name for stage in self.stages if stage.op == "collect"]

    @property
    def source(self) -> Stage | None:
        """A streaming plan's ``stream`` stage."""
        return next((stage for stage in self.stages if stage.op == "stream"), None)

    @property
    def window(self) -> Stage | None:
        """A streaming plan's ``window`` stage, if it has one."""
        return next((stage for stage in self.stages if stage.op == "window"), None)

    def stage(self, name: str) -> Stage:
        """The stage called ``name``."""
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"plan {self.name!r} has no stage {name!r}; stages: {[s.name for s in self.stages]}")


STREAM_OPS = ("stream", "flat_map", "window", "collect")


def compile(flow: Dataflow) -> Plan:
    """The `Plan` of ``flow``: narrow chains fused into pipes, a stage per read, shuffle, branch and sink.

    A narrow chain read by two or more steps becomes a ``narrow`` stage,
    computed once -- except in a stream, where events are not held: each
    branch runs the chain on each event. A streaming flow takes a stream
    source, narrow steps, at most one window and sinks; anything else
    fails here, naming the step (`DataflowError`).
    """
    if not isinstance(flow, Dataflow):
        raise DataflowError(f"session.dataflow takes an engines.api.Dataflow, got {type(flow).__name__}")
    streaming = flow.streaming
    consumers = Counter(name for step in flow.steps for name in step.inputs)
    pipes: dict[str, Pipe] = {}      # step name -> how its items are made
    stages: list[Stage] = []
    for step in flow.steps:
        shared = consumers[step.name] > 1
        if streaming and step.op not in STREAM_OPS:
            raise DataflowError(_not_in_a_stream(step))
        if step.op in ("read", "stream"):
            stages.append(Stage(step.op, step.name, (), step, shared))
            pipes[step.name] = Pipe(step.name)
        elif step.op == "flat_map":
            up = pipes[step.inputs[0]]
            pipes[step.name] = Pipe(up.stage, up.ops + (step,))
            if shared and not streaming:     # computed once, not once per branch
                stages.append(Stage("narrow", step.name, (pipes[step.name],), step, True))
                pipes[step.name] = Pipe(step.name)
        elif step.op in ("reduce_by_key", "join", "window"):
            stages.append(Stage(step.op, step.name, tuple(pipes[name] for name in step.inputs), step, shared))
            pipes[step.name] = Pipe(step.name)
        elif step.op == "collect":
            stages.append(Stage("collect", step.arg, (pipes[step.inputs[0]],), step))
        else:
            raise DataflowError(f"step {step.name!r}: unknown op {step.op!r}")
    return Plan(flow.name, tuple(stages), streaming)


def _not_in_a_stream(step: Step) -> str:
    if step.op == "read":
        return (f"step {step.name!r}: a streaming flow takes no batch read; ship a small "
                "table with a step's function instead (a broadcast)")
    return (f"step {step.name!r} ({step.op}): a streaming flow runs a stream source, "
            "narrow steps, one window and collect; other steps are not supported in a stream")


def narrow_call(step: Step) -> tuple[str, Callable]:
    """How a narrow step runs: ``("map", fn)``, ``("filter", pred)`` or ``("flat_map", fn)``.

    ``map`` and ``filter`` are flat_map functions that runtimes may call
    directly (a faster loop: `fuse`; Spark's own ``map``/``filter``).

    >>> from engines.flow import MapFn
    >>> narrow_call(Step("flat_map", "m", ("r",), MapFn(abs)))
    ('map', <built-in function abs>)
    """
    fn = step.fn
    if isinstance(fn, MapFn):
        return "map", fn.fn
    if isinstance(fn, FilterFn):
        return "filter", fn.pred
    return "flat_map", fn


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
    for kind, fn in map(narrow_call, ops):
        if kind == "map":
            it = map(fn, it)
        elif kind == "filter":
            it = filter(fn, it)
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


def combine(pairs: Iterable, fn: Callable, step: Step, acc: dict | None = None) -> dict:
    """Fold ``(key, value)`` pairs into ``{key: combined value}`` -- into ``acc`` when given (mutated)."""
    acc = {} if acc is None else acc
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


def count_keys(items: Iterable, one: CountOne, counts: Counter | None = None) -> Counter:
    """``{key: how many items have it}`` by `collections.Counter`, whose loop is C: the answer
    ``combine`` gives for the ``(key, 1)`` pairs of a ``count_by_key``, without making a pair per item.
    Added to ``counts`` when given (mutated).

    >>> count_keys(["a", "b", "a"], CountOne(None))
    Counter({'a': 2, 'b': 1})
    >>> count_keys(["b"], CountOne(None), Counter({"a": 2, "b": 1}))
    Counter({'a': 2, 'b': 2})
    """
    counts = Counter() if counts is None else counts
    counts.update(items if one.key is None else map(one.key, items))
    return counts


def partial_reduce(items: Iterable, ops: tuple[Step, ...], keyed: Step, acc: dict | None = None) -> dict:
    """The map side of ``reduce_by_key`` over one partition: the fused narrow steps, combined --
    into ``acc`` (what this function returned for the partitions before; mutated) when given."""
    one = counting(ops[-1] if ops else None, keyed)
    if one is not None:
        return count_keys(fuse(items, ops[:-1]), one, acc)
    return combine(fuse(items, ops), keyed.fn, keyed, acc)


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
            return cut(partial_reduce(source_items(source), ops, keyed).items(), keyed, n, checked=True)
        return cut(fuse(source_items(source), ops), keyed, n)
    except Exception as e:
        raise step_error(e, steps) from None


def cut(items: Iterable, keyed: Step, n: int, checked: bool = False) -> list[list]:
    """Items ``(key, value)`` into ``n`` buckets by owner, ``stable_hash(key) % n``; `NotAPair` naming
    ``keyed`` for an item that is not a pair (``checked``: every one is, as a combine's output)."""
    buckets = [[] for _ in range(n)]
    if n == 1 and checked:
        buckets[0].extend(items)
        return buckets
    for item in items:
        try:
            key, _ = item
        except (TypeError, ValueError):
            raise NotAPair(keyed.name, item) from None
        buckets[stable_hash(key) % n if n > 1 else 0].append(item)
    return buckets


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


def evaluate(plan: Plan, runner: Runner, buckets: int) -> dict[str, list]:
    """Run ``plan`` stage by stage on ``runner``; ``{sink: items}``.

    State: ``parts[stage]`` -- where a stage's items are: a read's sources
    (read by whatever runs a pipe from it), or, once the stage is ``held``,
    handles of the runner's results on the workers. A pipe runs where its
    stage's partitions are: fused into the map side of a shuffle (`split`),
    or as `narrow` calls. A sink brings a pipe's items to the driver; a held
    stage with no step left to run (a reduce's or join's output) is fetched
    as it is.
    """
    parts: dict[str, list] = {}
    held: set[str] = set()
    out: dict[str, list] = {}

    def run(pipe: Pipe) -> list:
        """Handles of a pipe's items, computed where its stage's partitions are."""
        if not pipe.ops and pipe.stage in held:
            return parts[pipe.stage]
        return runner.map(narrow, [(src, pipe.ops) for src in parts[pipe.stage]])

    def shuffle(pipe: Pipe, step: Step) -> list[list]:
        """Split every partition of a pipe; per owner j, the handles of its buckets."""
        split_parts = runner.map(split, [(src, pipe.ops, step, buckets) for src in parts[pipe.stage]])
        return [[runner.pick(p, j) for p in split_parts] for j in range(buckets)]

    for stage in plan.stages:
        step = stage.step
        if stage.op == "read":
            parts[stage.name] = list(step.arg)
            if not stage.shared:
                continue
            parts[stage.name] = run(Pipe(stage.name))   # a read that branches is read once
        elif stage.op == "narrow":
            parts[stage.name] = run(stage.inputs[0])
        elif stage.op == "reduce_by_key":
            parts[stage.name] = runner.map(merge_reduce, [(step, *b) for b in shuffle(stage.inputs[0], step)])
        elif stage.op == "join":
            left, right = (shuffle(pipe, step) for pipe in stage.inputs)
            parts[stage.name] = runner.map(merge_join, [(step, len(lb), *lb, *rb) for lb, rb in zip(left, right)])
        elif stage.op == "collect":
            out[stage.name] = list(chain.from_iterable(runner.values(run(stage.inputs[0]))))
            continue
        else:
            raise DataflowError(f"stage {stage.name!r}: a {stage.op} runs as a stream, not on a batch runner "
                                "(engines.streaming runs a stream's plan as batches)")
        held.add(stage.name)
    return out
