"""Trace: what each worker did and when, as plain rows, for timelines and for tests.

Every runtime of the minimal engine records **events** while it works.
They are plain dicts -- one long-format table, like the harness's results
-- so a plot, a notebook or a test reads them without knowing the engine:

- a **span**: a worker was busy with something from ``start`` to ``end``::

      {"event": "span", "worker": 0, "step": "flat_map_2+count_by_key_3", "what": "split",
       "start": 1718.20, "end": 1718.45}

  ``step`` names the flow steps being run (fused narrow steps are joined by
  ``+``: they run as one loop, so their time cannot be told apart); ``what``
  is the phase (``split`` combines and buckets before an exchange, ``merge``
  combines what arrived, ``sink`` runs the steps before a ``collect``; a
  stream's ``tick`` reads the sources and sends partial windows; the task
  and actor runtimes use ``task`` and ``message``).
- a **send**: a worker sent ``bytes`` (as framed on the wire) to ``to`` --
  another worker's id, or ``"driver"``::

      {"event": "send", "worker": 0, "to": 1, "bytes": 48213, "items": 2100,
       "step": "reduce_by_key_4", "what": "part", "time": 1718.45}

Times are ``time.time()`` seconds, comparable between the processes of one
host. A worker keeps its rows in a `Tracer` (or, where every message
counts, an `Events`: tuples until asked for) and ships them to the driver
when asked; sessions return them from ``session.trace()``.

The helpers below are the questions the tests and the timelines ask:
when was each worker busy (`busy`), how long were two of them busy at once
(`overlap`), and how many bytes went from whom to whom (`traffic`).

    >>> t0, t1 = Tracer(0), Tracer(1)
    >>> with t0.span("count", "split", clock=iter([0.0, 2.0]).__next__): pass
    >>> with t1.span("count", "split", clock=iter([1.0, 3.0]).__next__): pass
    >>> t0.sent(1, 500, "reduce", "part", items=10, now=2.0)
    >>> rows = t0.rows + t1.rows
    >>> overlap(rows)        # both busy from 1.0 to 2.0
    1.0
    >>> traffic(rows)
    {(0, 1): 500}
"""

from __future__ import annotations

import time
from contextlib import contextmanager

from engines.tracing import Trace, send, span, worker_lane


class Tracer:
    """The event rows of one worker. ``notify(step)`` (optional) is called when a span starts,
    so a runtime can tell its driver where the worker is (a crash report names that step)."""

    def __init__(self, worker, notify=None):
        self.worker = worker
        self.notify = notify
        self.rows: list[dict] = []

    @contextmanager
    def span(self, step: str, what: str, clock=time.time, **extra):
        """Record a span around the ``with`` block (also when the block raises). Mutates ``rows``."""
        if self.notify is not None:
            self.notify(step)
        start = clock()
        try:
            yield
        finally:
            self.rows.append({"event": "span", "worker": self.worker, "step": step, "what": what,
                              "start": start, "end": clock(), **extra})

    def sent(self, to, nbytes: int, step: str, what: str, items: int | None = None, now: float | None = None) -> None:
        """Record ``nbytes`` sent to ``to`` (a worker id or ``"driver"``). Mutates ``rows``."""
        self.rows.append({"event": "send", "worker": self.worker, "to": to, "bytes": nbytes, "items": items,
                          "step": step, "what": what, "time": time.time() if now is None else now})

    def take(self) -> list[dict]:
        """The rows recorded so far, leaving the tracer empty."""
        rows, self.rows = self.rows, []
        return rows


class Events:
    """The rows of a busy process, kept as tuples until asked for (cheaper per message than dicts).

    Past ``cap`` events, only the bytes and items sent per destination are
    kept (one row each, marked ``beyond trace_cap``). The mini-actors
    processes record this way: a message span per message handled, a send
    per frame.

        >>> events = Events(0, cap=1)
        >>> events.span("Counter-1", "add", "driver", 1.0, 1.5, 2.0)
        >>> events.sent("driver", 120, {"reply": 2})
        >>> [(r["event"], r["what"]) for r in events.take()]
        [('span', 'message'), ('send', 'reply (beyond trace_cap)')]
    """

    def __init__(self, worker, cap: int):
        self.worker, self.cap = worker, cap
        self.events: list = []
        self.overflow: dict = {}

    def span(self, step: str, method: str, sender, arrived: float, start: float, end: float) -> None:
        """A message from ``sender`` waited from ``arrived`` to ``start`` and ran until ``end``."""
        if len(self.events) < self.cap:
            self.events.append(("span", step, method, sender, arrived, start, end))

    def sent(self, to, nbytes: int, kinds: dict) -> None:
        """A frame of ``nbytes`` went to ``to`` (``kinds``: its messages by kind); fetching the trace is not recorded."""
        if "trace" in kinds:
            return
        if len(self.events) < self.cap:
            self.events.append(("send", time.time(), to, nbytes, kinds))
            return
        total = self.overflow.setdefault(to, {})
        for kind, n in kinds.items():
            total[kind] = total.get(kind, 0) + n
        total[None] = total.get(None, 0) + nbytes

    def take(self) -> list[dict]:
        """The rows since the last call, leaving it empty."""
        events, overflow, self.events, self.overflow = self.events, self.overflow, [], {}
        rows, me = [], self.worker
        for event in events:
            if event[0] == "span":
                _, step, method, sender, arrived, start, end = event
                rows.append({"event": "span", "worker": me, "step": step, "what": "message", "method": method,
                             "sender": sender, "wait": start - arrived, "start": start, "end": end})
            else:
                _, at, to, nbytes, kinds = event
                rows.append({"event": "send", "worker": me, "to": to, "bytes": nbytes, "items": sum(kinds.values()),
                             "step": "actors", "what": "+".join(sorted(kinds)), "time": at})
        now = time.time()
        for to, kinds in overflow.items():
            nbytes = kinds.pop(None)
            rows.append({"event": "send", "worker": me, "to": to, "bytes": nbytes, "items": sum(kinds.values()),
                         "step": "actors", "what": "+".join(sorted(kinds)) + " (beyond trace_cap)", "time": now})
        return rows


def busy(rows: list[dict]) -> dict:
    """``{worker: [(start, end), ...]}``: each worker's spans, in time order.

    >>> busy([{"event": "span", "worker": 1, "start": 2, "end": 3}, {"event": "send", "worker": 1}])
    {1: [(2, 3)]}
    """
    out: dict = {}
    for row in rows:
        if row["event"] == "span":
            out.setdefault(row["worker"], []).append((row["start"], row["end"]))
    return {w: sorted(spans) for w, spans in sorted(out.items(), key=lambda kv: str(kv[0]))}


def overlap(rows: list[dict], at_least: int = 2) -> float:
    """Seconds during which at least ``at_least`` workers were busy at once.

    A sweep over span starts (+1) and ends (-1); one worker's own spans are
    merged first, so a worker never counts twice.
    """
    edges = []
    for spans in busy(rows).values():
        merged: list[list[float]] = []
        for start, end in spans:
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        for start, end in merged:
            edges += [(start, 1), (end, -1)]
    total, active, last = 0.0, 0, None
    for t, step in sorted(edges, key=lambda e: (e[0], e[1])):
        if active >= at_least and last is not None:
            total += t - last
        active += step
        last = t
    return total


def traffic(rows: list[dict]) -> dict:
    """``{(from, to): bytes}`` over every send row."""
    out: dict = {}
    for row in rows:
        if row["event"] == "send":
            key = (row["worker"], row["to"])
            out[key] = out.get(key, 0) + row["bytes"]
    return out


# ------------------------------------------------- as the harness's timelines take them

_KIND = {"message": "message", "task": "compute", "split": "compute", "merge": "compute", "sink": "compute",
         "tick": "compute", "branch": "compute", "schedule": "schedule"}


def _lane(worker) -> str:
    return worker if worker in ("driver", "scheduler") else worker_lane(worker)


def as_spans(rows: list[dict]) -> list[dict]:
    """The rows above as `engines.tracing` rows: a lane per worker, a kind per phase, sends with their peer.

    >>> as_spans([{"event": "span", "worker": 1, "step": "count", "what": "split", "start": 0, "end": 1},
    ...           {"event": "send", "worker": 1, "to": 0, "bytes": 9, "step": "count", "what": "part", "time": 1}])
    ... # doctest: +NORMALIZE_WHITESPACE
    [{'event': 'span', 'lane': 'worker 1', 'name': 'count', 'kind': 'compute', 'start': 0, 'end': 1, 'pid': None},
     {'event': 'send', 'lane': 'worker 1', 'peer': 'worker 0', 'bytes': 9, 'time': 1, 'name': 'count'}]
    """
    out = []
    for row in rows:
        if row["event"] == "span":
            name = f"{row['step']}.{row['method']}" if row.get("method") else str(row["step"])
            out.append(span(_lane(row["worker"]), name, _KIND.get(row["what"], "compute"), row["start"], row["end"]))
        elif row["event"] == "send":
            out.append(send(_lane(row["worker"]), _lane(row["to"]), row["bytes"], row["time"], str(row["step"])))
    return out


class Recording:
    """``trace_start`` / ``trace_stop`` for a mini session, over its ``trace()`` rows.

    A session whose ``trace()`` gives only its last run overrides `_recorded`.
    """

    _trace_t0: float | None = None

    def trace_start(self) -> None:
        self._trace_t0 = time.time()
        self.trace()   # drains where trace() drains

    def _recorded(self) -> list[dict]:
        return self.trace()

    def trace_stop(self) -> Trace:
        t0, self._trace_t0 = self._trace_t0, None
        rows = [r for r in self._recorded() if t0 is None or r.get("start", r.get("time", t0)) >= t0]
        return Trace(as_spans(rows), source="mini trace (engines/mini/trace.py)", missing=[])
