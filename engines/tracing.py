"""Traces: what each engine's workers did and when, as plain rows.

A timeline shows an architecture at work: which worker ran what, when,
what waited, which bytes crossed which link. Every engine records one
from **its own instruments** (the mini engine's tracer, Dask's task stream,
Ray's task events, Spark's event log, stamps inside the Bytewax adapter's
steps, the baselines' own stamps) and hands back the same plain rows; the
harness alone turns them into files (`harness.traces`) and pictures
(`harness.timeline`). No engine formats JSON.

Two kinds of row::

    {"event": "span", "lane": "worker 0", "name": "flat_map_2+reduce_by_key_3", "kind": "compute",
     "start": 1718.20, "end": 1718.45, "pid": 4242}
    {"event": "send", "lane": "worker 0", "peer": "worker 1", "bytes": 48213, "time": 1718.45,
     "name": "reduce_by_key_3"}

- ``lane`` is who did it: ``"driver"``, ``"scheduler"``, ``"worker 0"``,
  ``"worker 1"``... (an engine with more lanes than workers -- Ray's
  process per actor -- names each ``"worker <pid>"`` or as it sees them);
- ``kind`` is one of `KINDS`: ``compute`` (user code), ``exchange``
  (moving data: a shuffle's send, a fetch), ``schedule`` (deciding and
  dispatching), ``message`` (an actor handling one), ``io`` (reading a
  source); idle time is what no span covers;
- times are ``time.time()`` seconds: comparable between the processes of
  one host;
- a ``send`` row is ``bytes`` moved from ``lane`` to ``peer`` (a lane, or
  ``"driver"``).

A session records between ``trace_start()`` and ``trace_stop()``, which
returns a `Trace`: the rows, the instrument they came from, and what this
engine cannot show (``missing``: "bytes moved: Ray does not report them").

    >>> rows = [span("worker 0", "a", "compute", 0.0, 2.0), span("worker 1", "b", "compute", 1.0, 3.0),
    ...         send("worker 0", "worker 1", 500, 2.0)]
    >>> busy_at_once(rows)          # both workers busy from 1.0 to 2.0
    1.0
    >>> moved(rows)
    {('worker 0', 'worker 1'): 500}
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

KINDS = ("compute", "exchange", "schedule", "message", "io")


def span(lane: str, name: str, kind: str, start: float, end: float, pid: int | None = None) -> dict:
    """A span row: ``lane`` was busy with ``name`` (of ``kind``) from ``start`` to ``end``."""
    if kind not in KINDS:
        raise ValueError(f"span kind {kind!r}; choose from: {', '.join(KINDS)}")
    return {"event": "span", "lane": lane, "name": name, "kind": kind, "start": start, "end": end, "pid": pid}


def send(lane: str, peer: str, nbytes: int, time: float, name: str = "") -> dict:
    """A send row: ``nbytes`` moved from ``lane`` to ``peer`` at ``time``."""
    return {"event": "send", "lane": lane, "peer": peer, "bytes": int(nbytes), "time": time, "name": name}


def worker_lane(worker) -> str:
    """The lane name of worker ``worker`` (an index, or a name an engine gives it)."""
    return f"worker {worker}"


@dataclass
class Trace:
    """What `Session.trace_stop` returns: rows, their instrument, and what they cannot show."""

    rows: list[dict] = field(default_factory=list)
    source: str = "none"
    missing: list[str] = field(default_factory=list)


def lanes_busy(rows: list[dict]) -> dict[str, list[tuple[float, float]]]:
    """``{lane: [(start, end), ...]}``, each lane's spans merged where they overlap, in time order."""
    spans: dict[str, list] = {}
    for row in rows:
        if row["event"] == "span":
            spans.setdefault(row["lane"], []).append((row["start"], row["end"]))
    merged: dict[str, list[tuple[float, float]]] = {}
    for lane, intervals in spans.items():
        out: list[list[float]] = []
        for start, end in sorted(intervals):
            if out and start <= out[-1][1]:
                out[-1][1] = max(out[-1][1], end)
            else:
                out.append([start, end])
        merged[lane] = [(a, b) for a, b in out]
    return merged


def busy_at_once(rows: list[dict], at_least: int = 2, prefix: str = "worker") -> float:
    """Seconds during which at least ``at_least`` lanes named ``prefix ...`` were busy at once."""
    edges = [(t, d) for lane, spans in lanes_busy(rows).items() if lane.startswith(prefix)
             for a, b in spans for t, d in ((a, 1), (b, -1))]
    total, active, last = 0.0, 0, None
    for t, d in sorted(edges):
        if active >= at_least and last is not None:
            total += t - last
        active += d
        last = t
    return total


def moved(rows: list[dict]) -> dict[tuple[str, str], int]:
    """``{(lane, peer): bytes}`` over every send row."""
    out: dict = {}
    for row in rows:
        if row["event"] == "send":
            key = (row["lane"], row["peer"])
            out[key] = out.get(key, 0) + row["bytes"]
    return out


class Stamps:
    """Spans an engine times itself (the baselines' own stamps), kept only while a trace records.

    >>> stamps = Stamps()
    >>> with stamps.span("driver", "a", "compute"): pass      # not recording: nothing kept
    >>> stamps.start()
    >>> with stamps.span("driver", "b", "compute"): pass
    >>> [row["name"] for row in stamps.stop("own stamps").rows]
    ['b']
    """

    def __init__(self):
        self.rows: list[dict] | None = None

    @property
    def recording(self) -> bool:
        return self.rows is not None

    def start(self) -> None:
        self.rows = []

    def add(self, row: dict) -> None:
        if self.rows is not None:
            self.rows.append(row)

    @contextmanager
    def span(self, lane: str, name: str, kind: str):
        if self.rows is None:
            yield
            return
        start = time.time()
        try:
            yield
        finally:
            self.rows.append(span(lane, name, kind, start, time.time(), os.getpid()))

    def stop(self, source: str, missing: list[str] | None = None) -> Trace:
        rows, self.rows = self.rows or [], None
        return Trace(rows, source, list(missing or []))
