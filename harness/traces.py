"""Trace files: an engine's trace rows as Chrome Trace Event JSON, and what they say.

Engines hand back plain rows (`engines.tracing`); this module alone writes
them as the JSON that Perfetto (ui.perfetto.dev) and ``chrome://tracing``
open, and reads them back for the timelines (`harness.timeline`)::

    {"traceEvents": [
        {"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "worker 0 (pid 4242)"}},
        {"ph": "M", "name": "thread_name", "pid": 1, "tid": 1, "args": {"name": "worker 0"}},
        {"ph": "X", "name": "split count_2", "cat": "compute", "ts": 1200.0, "dur": 5300.0, "pid": 1, "tid": 1},
        {"ph": "s", "name": "48213 B", "cat": "exchange", "id": 7, "ts": 6500.0, "pid": 1, "tid": 1,
         "args": {"bytes": 48213}},
        {"ph": "f", "bp": "e", "name": "48213 B", "cat": "exchange", "id": 7, "ts": 6500.0, "pid": 2, "tid": 2,
         "args": {"bytes": 48213}}],
     "displayTimeUnit": "ms",
     "otherData": {"engine": "mini-data", "source": "mini trace ...", "missing": [], "run_start": ..., ...}}

``ts`` and ``dur`` are microseconds since the traced run began. A lane is a
Chrome thread (``tid``); lanes whose spans name one OS process share its
``pid``, the driver's lanes (``driver``, ``scheduler``) share pid 0.

`utilisation` answers the question a report quotes: what share of the
workers' time went to compute, exchange, scheduling, messages, and idling.

    >>> from engines.tracing import span
    >>> rows = [span("worker 0", "a", "compute", 10.0, 11.0), span("worker 1", "b", "exchange", 10.5, 11.0)]
    >>> u = utilisation(rows, 10.0, 12.0)
    >>> u["busy"], u["shares"]["compute"], u["shares"]["idle"]
    ({'worker 0': 0.5, 'worker 1': 0.25}, 0.25, 0.625)
"""

from __future__ import annotations

import json
from pathlib import Path

from engines.tracing import KINDS, lanes_busy

DRIVER_LANES = ("driver", "scheduler")


def trace_name(workload: str, size: str, engine: str, workers: int) -> str:
    """The file name of one cell's trace, in the run folder's ``traces/``."""
    return f"{workload}-{size}-{engine}-w{workers}.json"


def _lane_order(lane: str) -> tuple:
    if lane in DRIVER_LANES:
        return (0, DRIVER_LANES.index(lane), "")
    head, _, tail = lane.partition(" ")
    return (1, int(tail) if tail.isdigit() else 1 << 30, lane)


def chrome_trace(rows: list[dict], meta: dict, start: float) -> dict:
    """The Chrome Trace Event object of ``rows``; times relative to ``start`` (the run's beginning)."""
    lanes = sorted({r["lane"] for r in rows} | {r["peer"] for r in rows if r["event"] == "send"} | {"driver"},
                   key=_lane_order)
    os_pid: dict[str, int] = {}
    for row in rows:
        if row["event"] == "span" and row.get("pid") and row["lane"] not in DRIVER_LANES:
            os_pid.setdefault(row["lane"], row["pid"])
    process: dict[str, int] = {}   # lane -> Chrome pid: the driver's lanes 0, lanes of one OS process one pid
    names: dict[int, str] = {0: "driver"}
    by_process: dict = {}
    for lane in lanes:
        if lane in DRIVER_LANES:
            process[lane] = 0
            continue
        key = os_pid.get(lane, lane)
        if key not in by_process:
            by_process[key] = len(names)
            names[by_process[key]] = f"process {key}" if lane in os_pid else lane
        process[lane] = by_process[key]
    tid = {lane: i for i, lane in enumerate(lanes)}
    us = lambda t: round((t - start) * 1e6, 1)  # noqa: E731
    events: list[dict] = [{"ph": "M", "name": "process_name", "pid": p, "args": {"name": n}} for p, n in names.items()]
    for lane in lanes:
        events.append({"ph": "M", "name": "thread_name", "pid": process[lane], "tid": tid[lane], "args": {"name": lane}})
        events.append({"ph": "M", "name": "thread_sort_index", "pid": process[lane], "tid": tid[lane],
                       "args": {"sort_index": tid[lane]}})
    flow = 0
    for row in rows:
        if row["event"] == "span":
            events.append({"ph": "X", "name": row["name"], "cat": row["kind"], "ts": us(row["start"]),
                           "dur": round((row["end"] - row["start"]) * 1e6, 1), "pid": process[row["lane"]],
                           "tid": tid[row["lane"]]})
        else:
            flow += 1
            common = {"name": f"{row['bytes']} B", "cat": "exchange", "id": flow, "ts": us(row["time"]),
                      "args": {"bytes": row["bytes"], "step": row.get("name", "")}}
            events.append({"ph": "s", **common, "pid": process[row["lane"]], "tid": tid[row["lane"]]})
            events.append({"ph": "f", "bp": "e", **common, "pid": process[row["peer"]], "tid": tid[row["peer"]]})
    return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": {**meta, "run_start": start}}


def write_trace(path: Path, rows: list[dict], meta: dict, start: float) -> Path:
    """Write ``rows`` as a Chrome trace file (atomically); its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(chrome_trace(rows, meta, start), separators=(",", ":")), encoding="utf-8")
    tmp.replace(path)
    return path


def read_trace(path: Path) -> dict:
    """A trace file as ``{"lanes": [names], "spans": [(lane, start_s, end_s, kind, name)],
    "flows": [(from_lane, to_lane, t_s, bytes)], "meta": {...}}``, times in seconds since the run began."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    lane_of, order = {}, {}
    for e in data["traceEvents"]:
        if e["ph"] == "M" and e["name"] == "thread_name":
            lane_of[(e["pid"], e["tid"])] = e["args"]["name"]
            order[e["args"]["name"]] = e["tid"]
    spans, starts, flows = [], {}, []
    for e in data["traceEvents"]:
        where = lane_of.get((e.get("pid"), e.get("tid")))
        if e["ph"] == "X":
            spans.append((where, e["ts"] / 1e6, (e["ts"] + e["dur"]) / 1e6, e.get("cat", "compute"), e["name"]))
        elif e["ph"] == "s":
            starts[e["id"]] = (where, e["ts"] / 1e6, e["args"]["bytes"])
        elif e["ph"] == "f" and e["id"] in starts:
            source, t, nbytes = starts.pop(e["id"])
            flows.append((source, where, t, nbytes))
    return {"lanes": sorted(order, key=order.get), "spans": spans, "flows": flows, "meta": data.get("otherData", {})}


def utilisation(rows: list[dict], start: float, end: float) -> dict:
    """Each worker lane's busy fraction of ``[start, end]``, and the share of all worker-lane time per kind.

    ``{"busy": {lane: fraction}, "shares": {kind: share, ..., "idle": share}}``: shares add up to 1;
    time a lane spent in two kinds at once counts once, for the kind that came first. Lanes are
    the ``worker`` lanes (every lane, where an engine names none so).
    """
    window = max(end - start, 1e-9)
    spans = [r for r in rows if r["event"] == "span"]
    workers = sorted({r["lane"] for r in spans if r["lane"].startswith("worker")}, key=_lane_order) \
        or sorted({r["lane"] for r in spans}, key=_lane_order)
    merged = lanes_busy([r for r in spans if r["lane"] in workers])
    busy = {lane: round(sum(min(b, end) - max(a, start) for a, b in merged.get(lane, []) if b > start and a < end)
                        / window, 4) for lane in workers}
    per_kind = dict.fromkeys(KINDS, 0.0)
    for lane in workers:
        covered = 0.0   # time already given to a kind on this lane, as a sweep over its spans by start
        for row in sorted((r for r in spans if r["lane"] == lane), key=lambda r: r["start"]):
            a, b = max(row["start"], start, covered), min(row["end"], end)
            if b > a:
                per_kind[row["kind"]] += b - a
                covered = b
    total = window * max(len(workers), 1)
    shares = {kind: round(t / total, 4) for kind, t in per_kind.items()}
    shares["idle"] = round(max(0.0, 1.0 - sum(per_kind.values()) / total), 4)
    return {"busy": busy, "shares": shares}
