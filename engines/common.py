"""Small pieces every engine needs the same way: names, dependencies, retries, remote errors.

    >>> from engines.api import Future
    >>> f = Future("double-1"); f._set_result(4)
    >>> resolve((f, 1), {"k": f})
    ((4, 1), {'k': 4})
"""

from __future__ import annotations

import itertools
import threading

from engines.api import ActorError, Future, TaskError
from engines.errors import remote_traceback

_ids = itertools.count(1)


class OneShot:
    """A one-shot event made of one lock (held until set): what a Future needs of ``threading.Event``.

    An Event is a Condition and two locks -- about ten times the cost of the
    rest of a mini-actors call's bookkeeping -- and its wake-up goes through a
    waiter list. One lock is made in a fraction of that and wakes its waiter
    directly. The Futures of mini-tasks and mini-actors wait on one.
    """

    __slots__ = ("_lock", "_set")

    def __init__(self):
        self._lock = threading.Lock()
        self._lock.acquire()
        self._set = False

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:                      # Future._settle calls it once, under its own lock
        if not self._set:
            self._set = True
            self._lock.release()

    def wait(self, timeout=None) -> bool:
        if self._set:
            return True
        if self._lock.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            self._lock.release()                # let the next waiter through
        return self._set


_PLAIN = frozenset({int, float, str, bytes, bool, type(None)})


def plain_args(args: tuple, kwargs: dict) -> bool:
    """Are all of a call's arguments numbers, strings, bytes, bools or None? Then the C pickler is enough.

    For anything else cloudpickle is used: plain pickle would send a class or
    function of the driver's ``__main__`` by reference, and the worker has no such
    module -- it would fail there, not here.

        >>> plain_args((1, "a", None), {"k": 2.5}), plain_args(([1],), {})
        (True, False)
    """
    return _PLAIN.issuperset(map(type, args)) and (not kwargs or _PLAIN.issuperset(map(type, kwargs.values())))


def task_name(fn) -> str:
    """``double-7``: the function's name and a number unique in this process."""
    return f"{getattr(fn, '__name__', type(fn).__name__)}-{next(_ids)}"


def dependencies(args: tuple, kwargs: dict) -> list[Future]:
    """The Futures among the top-level arguments: a task's dependencies."""
    return [a for a in itertools.chain(args, kwargs.values()) if isinstance(a, Future)]


def after(futures: list[Future], fn) -> None:
    """Call ``fn()`` once every one of ``futures`` is done (at once when there are none).

    The driver-side wait of engines that resolve dependencies on the driver.
    """
    if not futures:
        fn()
        return
    left = [len(futures)]
    lock = threading.Lock()

    def one_done(_) -> None:
        with lock:
            left[0] -= 1
            ready = left[0] == 0
        if ready:
            fn()

    for future in futures:
        future._add_done_callback(one_done)


def run_retried(future: Future, args: tuple, kwargs: dict, retries: int, attempt) -> None:
    """Run a task from the driver, retrying it there: the loop of the engines whose driver resolves
    dependencies and sends each attempt out itself (pool, the task model on mini-actors).

    Once every Future among ``args`` and ``kwargs`` is done, their values
    replace them and ``attempt(args, kwargs, landed)`` starts one attempt;
    the engine calls ``landed(ok, value)`` when it ends, with the result or
    the TaskError it failed with. A failed attempt is made again while
    ``retries`` last, then ``future`` fails with the last error. A failed
    dependency fails ``future`` at once, naming the dependency.

        >>> f = Future("div-1")
        >>> tries = []
        >>> def attempt(a, k, landed):
        ...     tries.append(a)
        ...     landed(len(tries) == 2, "second time lucky" if len(tries) == 2 else TaskError("div-1 failed"))
        >>> run_retried(f, (1, 0), {}, 1, attempt)
        >>> f.result(), len(tries)
        ('second time lucky', 2)
    """
    def launch(attempts_left: int) -> None:
        try:
            a, k = resolve(args, kwargs)
        except Exception as e:
            fail_in_turn(future, task_error(future.name, e))
            return
        attempt(a, k, lambda ok, value: landed(ok, value, attempts_left))

    def landed(ok: bool, value, attempts_left: int) -> None:
        if ok:
            future._set_result(value)
        elif attempts_left > 0:
            launch(attempts_left - 1)
        else:
            future._set_error(value)

    after(dependencies(args, kwargs), lambda: launch(retries))


_failing = threading.local()     # .queue: the failures being settled on this thread, oldest first


def fail_in_turn(future: Future, error: BaseException) -> None:
    """``future._set_error(error)``, one failure after another rather than one inside another.

    A failed task fails its dependents from its Future's callbacks, each of
    which fails its own: down a chain of 10,000 tasks that is 10,000 nested
    calls, and Python's stack ends long before. Here a failure raised while
    another is being settled on the same thread waits its turn in a queue,
    so the chain fails in a loop, at any length.
    """
    queue = getattr(_failing, "queue", None)
    if queue is not None:
        queue.append((future, error))
        return
    _failing.queue = queue = [(future, error)]
    try:
        while queue:
            f, e = queue.pop(0)
            f._set_error(e)
    finally:
        _failing.queue = None


ON_WORKER = object()   # the value of a HeldFuture that is still on the worker that made it


class HeldFuture(Future):
    """A task's Future whose value stays on the worker that made it (Dask, Ray).

    The engine calls `_done` when it hears that the task finished: the
    Future is then done and its latency stamped, but the value is fetched
    (``_pull``) only on the first ``result()`` -- results move worker to
    worker, and to the driver only when it asks.
    """

    def _done(self) -> None:
        self._set_result(ON_WORKER)

    def _pull(self, timeout: float | None):
        """The value, from where it lives. Engines override this."""
        raise NotImplementedError

    def result(self, timeout: float | None = None):
        Future.result(self, timeout)  # waits; raises the task's error
        if self._value is ON_WORKER:
            self._value = self._pull(timeout)
        return self._value


def gather_held(futures, kind: type, pull_many) -> list:
    """The results of ``futures`` in order: wait for all (raising the first error in the order
    given), then fetch the values of every ``kind`` still on the workers in one go,
    ``pull_many(those futures) -> their values``."""
    futures = list(futures)
    for f in futures:
        Future.result(f)
    held = [f for f in futures if isinstance(f, kind) and f._value is ON_WORKER]
    if held:
        for f, value in zip(held, pull_many(held)):
            f._value = value
    return [f.result() for f in futures]


def resolve(args: tuple, kwargs: dict, value=None) -> tuple[tuple, dict]:
    """Replace each Future argument by ``value(future)`` (default: its result).

    A failed dependency raises, naming it, so the dependent task fails too.
    """
    value = value or _result_of

    def one(a):
        return value(a) if isinstance(a, Future) else a

    return tuple(one(a) for a in args), {k: one(v) for k, v in kwargs.items()}


def _result_of(future: Future):
    try:
        return future.result()
    except Exception as e:
        if isinstance(e, TaskError) and e.dependency is not None and e.original is not None:
            # it did not run either: say what failed first, not the whole chain (10,000 links, 10,000 clauses)
            why = f"it did not run: a task before it raised {type(e.original).__name__}: {first_line(e.original)}"
        else:
            why = first_line(e)
        raise TaskError(f"dependency {future.name} failed: {why}", dependency=future.name,
                        original=original_of(e)) from e


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message (its type's name when it has none).

    >>> first_line(ValueError("bad input\\nmore"))
    'bad input'
    """
    text = str(error)
    return text.splitlines()[0] if text else type(error).__name__


def original_of(error: BaseException) -> BaseException | None:
    """What the user's code raised: a TaskError's ``original``, any other error itself."""
    return error.original if isinstance(error, TaskError) else error


def task_error(name: str, error: BaseException, worker=None) -> TaskError:
    """A TaskError naming the task, carrying the traceback from where it ran (on ``worker``)."""
    if isinstance(error, TaskError) and error.dependency is not None:
        return did_not_run(name, error, worker)
    return TaskError(f"task {name} raised {remote_traceback(error)}", task=name, worker=worker, original=error)


def did_not_run(name: str, cause: TaskError, worker=None) -> TaskError:
    """Task ``name`` did not run: ``cause`` says which dependency failed (its ``dependency``) and how."""
    return TaskError(f"task {name} did not run: {cause}", task=name, dependency=cause.dependency,
                     worker=worker, original=cause.original)


def dependent_error(name: str, error: BaseException) -> TaskError:
    """The error of task ``name`` as the driver hears it from Dask or Ray.

    Both fail every task downstream of a failed task with that task's own
    error: a TaskError of another task means ``name`` did not run because
    that task failed. Any other error (one of the engine's own) is named for
    ``name``.
    """
    if isinstance(error, TaskError) and error.task == name:
        return error
    if isinstance(error, TaskError):
        return did_not_run(name, TaskError(f"dependency failed: {first_line(error)}",
                                           dependency=error.task, original=error.original))
    return task_error(name, error)


def invoke(actor, actor_id: str, method: str, args: tuple, kwargs: dict):
    """Run one message on an actor object; errors name the actor and the method.

    An unknown method lists the ones the class has (the fix is usually a typo).
    """
    cls = type(actor).__name__
    fn = getattr(actor, method, None) if not method.startswith("_") else None
    if not callable(fn):
        methods = sorted(m for m in dir(actor) if not m.startswith("_") and callable(getattr(actor, m)))
        raise ActorError(f"{cls} actor {actor_id} has no method {method!r}; its methods: {', '.join(methods)}")
    try:
        return fn(*args, **kwargs)
    except Exception as e:
        raise ActorError(f"{cls} actor {actor_id}: {method}() raised {remote_traceback(e)}") from None


class Whole(list):
    """A list that an engine moves between processes in one piece.

    Dask and Ray look inside a plain ``list`` they move: Dask serializes it
    element by element (dask/distributed#6368), Ray packs it with msgpack,
    calling back into Python for each tuple in it. A list subclass each of
    them pickles whole, in one C loop. Measured for one bucket of wordcount at
    medium size (22,000 ``(word, count)`` pairs): Ray serialized it in 43 ms
    as a list, 5 ms as a `Whole`; Dask moved 20,000 pairs worker to worker
    in 0.63 s as a list, 0.02 s as a `Whole`. The dataflow's partitions and
    buckets travel so on both engines; a user's own task results do not.
    """

    __slots__ = ()


def in_one_piece(fn):
    """``fn``, returning its list result as a `Whole` (under ``fn``'s name, which traces show).

    >>> type(in_one_piece(list)("ab")).__name__
    'Whole'
    """
    def run(*args):
        out = fn(*args)
        return Whole(out) if type(out) is list else out

    run.__name__ = run.__qualname__ = getattr(fn, "__name__", type(fn).__name__)
    return run


def kill_all(procs) -> None:
    """SIGKILL every ``psutil.Process`` of ``procs`` still running, then reap them (up to 10 s)."""
    import psutil

    for proc in procs:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=10)
