"""The other two models on mini-actors: a dataflow as operator actors, tasks on a pool of actors.

**Dataflow** -- as Flink runs a job. Every ``read`` and every keyed step
(``reduce_by_key``, ``join``) becomes a **group** of operator actors, one
per worker; the narrow steps after it (``flat_map``, ``map``, ``filter``)
run inside it, fused (`engines.plan.narrow`). An operator pushes records
downstream in batches of `BATCH` with ``tell``, actor to actor:

- a **source** operator reads its share of the partitions (``k::n``;
  callables are called there, on its worker), runs the narrow steps and,
  for each keyed step downstream, cuts each batch into one bucket per
  owner (`engines.plan.split`): bucket ``j`` goes to operator ``j`` of
  that step's group. For a reduce it first combines, across batches, up
  to `COMBINE_KEYS` keys before it sends them -- Flink's *local-global*
  aggregation: one record per key and source crosses over, not one per
  item;
- a **keyed** operator keeps what it is pushed and, once every upstream
  operator has sent its ``end`` marker, merges (`engines.plan.merge_reduce`,
  `engines.plan.merge_join`) and pushes on the same way;
- a ``collect`` sends its batches to the driver; every operator tells the
  driver when it is done, and the run ends when all are.

A stream read by two steps is computed once per batch: its operator's
routing is a tree (``node = {"ops": [steps], "outs": [node | ("keyed",
group, side) | ("sink", name)]}``). Back-pressure is the actors' own:
a source that outruns its downstream waits for credit.

Operators have no checkpoints, so a worker lost during a run fails it
(`DataflowError` naming the worker and the flow); the session goes on.

    >>> from engines.api import Dataflow
    >>> flow = Dataflow("wc")
    >>> flow.read([["a b a"], ["b"]]).flat_map(str.split).count_by_key().collect("n")
    >>> from engines.plan import compile
    >>> [(g["step"].op, g["tree"]) for g in operator_groups(compile(flow))]  # doctest: +NORMALIZE_WHITESPACE
    [('read', {'ops': [Step(op='flat_map', ...), Step(op='flat_map', ...)], 'outs': [('keyed', 1, 0)]}),
     ('reduce_by_key', {'ops': [], 'outs': [('sink', 'n')]})]

**Tasks** -- a pool of stateless worker actors (`_TaskRunner`), one per
worker; a task goes to the runner with the fewest tasks outstanding.
Dependencies are resolved on the driver: a task is sent once its inputs
are done, with their values -- every edge passes through the driver, as in
the ``pool`` engine. That is the honest cost of tasks on actors: an actor
has an address, a task's result does not.
"""

from __future__ import annotations

import itertools
import queue
import threading
from itertools import islice

from engines.api import ActorError, DataflowError, Step, TaskError, Tasks
from engines.common import run_retried, task_error, task_name
from engines.mini.endpoint import Reply, to_driver
from engines.plan import (Pipe, Plan, cut, merge_join, merge_reduce, narrow, partial_reduce, source_items, split,
                          step_error)

BATCH = 20_000          # records per push: big enough to amortise a message, small enough to pipeline
COMBINE_KEYS = 100_000  # keys a source combines for a reduce before it sends them on
_runs = itertools.count(1)


# ================================================================ a flow as groups of operators


def operator_groups(plan: Plan) -> list[dict]:
    """The groups of ``plan`` in order: ``{"step": Step, "tree": routing}`` each.

    A group per ``read`` and keyed stage; a pipe becomes a node of its
    stage's tree (its narrow steps, then where the items go), a ``narrow``
    stage a node that two or more pipes hang from.
    """
    groups, nodes = [], {}

    def attach(pipe: Pipe, out) -> None:
        nodes[pipe.stage]["outs"].append({"ops": list(pipe.ops), "outs": [out]} if pipe.ops else out)

    for stage in plan.stages:
        if stage.op in ("read", "reduce_by_key", "join"):
            nodes[stage.name] = {"ops": [], "outs": []}
            for side, pipe in enumerate(stage.inputs):
                attach(pipe, ("keyed", len(groups), side))
            groups.append({"step": stage.step, "tree": nodes[stage.name]})
        elif stage.op == "narrow":
            nodes[stage.name] = {"ops": [], "outs": []}
            attach(stage.inputs[0], nodes[stage.name])
        elif stage.op == "collect":
            attach(stage.inputs[0], ("sink", stage.name))
        else:
            raise DataflowError(f"stage {stage.name!r}: a {stage.op} runs as a stream, not on operator actors")
    for group in groups:
        _squash(group["tree"])
    return groups


def _squash(node: dict) -> None:
    """Fuse a chain of single-output nodes into one node. Mutates ``node``."""
    while len(node["outs"]) == 1 and isinstance(node["outs"][0], dict):
        child = node["outs"][0]
        node["ops"], node["outs"] = node["ops"] + child["ops"], child["outs"]
    for out in node["outs"]:
        if isinstance(out, dict):
            _squash(out)


def _targets(node: dict) -> set:
    """Every ``(group, side)`` the tree pushes to."""
    found = set()
    for out in node["outs"]:
        if isinstance(out, dict):
            found |= _targets(out)
        elif out[0] == "keyed":
            found.add(out[1:])
    return found


class Operator:
    """Operator ``index`` (of ``n``) of one group of a dataflow run: a source or one owner of a keyed step."""

    def __init__(self, run: int, index: int, n: int, group: dict, keyed: dict, downstream: dict):
        self.run, self.index, self.n = run, index, n
        self.step, self.tree = group["step"], group["tree"]
        self.keyed, self.downstream = keyed, downstream   # {group: its Step}, {group: [refs]}
        self.received = ([], [])
        self.ends = [0, 0]
        self.combined: dict = {}     # {group: combined values of a reduce not sent yet}

    def start(self) -> None:
        """A source: read this operator's partitions in batches and push them on."""
        try:
            for partition in self.step.arg:
                items = iter(source_items(partition))
                while batch := list(islice(items, BATCH)):
                    self._push(self.tree, batch)
            self._finish()
        except Exception as e:
            self._fail(e)

    def push(self, side: int, items: list) -> None:
        self.received[side].append(items)

    def end(self, side: int) -> None:
        """One upstream operator is done with ``side``; with all of them, merge and push on."""
        self.ends[side] += 1
        sides = 2 if self.step.op == "join" else 1
        if any(self.ends[s] < self.n for s in range(sides)):
            return
        try:
            left, right = self.received
            self.received = ([], [])
            if self.step.op == "reduce_by_key":
                merged = merge_reduce(self.step, *left)
            else:
                merged = merge_join(self.step, len(left), *left, *right)
            for i in range(0, len(merged), BATCH):
                self._push(self.tree, merged[i:i + BATCH])
            self._finish()
        except Exception as e:
            self._fail(e)

    def _push(self, node: dict, items: list) -> None:
        ops, outs = tuple(node["ops"]), node["outs"]
        if len(outs) == 1 and isinstance(outs[0], tuple) and outs[0][0] == "keyed":
            self._to_keyed(outs[0], items, ops)   # the steps run fused into the combine or the split
            return
        if ops:
            items = narrow(items, ops)
        for out in outs:
            if isinstance(out, dict):
                self._push(out, items)
            elif out[0] == "sink":
                to_driver(("flow", self.run, "sink", out[1], items))
            else:
                self._to_keyed(out, items, ())

    def _to_keyed(self, out: tuple, items: list, ops: tuple) -> None:
        """Items for a keyed group: a reduce's are combined here across batches (and sent when the
        combine holds `COMBINE_KEYS` keys, or at the end); a join's are cut and sent at once."""
        _, group, side = out
        step = self.keyed[group]
        if step.op == "reduce_by_key":
            try:
                self.combined[group] = acc = partial_reduce(items, ops, step, self.combined.get(group))
            except Exception as e:
                raise step_error(e, ops + (step,)) from None
            if len(acc) >= COMBINE_KEYS:
                self._send_combined(group)
            return
        self._send(group, side, split(items, ops, step, self.n))

    def _send_combined(self, group: int) -> None:
        acc = self.combined.pop(group, None)
        if acc:
            self._send(group, 0, cut(acc.items(), self.keyed[group], self.n, checked=True))

    def _send(self, group: int, side: int, buckets: list) -> None:
        for j, bucket in enumerate(buckets):
            for i in range(0, len(bucket), BATCH):
                self.downstream[group][j].tell("push", side, bucket[i:i + BATCH])

    def _finish(self) -> None:
        for group in list(self.combined):
            self._send_combined(group)
        for group, side in sorted(_targets(self.tree)):
            for ref in self.downstream[group]:
                ref.tell("end", side)
        to_driver(("flow", self.run, "done", self.index))

    def _fail(self, error: Exception) -> None:
        if not isinstance(error, DataflowError):
            error = step_error(error, (self.step,))
        to_driver(("flow", self.run, "failed", error))


def run_flow(session, plan: Plan) -> dict[str, list]:
    """Run ``plan`` as operator actors on ``session``'s live workers; ``{sink: items}``."""
    driver = session.driver
    groups, live = operator_groups(plan), driver.live()
    n, run = len(live), next(_runs)
    listener = driver.flows[run] = queue.SimpleQueue()
    keyed = {g: group["step"] for g, group in enumerate(groups) if group["step"].op != "read"}
    try:
        with session.actors() as actors:
            refs: dict = {}
            for g in reversed(range(len(groups))):      # downstream first: its refs are constructor arguments
                group, downstream = groups[g], {h: refs[h] for h, _ in _targets(groups[g]["tree"])}
                refs[g] = [actors.spawn(Operator, run, j, n, _share(group, j, n), keyed, downstream,
                                        worker=live[j], max_restarts=0) for j in range(n)]
            for g, group in enumerate(groups):
                if group["step"].op == "read":
                    for ref in refs[g]:
                        ref.tell("start")
            out, done = {sink: [] for sink in plan.sinks}, 0
            while done < n * len(groups):
                message = _next(driver, listener)
                if message[0] == "lost":
                    raise DataflowError(f"mini-actors: {message[2]} while running flow {plan.name!r}; operator "
                                        "actors keep no checkpoints, so the run cannot resume -- run it again")
                kind = message[2]
                if kind == "sink":
                    out[message[3]].extend(message[4])
                elif kind == "done":
                    done += 1
                elif kind == "failed":
                    raise message[3]
            return out
    finally:
        del driver.flows[run]


def _share(group: dict, j: int, n: int) -> dict:
    """What operator ``j`` of a group needs: a source gets only its own partitions."""
    step = group["step"]
    if step.op != "read":
        return group
    return {**group, "step": Step(step.op, step.name, step.inputs, step.fn, step.arg[j::n])}


def _next(driver, listener: queue.SimpleQueue):
    driver.flush()
    return driver.next_flow(listener)


# ================================================================ tasks on a pool of actors


class _TaskRunner:
    """A stateless worker actor: runs one task at a time; a failure comes back as a value."""

    def run(self, name: str, fn, args: tuple, kwargs: dict):
        try:
            return True, fn(*args, **kwargs)
        except Exception as e:
            return False, task_error(name, e)


class ActorTasks(Tasks):
    """The task model on mini-actors: one `_TaskRunner` per live worker, least-loaded first."""

    def __init__(self, session):
        super().__init__(session)
        self.driver = session.driver
        self.actors = session.actors()
        self.pool = [self.actors.spawn(_TaskRunner, worker=w) for w in self.driver.live()]
        self.load = [0] * len(self.pool)
        self.lock = threading.Lock()            # callbacks run on the cluster's reader threads

    def submit(self, fn, *args, retries: int = 0, **kwargs) -> Reply:
        future = Reply(task_name(fn), self.driver, self.session.latencies)

        def attempt(a, k, landed) -> None:
            with self.lock:
                i = min(range(len(self.pool)), key=self.load.__getitem__)
                self.load[i] += 1
            try:
                call = self.driver.send(self.pool[i], "run", (future.name, fn, a, k), {}, reply=True, internal=True)
            except ActorError as e:
                with self.lock:
                    self.load[i] -= 1
                future._set_error(TaskError(f"task {future.name} could not be sent: {e}", task=future.name))
                return
            call._add_done_callback(lambda c: land(c, i, landed))

        def land(call, i: int, landed) -> None:
            with self.lock:
                self.load[i] -= 1
            try:
                ok, value = call.result()
            except ActorError as e:             # its worker died: the runner was restarted elsewhere
                ok, value = False, TaskError(f"task {future.name} was lost: {e}", task=future.name)
            landed(ok, value)

        run_retried(future, args, kwargs, retries, attempt)
        return future

    def gather(self, futures) -> list:
        futures = list(futures)
        self.driver.flush()
        return [f.result() for f in futures]

    def close(self) -> None:
        self.actors.close()
