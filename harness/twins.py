"""Twins: for each adapter and workload, the program that engine's own experienced users would write.

A benchmark is only as fair as the way each engine was driven. The adapters
translate one engine-neutral program (a `Dataflow`, tasks, actors) into
each engine's API, generically. A **twin** answers the same question by
hand, on the engine's native API, the way a user who knows that engine
would write it: the same inputs made the same way (the workload's own
generator, called on the workers), the same answer collected to the driver
in the shape the workload's ``run`` returns, so the workload's own
``check(got, workload.reference(inputs))`` judges both. ``archbench
fairness`` (`harness.fairness`) runs the adapter and the twin alternately on
one running cluster: adapter ÷ twin near 1 says the adapter drives its
engine as well as a hand-written program does; well above 1 names a cost
of the generic translation.

A twin is called as ``TWINS[(engine, workload)](session, inputs)`` with the
adapter's **running** session, started by archbench with its settings, and
uses its native handle: Ray, the ``ray`` module (``ray.init`` was called by
the session; a twin neither starts nor stops Ray); Dask, ``session.client``
(a distributed Client); Spark, ``session.sc`` (a SparkContext); Bytewax,
``session.run_native(build)`` (a flow built by hand, run in the session's processes). Latencies
are not recorded: a twin owes only the answer. Everything here is a
module-level function or class, so the workers import it by reference.

The idiom of each twin:

- ray × wordcount: a remote task per partition makes its lines and returns a ``Counter``;
  the driver merges the counters.
- ray × groupby: a remote task per partition returns ``{key: (sum v1, count, sum v2)}``;
  the driver merges them and takes the means.
- ray × task-overhead: ``noop.remote(token)``, ``window`` ObjectRefs in flight, ``ray.get`` of the oldest.
- ray × task-chain: each hop's ObjectRef passed straight to the next ``hop.remote``; ``ray.get`` of the last.
- ray × ping-pong: a ``@ray.remote`` player class; handles passed to each other with ``meet``,
  hits sent fire-and-forget with ``partner.hit.remote(...)``, actors killed afterwards.
- dask × wordcount: ``client.map`` of the per-partition ``Counter``, ``client.gather``, merged on the
  driver (``dask.bag``'s ``frequencies``/``foldby`` were measured slower for this).
- dask × groupby: ``client.map`` of the per-partition partial sums, gathered and merged on the driver.
  The partials are a ``defaultdict`` and the counts a ``Counter``: Dask pickles those whole, while a
  result that is a plain ``dict``, ``list`` or ``tuple`` is serialized element by element
  (dask/distributed#6368): gathering the eight partials of groupby at small size took 2 s as plain
  dicts, 0.06 s as a ``Counter``.
- dask × task-overhead: ``client.submit(noop, token, pure=False)``, ``window`` futures in flight,
  ``result()`` of the oldest.
- dask × task-chain: ``client.submit(hop, previous_future, step, pure=False)``: each hop's future
  passed to the next; ``result()`` of the last.
- dask × ping-pong: ``client.submit(Player, actor=True, pure=False)``; the player's methods are
  coroutines, so they run on the worker's event loop and a hit sent to a partner on the same worker
  does not call into it recursively (a plain method would).
- spark × wordcount: ``sc.parallelize(recipes, len(recipes)).flatMap(per-partition Counter items)
  .reduceByKey(add, sc.defaultParallelism).collect()``.
- spark × groupby: the same with per-partition partial sums, ``reduceByKey(add_partials)``, ``map(finish)``.
- bytewax × wordcount: a ``FixedPartitionedSource`` with a partition per recipe (made on its worker, one
  batch), ``op.flat_map_batch`` of a ``Counter`` per batch, ``op.reduce_final(add)``, ``op.output`` to a
  list; run in the session's processes by ``session.run_native`` (Bytewax has no cluster to submit to).
- bytewax × groupby: the same with per-batch partial sums, ``op.reduce_final(add_partials)``, ``op.map(finish)``.

Where an adapter adds a latency stamp to what its engine does (Ray: a
second return per task, a token the driver watches; Dask: a done-callback
per future), a **stamped** twin (`STAMPED`) is the twin with only that stamp
added: ``archbench fairness`` runs it too, and stamped ÷ twin is what the
stamp costs on its own.

    >>> twins_for("ray")
    ['groupby', 'ping-pong', 'task-chain', 'task-overhead', 'wordcount']
    >>> twins_for("spark")
    ['groupby', 'wordcount']
"""

from __future__ import annotations

import asyncio
import operator
import time
from collections import Counter, defaultdict, deque
from functools import partial
from itertools import chain
from typing import Callable

from engines.adapters.bytewax_run import list_sink
from workloads.groupby import add_partials, finish, make_rows
from workloads.ping_pong import Player, bounce, calls_digest, poll
from workloads.task_chain import hop, start_payload
from workloads.task_overhead import digest, noop, token
from workloads.wordcount import make_lines

#: (engine, workload) -> the hand-written program: ``twin(session, inputs)`` -> what the workload's run returns
TWINS: dict[tuple[str, str], Callable] = {}
#: (engine, workload) -> the twin with only the adapter's latency stamp added: what the stamp costs on its own
STAMPED: dict[tuple[str, str], Callable] = {}


def _registers_in(table: dict):
    """A decorator factory: ``@deco(engine, workload)`` puts the function in ``table`` under that cell."""
    def deco(engine: str, workload: str):
        def register(fn: Callable) -> Callable:
            table[(engine, workload)] = fn
            return fn
        return register
    return deco


twin = _registers_in(TWINS)        # @twin(engine, workload): the hand-written program of that cell
stamped = _registers_in(STAMPED)   # @stamped(engine, workload): its twin with the adapter's stamp added


def twins_for(engine: str) -> list[str]:
    """The workloads that have a twin on ``engine``, sorted."""
    return sorted(w for e, w in TWINS if e == engine)


# ------------------------------------------------------------- per partition, on the workers (every engine)


def word_counts(recipe: tuple) -> Counter:
    """One wordcount partition, made here from its recipe, counted."""
    return Counter(chain.from_iterable(map(str.split, make_lines(*recipe))))


def word_count_items(recipe: tuple):
    """`word_counts` as ``(word, count)`` pairs (what Spark's ``flatMap`` yields)."""
    return word_counts(recipe).items()


def _no_rows() -> list:
    return [0, 0, 0.0]


def fold_rows(rows) -> defaultdict:
    """``{key: [sum of v1, count, sum of v2]}`` of groupby rows, each key's partial updated in place."""
    acc: defaultdict = defaultdict(_no_rows)
    for key, v1, v2 in rows:
        partial = acc[key]
        partial[0] += v1
        partial[1] += 1
        partial[2] += v2
    return acc


def group_partials(recipe: tuple) -> defaultdict:
    """One groupby partition, made here from its recipe, folded (`fold_rows`)."""
    return fold_rows(make_rows(*recipe))


def group_partial_items(recipe: tuple):
    """`group_partials` as ``(key, partial)`` pairs (what Spark's ``flatMap`` yields)."""
    return group_partials(recipe).items()


def merged_counts(parts) -> dict:
    """The wordcount answer from the partitions' counters."""
    total: Counter = Counter()
    for part in parts:
        total.update(part)
    return {"counts": list(total.items())}


def merged_stats(parts) -> dict:
    """The groupby answer from the partitions' partial sums."""
    acc: dict = {}
    get = acc.get
    for part in parts:
        for key, p in part.items():
            s = get(key)
            acc[key] = p if s is None else (s[0] + p[0], s[1] + p[1], s[2] + p[2])
    return {"stats": [finish(kv) for kv in acc.items()]}


# ------------------------------------------------------------- Ray


_ray_remotes: dict = {}


def _ray_remote(obj):
    """``ray.remote(obj)``, made once per process (as ``@ray.remote`` at a module's top would be)."""
    import ray

    if obj not in _ray_remotes:
        _ray_remotes[obj] = ray.remote(obj)
    return _ray_remotes[obj]


@twin("ray", "wordcount")
def ray_wordcount(session, inputs):
    import ray

    count = _ray_remote(word_counts)
    return merged_counts(ray.get([count.remote(recipe) for recipe in inputs]))


@twin("ray", "groupby")
def ray_groupby(session, inputs):
    import ray

    partials = _ray_remote(group_partials)
    return merged_stats(ray.get([partials.remote(recipe) for recipe in inputs]))


@twin("ray", "task-overhead")
def ray_task_overhead(session, inputs):
    import ray

    task, seed, window = _ray_remote(noop), inputs["seed"], inputs["window"]
    pending: deque = deque()
    values = []
    for i in range(inputs["tasks"]):
        if len(pending) >= window:
            values.append(ray.get(pending.popleft()))
        pending.append(task.remote(token(seed, i)))
    values.extend(ray.get(list(pending)))
    return digest(values)


def noop_and_token(x):
    """`noop`'s value and a token (None) that says it is done: the Ray adapter's two returns."""
    return noop(x), None


@stamped("ray", "task-overhead")
def ray_task_overhead_stamped(session, inputs):
    """The twin with the Ray adapter's stamp: a second return (a token), watched with ``future()``."""
    import ray

    task, seed, window = _ray_remote(noop_and_token), inputs["seed"], inputs["window"]
    landed: list = []
    pending: deque = deque()
    values = []
    for i in range(inputs["tasks"]):
        if len(pending) >= window:
            values.append(ray.get(pending.popleft()))
        value, done = task.options(num_returns=2).remote(token(seed, i))
        done.future().add_done_callback(lambda _: landed.append(time.perf_counter()))
        pending.append(value)
    values.extend(ray.get(list(pending)))
    return digest(values)


@twin("ray", "task-chain")
def ray_task_chain(session, inputs):
    import ray

    first, step_task = _ray_remote(start_payload), _ray_remote(hop)
    ref = first.remote(inputs["seed"], inputs["width"])
    for step in range(1, inputs["hops"]):
        ref = step_task.remote(ref, step)
    return ray.get(ref)


class RayPlayer(Player):
    """A ping-pong player as a Ray actor (``ray.remote(RayPlayer)``): the workload's `Player`, its hits
    sent to its partner (an actor handle) with ``partner.hit.remote``."""

    def serve(self, ball: int, rallies: int) -> None:
        self.last = None
        self.partner.hit.remote(ball, 1, 2 * rallies)

    def hit(self, ball: int, n: int, last_hit: int) -> None:
        ball = bounce(ball, n)
        if n == last_hit:
            self.last = ball
        else:
            self.partner.hit.remote(ball, n + 1, last_hit)


@twin("ray", "ping-pong")
def ray_ping_pong(session, inputs):
    import ray

    seed, pairs, rallies = inputs["seed"], inputs["pairs"], inputs["rallies"]
    player = _ray_remote(RayPlayer)
    servers = [player.remote() for _ in range(pairs)]
    receivers = [player.remote() for _ in range(pairs)]
    players = servers + receivers
    try:
        ray.get([a.meet.remote(b) for a, b in zip(servers, receivers)]
                + [b.meet.remote(a) for a, b in zip(servers, receivers)])
        replies = [ray.get(players[i % len(players)].echo.remote(bounce(seed, i))) for i in range(inputs["calls"])]
        for p, server in enumerate(servers):
            server.serve.remote(bounce(seed, -1 - p), rallies)
        balls = poll({p: (lambda s=server: s.final.remote().future()) for p, server in enumerate(servers)})
        return {"calls": calls_digest(replies), "balls": [balls[p] for p in range(pairs)]}
    finally:
        for p in players:
            ray.kill(p)


# ------------------------------------------------------------- Dask


@twin("dask", "wordcount")
def dask_wordcount(session, inputs):
    client = session.client
    return merged_counts(client.gather(client.map(word_counts, inputs, pure=False)))


@twin("dask", "groupby")
def dask_groupby(session, inputs):
    client = session.client
    return merged_stats(client.gather(client.map(group_partials, inputs, pure=False)))


@twin("dask", "task-overhead")
def dask_task_overhead(session, inputs):
    client, seed, window = session.client, inputs["seed"], inputs["window"]
    pending: deque = deque()
    values = []
    for i in range(inputs["tasks"]):
        if len(pending) >= window:
            values.append(pending.popleft().result())
        pending.append(client.submit(noop, token(seed, i), pure=False))
    values.extend(client.gather(list(pending)))
    return digest(values)


@stamped("dask", "task-overhead")
def dask_task_overhead_stamped(session, inputs):
    """The twin with the Dask adapter's stamp: a done-callback on each future."""
    client, seed, window = session.client, inputs["seed"], inputs["window"]
    landed: list = []
    pending: deque = deque()
    values = []
    for i in range(inputs["tasks"]):
        if len(pending) >= window:
            values.append(pending.popleft().result())
        future = client.submit(noop, token(seed, i), pure=False)
        future.add_done_callback(lambda _: landed.append(time.perf_counter()))
        pending.append(future)
    values.extend(client.gather(list(pending)))
    return digest(values)


@twin("dask", "task-chain")
def dask_task_chain(session, inputs):
    client = session.client
    future = client.submit(start_payload, inputs["seed"], inputs["width"], pure=False)
    for step in range(1, inputs["hops"]):
        future = client.submit(hop, future, step, pure=False)
    return future.result()


def _fire(sent) -> None:
    """A message sent and not waited for. A call to a remote actor is on its way already (an ActorFuture);
    Dask hands a call to an actor on this worker back as the coroutine itself, which must be scheduled."""
    if asyncio.iscoroutine(sent):
        task = asyncio.ensure_future(sent)
        _in_flight.add(task)
        task.add_done_callback(_in_flight.discard)


_in_flight: set = set()   # scheduled local calls, kept referenced until they finish


class DaskPlayer:
    """A ping-pong player as a Dask actor; its methods are coroutines, run on the worker's event loop."""

    def __init__(self):
        self.partner = None
        self.last = None

    async def meet(self, partner) -> None:
        self.partner = partner

    async def echo(self, x: int) -> int:
        return bounce(x, 0)

    async def serve(self, ball: int, rallies: int) -> None:
        self.last = None
        _fire(self.partner.hit(ball, 1, 2 * rallies))

    async def hit(self, ball: int, n: int, last_hit: int) -> None:
        ball = bounce(ball, n)
        if n == last_hit:
            self.last = ball
        else:
            _fire(self.partner.hit(ball, n + 1, last_hit))

    async def final(self):
        return self.last


@twin("dask", "ping-pong")
def dask_ping_pong(session, inputs):
    client = session.client
    seed, pairs, rallies = inputs["seed"], inputs["pairs"], inputs["rallies"]
    futures = [client.submit(DaskPlayer, actor=True, pure=False) for _ in range(2 * pairs)]
    try:
        players = client.gather(futures)
        servers, receivers = players[:pairs], players[pairs:]
        for done in ([a.meet(b) for a, b in zip(servers, receivers)] + [b.meet(a) for a, b in zip(servers, receivers)]):
            done.result()
        replies = [players[i % len(players)].echo(bounce(seed, i)).result() for i in range(inputs["calls"])]
        for p, server in enumerate(servers):
            server.serve(bounce(seed, -1 - p), rallies)   # not waited for: the driver asks for the final ball
        balls = poll({p: (lambda s=server: s.final()) for p, server in enumerate(servers)})
        return {"calls": calls_digest(replies), "balls": [balls[p] for p in range(pairs)]}
    finally:
        client.cancel(futures)


# ------------------------------------------------------------- Spark


@twin("spark", "wordcount")
def spark_wordcount(session, inputs):
    sc = session.sc
    pairs = sc.parallelize(inputs, len(inputs)).flatMap(word_count_items)
    return {"counts": pairs.reduceByKey(operator.add, sc.defaultParallelism).collect()}


@twin("spark", "groupby")
def spark_groupby(session, inputs):
    sc = session.sc
    partials = sc.parallelize(inputs, len(inputs)).flatMap(group_partial_items)
    return {"stats": partials.reduceByKey(add_partials, sc.defaultParallelism).map(finish).collect()}


# ------------------------------------------------------------- Bytewax


def _bytewax_source(make: Callable, recipes: list):
    """A ``FixedPartitionedSource`` with one partition per recipe (Bytewax shares them out among the
    workers); each partition is made on its worker and emitted as one batch."""
    from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

    class Part(StatefulSourcePartition):
        def __init__(self, recipe: tuple):
            self.recipe, self.done = recipe, False

        def next_batch(self) -> list:
            if self.done:
                raise StopIteration()
            self.done = True
            return make(*self.recipe)

        def snapshot(self):
            return None

    class Recipes(FixedPartitionedSource):
        def list_parts(self):
            return [str(i) for i in range(len(recipes))]

        def build_part(self, step_id, for_part, resume_state):
            return Part(recipes[int(for_part)])

    return Recipes()


def _batch_word_counts(lines: list):
    return Counter(chain.from_iterable(map(str.split, lines))).items()


def _batch_group_partials(rows: list):
    return [(key, tuple(p)) for key, p in fold_rows(rows).items()]


def _bytewax_wordcount_flow(inputs: list, sinks: dict):
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow as BytewaxFlow

    flow = BytewaxFlow("wordcount")
    lines = op.input("lines", flow, _bytewax_source(make_lines, inputs))
    counted = op.flat_map_batch("count_batch", lines, _batch_word_counts)
    op.output("out", op.reduce_final("sum", counted, operator.add), list_sink(sinks.setdefault("counts", [])))
    return flow


def _bytewax_groupby_flow(inputs: list, sinks: dict):
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow as BytewaxFlow

    flow = BytewaxFlow("groupby")
    rows = op.input("rows", flow, _bytewax_source(make_rows, inputs))
    partials = op.flat_map_batch("fold_batch", rows, _batch_group_partials)
    stats = op.map("finish", op.reduce_final("sum", partials, add_partials), finish)
    op.output("out", stats, list_sink(sinks.setdefault("stats", [])))
    return flow


@twin("bytewax", "wordcount")
def bytewax_wordcount(session, inputs):
    return {"counts": session.run_native(partial(_bytewax_wordcount_flow, inputs)).get("counts", [])}


@twin("bytewax", "groupby")
def bytewax_groupby(session, inputs):
    return {"stats": session.run_native(partial(_bytewax_groupby_flow, inputs)).get("stats", [])}
