"""Fairness: each adapter beside the program its engine's own users would write.

A benchmark's verdicts are only as good as the way each engine was driven.
For every engine × workload that has a **twin** (`harness.twins`: the
hand-written program, on the engine's native API), ``archbench fairness``
runs the adapter's generic translation and the twin **in one process, on
one running cluster, alternately** (adapter, twin, adapter, twin, … after a
warm-up of each), checks both against the workload's reference, and writes:

- ``fairness.jsonl`` -- one row per run: engine, workload, size, workers,
  repeat, ``form`` (``adapter``, ``twin``, or ``stamped``: the twin with
  only the adapter's latency stamp added, `harness.twins.STAMPED`), status,
  ``run_s``;
- ``fairness.json`` and ``fairness.md`` -- per engine × workload the median
  of each form and **adapter ÷ twin** (the median of the pairwise ratios,
  with their min and max): at most `LIMIT` is *fair*; above it, the reason
  the generic translation must cost more (`REASONS`) or *unfair*; and,
  where there is a stamped twin, stamped ÷ twin: the stamp's own cost.

Each cell runs in its own process (``python -m harness.fairness SPEC``),
watched with the matrix's timeout per phase. ``report.md`` embeds the
table when the run folder has one.

    >>> summarise([{"engine": "ray", "workload": "wordcount", "size": "small", "workers": 2, "repeat": r,
    ...             "form": f, "status": "ok", "run_s": t}
    ...            for r, (a, b) in enumerate([(1.0, 0.9), (1.2, 1.0), (1.1, 1.0)])
    ...            for f, t in (("adapter", a), ("twin", b))])[0]["ratio"]
    1.11
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import traceback
from pathlib import Path

LIMIT = 1.15

#: where the generic translation must cost more than the hand-written program, and why
REASONS: dict[tuple[str, str], str] = {
    ("dask", "ping-pong"): (
        "the adapter runs each actor's methods in a thread of the actor's own and restores each sender's "
        "order (Dask delivers every call as an RPC of its own, in any order), because the contract's "
        "methods are plain code that may block or wait on another actor -- on the worker's event loop "
        "they would stall it; every message pays a hop from the event loop to that thread and back. The "
        "twin's methods are coroutines on the event loop, right only because they never block, and its "
        "sends need no order"),
    ("ray", "task-overhead"): (
        "the latency stamp: every task has a second return, a token the driver watches with "
        "ObjectRef.future(), so a task's completion is stamped without pulling its value to the driver "
        "(watching the value itself made chains of large results 1.1-1.3x slower); for tasks that do "
        "nothing that token is a second object per task, and the stamped twin -- the twin with only "
        "that token added -- costs about as much more"),
}


def _pairs(rows: list[dict], form: str = "adapter") -> list[tuple[float, float]]:
    """``(form's time, twin's time)`` per repeat that has both."""
    by_repeat: dict[int, dict] = {}
    for row in rows:
        if row["status"] == "ok":
            by_repeat.setdefault(row["repeat"], {})[row["form"]] = row["run_s"]
    return [(r[form], r["twin"]) for _, r in sorted(by_repeat.items()) if {form, "twin"} <= r.keys()]


def summarise(rows: list[dict]) -> list[dict]:
    """Per engine × workload × size × workers: medians, adapter ÷ twin, and the verdict."""
    cells: dict[tuple, list[dict]] = {}
    for row in rows:
        cells.setdefault((row["engine"], row["workload"], row["size"], row["workers"]), []).append(row)
    out = []
    for (engine, workload, size, workers), group in cells.items():
        pairs = _pairs(group)
        failed = sorted({f"{r['form']}: {r['status']} {r.get('error') or ''}".strip()
                         for r in group if r["status"] != "ok"})
        entry = {"engine": engine, "workload": workload, "size": size, "workers": workers,
                 "repeats": len(pairs), "adapter_s": None, "twin_s": None, "ratio": None,
                 "ratio_min": None, "ratio_max": None, "stamp_ratio": None, "verdict": "failed",
                 "why": "; ".join(failed)}
        stamp = [s / t for s, t in _pairs(group, "stamped")]
        if stamp:
            entry["stamp_ratio"] = round(statistics.median(stamp), 2)
        if pairs:
            ratios = [a / t for a, t in pairs]
            entry.update(adapter_s=statistics.median(a for a, _ in pairs), twin_s=statistics.median(t for _, t in pairs),
                         ratio=round(statistics.median(ratios), 2), ratio_min=round(min(ratios), 2),
                         ratio_max=round(max(ratios), 2))
            reason = REASONS.get((engine, workload))
            entry["verdict"] = "fair" if entry["ratio"] <= LIMIT else ("explained" if reason else "unfair")
            entry["why"] = "; ".join(filter(None, [reason if entry["ratio"] > LIMIT else "", *failed]))
        out.append(entry)
    return out


def table(summary: list[dict]) -> str:
    """``fairness.md``'s table: adapter ÷ twin per engine and workload."""
    lines = [f"| engine | workload | size | adapter (median) | hand-written twin (median) | adapter ÷ twin "
             f"[min–max] | latency stamp alone (stamped twin ÷ twin) | verdict (≤ {LIMIT}) |",
             "|---|---|---|---|---|---|---|---|"]
    for e in summary:
        ratio = f"{e['ratio']:.2f} [{e['ratio_min']:.2f}–{e['ratio_max']:.2f}]" if e["ratio"] is not None else "-"
        seconds = (lambda v: f"{v:.3g} s" if v is not None else "-")  # noqa: E731
        stamp = f"{e['stamp_ratio']:.2f}" if e.get("stamp_ratio") is not None else "-"
        why = f": {e['why']}" if e["why"] else ""
        lines.append(f"| {e['engine']} | {e['workload']} | {e['size']} | {seconds(e['adapter_s'])} | "
                     f"{seconds(e['twin_s'])} | {ratio} | {stamp} | {e['verdict']}{why} |")
    return "\n".join(lines)


def write_summary(out: Path) -> tuple[Path, Path]:
    """``fairness.json`` and ``fairness.md`` from ``fairness.jsonl``; their paths."""
    from harness.results import read_rows

    summary = summarise(read_rows(Path(out) / "fairness.jsonl"))
    (Path(out) / "fairness.json").write_text(json.dumps({"limit": LIMIT, "cells": summary}, indent=2) + "\n")
    text = ("# Fairness: adapters beside hand-written programs\n\n"
            "Each engine's generic adapter and the program an experienced user of that engine writes by hand "
            "(`harness/twins.py`), run alternately in one process on one running cluster, both checked against "
            "the reference. Adapter ÷ twin is the median of the pairwise ratios.\n\n" + table(summary) + "\n")
    (Path(out) / "fairness.md").write_text(text)
    return Path(out) / "fairness.json", Path(out) / "fairness.md"


# ----------------------------------------------------------------- one cell, in its own process


def run_cell(spec: dict) -> int:
    """Warm up both forms, then alternate them ``repeat`` times; append a row per run."""
    from engines import get_engine
    from harness.cell import one_line, phase
    from harness.results import append_row
    from harness.twins import STAMPED, TWINS
    from workloads import get_workload

    out = Path(spec["out"])
    workload, engine = get_workload(spec["workload"]), get_engine(spec["engine"])
    inputs = workload.generate(seed=spec["seed"], **workload.sizes[spec["size"]])
    want = workload.reference(inputs)
    cell = (spec["engine"], spec["workload"])
    forms = {"adapter": workload.run, "twin": TWINS[cell]}
    if cell in STAMPED:
        forms["stamped"] = STAMPED[cell]
    base = {k: spec[k] for k in ("engine", "workload", "size", "workers")}
    phase("start")
    with engine.start(workers=spec["workers"]) as session:
        for form, run in forms.items():
            phase(f"warmup {form}")
            run(session, inputs)
        for r in range(spec["repeat"]):
            for form, run in forms.items():
                phase(f"repeat {r} {form}")
                row = {**base, "repeat": r, "form": form, "status": "ok", "error": None}
                t0 = time.perf_counter()
                try:
                    got = run(session, inputs)
                    row["run_s"] = time.perf_counter() - t0
                    workload.check(got, want)
                except AssertionError as e:
                    row.update(status="wrong", error=str(e)[:500])
                except Exception as e:
                    row.update(status="failed", error=one_line(e), run_s=None)
                    traceback.print_exc()
                append_row(out / "fairness.jsonl", row)
    return 0


def run_fairness(cells: list[tuple[str, str]], size: str, workers: int, repeat: int, timeout: float, out: Path,
                 progress=print) -> list[dict]:
    """Run every (engine, workload) cell in its own process; the summary."""
    from harness.matrix import watch

    out.mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    for i, (engine, workload) in enumerate(cells, 1):
        spec = dict(engine=engine, workload=workload, size=size, workers=workers, repeat=repeat, seed=42, out=str(out))
        log = out / "logs" / f"fairness-{workload}-{size}-{engine}-w{workers}.log"
        how, detail = watch([sys.executable, "-m", "harness.fairness", json.dumps(spec)], log, timeout,
                            lambda phase: None)
        if how == "timeout" or detail != 0:
            from harness.results import append_row

            append_row(out / "fairness.jsonl", {"engine": engine, "workload": workload, "size": size,
                                                "workers": workers, "repeat": -1, "form": "cell", "run_s": None,
                                                "status": "timeout" if how == "timeout" else "failed",
                                                "error": str(detail) if how == "timeout" else f"exit {detail}; see {log.name}"})
        done = [e for e in summarise(_rows(out)) if (e["engine"], e["workload"]) == (engine, workload)]
        ratio = f"adapter ÷ twin {done[0]['ratio']}" if done and done[0]["ratio"] is not None else "no ratio"
        progress(f"[{i}/{len(cells)}] {engine} × {workload} ({size}, {workers} workers): {ratio}"
                 f"{' — ' + done[0]['why'][:120] if done and done[0]['why'] else ''}")
    write_summary(out)
    return summarise(_rows(out))


def _rows(out: Path) -> list[dict]:
    from harness.results import read_rows

    return read_rows(out / "fairness.jsonl")


if __name__ == "__main__":
    from harness.cell import exit_with_parent

    exit_with_parent()
    sys.exit(run_cell(json.loads(sys.argv[1])))
