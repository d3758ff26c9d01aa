"""One cell of the matrix, in its own process: ``python -m harness.cell SPEC_JSON``.

A cell is one engine × workload × size × worker count. It runs in a fresh
process so that a crash, a hang or a leaked thread in one engine can never
touch the next cell (polars-benchmark runs every case this way). The phases
are timed apart, and the check is never inside a timed region::

    load     generate the inputs; compute (or reuse) the reference answer
    start    engine.start(workers)                   -> startup_s
    warm-up  run, not recorded
    repeat   run                                     -> run_s, latency, memory, CPU
             check against the reference             -> check_s, ok | wrong
    trace    (--trace) one more run, traced by the engine's own instruments and never part of
             a timed figure                          -> traces/<cell>.json, a row of purpose "traced"
    fault    (--fault) one more run with a worker process killed part-way (`harness.faults`)
                                                     -> a row of purpose "faulted"

``run`` is ``workload.runner(engine)``: the workload's ``run``, or its
columnar form ``run_columnar`` on a columnar variant such as spark-df.

Each repeat appends its row to ``results.jsonl`` as soon as it is checked;
a started engine's settings (what it found: an existing cluster's size,
its log and temporary directories) go to ``sessions.jsonl``.
The cell tells the parent which phase it is in by printing ``PHASE <name>``
lines on stdout; the parent gives each phase ``--timeout`` seconds.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import threading
import time
import traceback
from pathlib import Path

import cloudpickle
import psutil

from engines import get_engine
from harness.measure import TreeSampler, percentiles
from harness.results import append_row, new_row
from workloads import get_workload, load_workload_file


def phase(name: str) -> None:
    print(f"PHASE {name}", flush=True)


def one_line(error: BaseException) -> str:
    """``Type: first line of the message`` -- the row's error field."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:500]


def reference(workload, inputs, cache: Path):
    """The reference answer, computed once per workload × size × seed in a run folder."""
    if cache.exists():
        return pickle.loads(cache.read_bytes())
    want = workload.reference(inputs)
    try:  # by reference: a user's classes must come back as *their* classes, or equality fails
        data = pickle.dumps(want, protocol=5)
    except (pickle.PicklingError, AttributeError, TypeError):
        data = cloudpickle.dumps(want, protocol=5)   # lambdas and the like: by value
    tmp = cache.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(cache)
    return want


def run_cell(spec: dict) -> int:
    """Run the repeats listed in ``spec``; append a row for each. Returns an exit code."""
    out = Path(spec["out"])
    results = out / "results.jsonl"
    for path in spec.get("workload_files", []):
        load_workload_file(path)
    workload = get_workload(spec["workload"])
    engine = get_engine(spec["engine"])
    base = {k: spec[k] for k in ("run_id", "engine", "workload", "size", "workers", "seed")}
    base.update(model=workload.model, unit=workload.unit, architecture=engine.architecture)
    run = workload.runner(engine)

    phase("load")
    t0 = time.perf_counter()
    inputs = workload.generate(seed=spec["seed"], **workload.sizes[spec["size"]])
    load_s = time.perf_counter() - t0
    units = workload.units(inputs)
    cache = out / "references" / f"{spec['workload']}-{spec['size']}-{spec['seed']}.pickle"
    cache.parent.mkdir(exist_ok=True)
    want = reference(workload, inputs, cache)

    with TreeSampler() as sampler:
        phase("start")
        t0 = time.perf_counter()
        try:
            session = engine.start(workers=spec["workers"], **spec.get("options", {}))
        except Exception as e:
            traceback.print_exc()
            for r in spec["repeats"]:
                append_row(results, new_row(**base, repeat=r, status="failed", load_s=load_s,
                                            error=f"engine did not start: {one_line(e)}"))
            return 1
        startup_s = time.perf_counter() - t0
        # what the engine found when it started (a cluster's real size, its directories): beside the manifest
        append_row(out / "sessions.jsonl", {**base, "startup_s": startup_s, "settings": session.settings})
        with session:
            for i in range(spec.get("warmup", 0)):
                phase(f"warmup {i + 1}")
                try:
                    run(session, inputs)
                except Exception:
                    traceback.print_exc()  # the repeats will fail the same way and say so
                    break
            for r in spec["repeats"]:
                phase(f"repeat {r}")
                row = new_row(**base, repeat=r, startup_s=startup_s, load_s=load_s, units=units)
                session.latencies.clear()
                session.window_latencies.clear()
                sampler.reset()
                t0 = time.perf_counter()
                try:
                    got = run(session, inputs)
                    row["run_s"] = time.perf_counter() - t0
                    row["status"] = "ok"
                except Exception as e:
                    row["run_s"] = time.perf_counter() - t0
                    row["error"] = one_line(e)
                    traceback.print_exc()
                row["cpu_s"] = sampler.cpu_seconds()
                row["peak_rss_bytes"] = sampler.peak_rss()
                if workload.model == "dataflow":  # a stream's windows, else the job itself
                    samples = list(session.window_latencies.samples) or [row["run_s"]]
                else:
                    samples = list(session.latencies.samples)
                row.update(percentiles(samples))
                keep_samples(out, base, r, samples)
                if row["status"] == "ok":
                    row["throughput"] = units / row["run_s"] if row["run_s"] > 0 else None
                    t0 = time.perf_counter()
                    try:
                        workload.check(got, want)
                    except AssertionError as e:  # WrongResult, or a workload's own assert
                        row.update(status="wrong", error=f"result differs from the reference: {e}"[:2000])
                        print(f"WRONG result in repeat {r}:\n{e}", file=sys.stderr)
                    except Exception as e:
                        row.update(status="failed", error=f"check raised {one_line(e)}")
                        traceback.print_exc()
                    row["check_s"] = time.perf_counter() - t0
                    del got
                append_row(results, row)
            if spec.get("trace"):
                phase("trace")
                append_row(results, traced_repeat(spec, base, session, run, inputs, want, workload, units))
            if spec.get("fault"):
                phase("fault")
                append_row(results, faulted_repeat(spec, base, session, run, inputs, want, workload, units))
    return 0


def median_run(spec: dict, base: dict) -> float | None:
    """The median run time of this cell's ok timed repeats (from the rows written), None without one."""
    from harness.results import read_rows, timed

    mine = sorted(r["run_s"] for r in timed(read_rows(Path(spec["out"])))
                  if r["status"] == "ok" and (r["engine"], r["workload"], r["size"], r["workers"]) ==
                  (base["engine"], base["workload"], base["size"], base["workers"]))
    return mine[len(mine) // 2] if mine else None


def faulted_repeat(spec: dict, base: dict, session, run, inputs, want, workload, units: int) -> dict:
    """One more run, with the last of the engine's fault targets killed part-way (`harness.faults`)."""
    from harness.faults import Killer, outcome, parse_fault

    fault = parse_fault(spec["fault"])
    row = new_row(**base, repeat=spec["fault_repeat"], purpose="faulted", units=units, fault=str(fault))
    targets = session.targets_per_run or session.fault_targets()
    median = median_run(spec, base)
    if not targets or median is None:
        why = session.fault_reason() if not targets else "no timed repeat of this cell succeeded: no time to aim at"
        row.update(status="unsupported", fault_outcome="unsupported", error=why)
        return row
    killer = Killer(session.fault_targets, fault.at * median)
    got, ran = None, False
    killer.start()
    t0 = time.perf_counter()
    try:
        got = run(session, inputs)
        ran = True
    except Exception as e:
        row["error"] = one_line(e)
        traceback.print_exc()
    row["run_s"] = time.perf_counter() - t0
    killer.cancel()
    row.update(fault_at_s=killer.killed_at, fault_pid=killer.pid, fault_target=killer.what)
    if killer.found_none:      # the run's worker processes were listed when the fault was due: there were none
        row.update(status="unsupported", fault_outcome="unsupported", error=session.fault_reason())
        return row
    right = False
    if ran:
        try:
            workload.check(got, want)
            right = True
        except AssertionError as e:
            row["error"] = f"result differs from the reference: {e}"[:2000]
    row["fault_outcome"] = outcome(ran=ran, right=right, hit=killer.killed_at is not None)
    row["status"] = {"recovered": "ok", "wrong": "wrong", "missed": "ok"}.get(row["fault_outcome"], "failed")
    if ran:                                   # what recovering cost (a failed run's time is its run_s)
        row["recovery_s"] = row["run_s"] - median
    print(f"FAULT {fault} on {killer.what} (pid {killer.pid}) at {killer.killed_at}: {row['fault_outcome']}",
          file=sys.stderr)
    return row


def traced_repeat(spec: dict, base: dict, session, run, inputs, want, workload, units: int) -> dict:
    """One more run, recorded by the engine's own instruments and never timed: its row and trace file.

    The row says what tracing cost (``trace_overhead``: this run's time over the median of the
    timed repeats) and how the workers spent their time (``busy_fraction``, ``time_shares``).
    """
    from harness.traces import trace_name, utilisation, write_trace

    row = new_row(**base, repeat=spec["trace_repeat"], purpose="traced", units=units)
    t_wall = time.time()
    t0 = time.perf_counter()
    session.trace_start()
    try:
        got = run(session, inputs)
        row["status"] = "ok"
    except Exception as e:
        got, row["error"] = None, one_line(e)
        traceback.print_exc()
    finally:
        row["run_s"] = time.perf_counter() - t0
        trace = session.trace_stop()
    if row["status"] == "ok":
        try:
            workload.check(got, want)
        except AssertionError as e:
            row.update(status="wrong", error=f"result differs from the reference: {e}"[:2000])
    median = median_run(spec, base)
    if median:
        row["trace_overhead"] = row["run_s"] / median
    name = trace_name(base["workload"], base["size"], base["engine"], base["workers"])
    meta = {k: base[k] for k in ("engine", "architecture", "workload", "size", "workers")}
    meta.update(source=trace.source, missing=trace.missing, run_s=row["run_s"], status=row["status"])
    write_trace(Path(spec["out"]) / "traces" / name, trace.rows, meta, start=t_wall)
    use = utilisation(trace.rows, t_wall, t_wall + row["run_s"])
    row.update(trace_file=f"traces/{name}", busy_fraction=use["busy"], time_shares=use["shares"])
    return row


def keep_samples(out: Path, base: dict, repeat: int, samples: list[float]) -> None:
    """Append one repeat's latency samples to ``latencies/<cell>.jsonl`` (the latency CDF reads them)."""
    folder = out / "latencies"
    folder.mkdir(exist_ok=True)
    name = f"{base['workload']}-{base['size']}-{base['engine']}-w{base['workers']}.jsonl"
    append_row(folder / name, {"repeat": repeat, "samples": [float(f"{x:.6g}") for x in samples]})


def exit_with_parent() -> None:
    """If the matrix runner dies (even by SIGKILL), end this cell and its engine's processes:
    an orphaned cell would go on appending rows that a resumed run writes again."""
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        for child in psutil.Process().children(recursive=True):
            try:
                child.kill()
            except psutil.Error:
                pass
        os._exit(70)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    exit_with_parent()
    return run_cell(json.loads(argv[0]))


if __name__ == "__main__":
    sys.exit(main())
