"""Running the matrix: every cell in its own process, every repeat a durable row.

The matrix is workload × engine × size × workers. For each cell the parent
decides whether it can run at all (an unavailable engine, an unsupported
model, or a workload without a columnar form on a columnar variant is
recorded with its reason, without starting anything), then starts
``python -m harness.cell`` in a new process group and watches it:

- the cell announces each phase (``PHASE repeat 2``); each phase may take
  ``timeout`` seconds, after which the whole process tree is killed and the
  missing repeats are recorded as ``timeout``;
- a cell that exits without writing a repeat's row (a crash, a segfault, an
  out-of-memory kill) gets a ``failed`` row naming the last line it printed;
- rows already in ``results.jsonl`` are never run again (``--resume``).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from engines import get_engine
from engines.common import kill_all
from harness.faults import CELL_MARK, orphans
from harness.results import append_row, cell_key, new_row, read_rows, timed
from workloads import get_workload


FULL_MATRIX = "archbench run --workloads all --size medium"   # what the quick matrix leaves out, as a command


@dataclass(frozen=True)
class Matrix:
    engines: list[str]
    workloads: list[str]
    sizes: list[str]
    workers: list[int]
    repeat: int = 3
    warmup: int = 1
    timeout: float = 120.0
    seed: int = 42
    workload_files: list[str] = field(default_factory=list)
    options: dict[str, dict] = field(default_factory=dict)   # engine -> start() options
    quick: bool = False      # the quick matrix (`archbench run` with no --workloads): a first look
    trace: bool = False      # one more, untimed, traced repeat per cell (--trace)
    fault: str | None = None # one more repeat per cell with a worker killed part-way (--fault, harness.faults)

    def cells(self) -> list[tuple[str, str, str, int]]:
        """(engine, workload, size, workers), grouped by workload so one workload's engines sit together."""
        return [(e, w, s, n) for w in self.workloads for s in self.sizes for e in self.engines for n in self.workers]

    def as_dict(self) -> dict:
        return asdict(self)


class Progress:
    """Cells done of the total, the current cell and phase, elapsed time.

    On a terminal one status line is redrawn in place; otherwise (CI, a
    pipe) one plain line is printed per finished cell.
    """

    def __init__(self, total: int, stream=sys.stderr):
        self.total, self.done, self.stream = total, 0, stream
        self.live = stream.isatty()
        self.t0 = time.monotonic()
        self.cell = ""

    def _elapsed(self) -> str:
        s = int(time.monotonic() - self.t0)
        return f"{s // 60:d}:{s % 60:02d}"

    def start(self, cell: tuple) -> None:
        engine, workload, size, workers = cell
        self.cell = f"{engine} × {workload} ({size}, {workers} worker{'s' if workers > 1 else ''})"
        self.phase("queued")

    def phase(self, name: str) -> None:
        if self.live:
            line = f"[{self.done}/{self.total}] {self._elapsed()}  {self.cell}: {name}"
            self.stream.write("\r\033[K" + line[:150])
            self.stream.flush()

    def finish(self, rows: list[dict]) -> None:
        self.done += 1
        counts: dict[str, int] = {}
        for row in timed(rows):
            counts[row["status"]] = counts.get(row["status"], 0) + 1
        traced = [r["status"] for r in rows if r.get("purpose") == "traced"]
        faulted = [r["fault_outcome"] for r in rows if r.get("purpose") == "faulted"]
        status = ", ".join(f"{n} {s}" for s, n in counts.items()) or ("" if traced or faulted else "nothing to do")
        status += f"{', ' if status else ''}traced {traced[0]}" if traced else ""
        status += f"{', ' if status else ''}fault: {faulted[0]}" if faulted else ""
        runs = [r["run_s"] for r in timed(rows) if r["status"] == "ok" and r["run_s"] is not None]
        timing = f", run {statistics.median(runs):.3g} s (median)" if runs else ""
        reason = next((r["error"] for r in rows if r["status"] != "ok" and r.get("error")
                       and r.get("purpose") != "faulted"), "")
        why = f" — {reason[:110]}" if reason else ""
        prefix = "\r\033[K" if self.live else ""
        self.stream.write(f"{prefix}[{self.done}/{self.total}] {self._elapsed()}  {self.cell}: {status}{timing}{why}\n")
        self.stream.flush()


def kill_tree(pid: int) -> None:
    """Kill a process, its process group and every descendant (some engines start their own groups)."""
    try:
        victims = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        victims = []
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    kill_all(victims)


def watch(cmd: list[str], log_path: Path, timeout: float, on_phase, mark: str = "") -> tuple[str, str | int]:
    """Run ``cmd``, giving each announced phase ``timeout`` seconds; ``mark`` goes in its environment
    (and so in every process it starts) as ``ARCHBENCH_CELL``, to find what outlives it.

    Returns ``("exit", returncode)`` or ``("timeout", message)``.
    """
    with open(log_path, "a", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True,
                                start_new_session=True, bufsize=1, env={**os.environ, CELL_MARK: mark})
        lines: queue.Queue = queue.Queue()

        def read():
            for line in proc.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=read, daemon=True).start()
        current, deadline = "start-up", time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                try:
                    line = lines.get(timeout=max(0.0, min(1.0, left)))
                except queue.Empty:
                    if left > 1.0:
                        on_phase(current)  # once a second: the elapsed time moves on
                        continue
                    kill_tree(proc.pid)
                    proc.wait()
                    return "timeout", f"{current} still running after {timeout:g} s (--timeout)"
                if line is None:
                    break
                if line.startswith("PHASE "):
                    current, deadline = line[6:].strip(), time.monotonic() + timeout
                    on_phase(current)
                else:
                    log.write(line)
            return "exit", proc.wait()
        except BaseException:  # Ctrl-C: leave nothing running behind
            kill_tree(proc.pid)
            proc.wait()
            raise


def last_line(path: Path) -> str:
    """The last non-empty line a cell printed: usually the error."""
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def run_matrix(matrix: Matrix, out: Path, run_id: str, progress: Progress | None = None) -> list[dict]:
    """Run every cell not yet finished in ``out``; every row of the run when done."""
    out = Path(out)
    results = out / "results.jsonl"
    (out / "logs").mkdir(parents=True, exist_ok=True)
    cells = matrix.cells()
    progress = progress or Progress(len(cells))
    done: dict[tuple, set[int]] = {}
    for row in read_rows(results):
        done.setdefault(cell_key(row), set()).add(int(row["repeat"]))

    for cell in cells:
        engine_name, workload_name, size, workers = cell
        progress.start(cell)
        todo = [r for r in range(matrix.repeat) if r not in done.get(cell, set())]
        trace = matrix.trace and matrix.repeat not in done.get(cell, set())   # the traced repeat comes next
        fault = bool(matrix.fault) and fault_repeat(matrix) not in done.get(cell, set())   # the faulted one last
        if not todo and not trace and not fault:
            progress.finish([])
            continue
        engine, workload = get_engine(engine_name), get_workload(workload_name)
        base = dict(run_id=run_id, engine=engine_name, architecture=engine.architecture, model=workload.model,
                    workload=workload_name, size=size, workers=workers, seed=matrix.seed, unit=workload.unit)
        available, why = engine.available()
        support = workload.support_on(engine)
        if not available:
            status, reason = "unavailable", why
        elif not support.runs:
            status, reason = "unsupported", support.why
        else:
            status = None
        if status:
            rows = [new_row(**base, repeat=r, status=status, error=reason) for r in todo]
        else:
            rows = run_one(matrix, cell, todo, trace, fault, base, out, run_id, progress)
        for row in rows:
            append_row(results, row)
        wanted = set(todo) | ({matrix.repeat} if trace and not status else set()) \
            | ({fault_repeat(matrix)} if fault and not status else set())
        written = [r for r in read_rows(results) if cell_key(r) == cell and int(r["repeat"]) in wanted]
        progress.finish(written)
    return read_rows(results)


def fault_repeat(matrix: Matrix) -> int:
    """The repeat number of a cell's faulted repeat: after the timed ones and the traced one."""
    return matrix.repeat + 1


def run_one(matrix: Matrix, cell: tuple, todo: list[int], trace: bool, fault: bool, base: dict, out: Path,
            run_id: str, progress: Progress) -> list[dict]:
    """Run one cell's repeats in a subprocess; the rows the parent must add (for repeats it did not record).

    After a faulted cell, no process it started may be left: any found is killed, and named in
    ``orphans.jsonl``."""
    engine_name, workload_name, size, workers = cell
    log = out / "logs" / f"{workload_name}-{size}-{engine_name}-w{workers}.log"
    options = dict(matrix.options.get(engine_name, {}))
    options.setdefault("log_dir", str(out / "logs"))
    if trace:   # an instrument that must be on from the engine's start (Spark's event log)
        options = {**get_engine(engine_name).trace_options, **options}
    if fault:   # recovery that must be on from the engine's start (Bytewax's recovery store)
        options = {**get_engine(engine_name).fault_options, **options}
    spec = dict(run_id=run_id, engine=engine_name, workload=workload_name, size=size, workers=workers,
                seed=matrix.seed, repeats=todo, warmup=matrix.warmup, out=str(out), trace=trace,
                trace_repeat=matrix.repeat, fault=matrix.fault if fault else None, fault_repeat=fault_repeat(matrix),
                workload_files=matrix.workload_files, options=options)
    mark = f"{run_id}:{engine_name}:{workload_name}:{size}:{workers}:{os.getpid()}"
    how, detail = watch([sys.executable, "-m", "harness.cell", json.dumps(spec)], log, matrix.timeout,
                        progress.phase, mark)
    if fault:
        left = orphans(mark)
        if left:
            append_row(out / "orphans.jsonl", {**base, "pids": [p.pid for p in left],
                                               "names": [_name(p) for p in left]})
            kill_all(left)
    recorded = {int(r["repeat"]) for r in read_rows(out / "results.jsonl") if cell_key(r) == cell}
    missing = [(r, "timed", {}) for r in todo if r not in recorded]
    if trace and matrix.repeat not in recorded:
        missing.append((matrix.repeat, "traced", {}))
    if fault and fault_repeat(matrix) not in recorded:
        outcome = "hung" if how == "timeout" else "failed"
        missing.append((fault_repeat(matrix), "faulted", {"fault": matrix.fault, "fault_outcome": outcome}))
    if how == "timeout":
        return [new_row(**base, repeat=r, purpose=p, status="timeout", error=str(detail), **extra)
                for r, p, extra in missing]
    reason = last_line(log) or "no output"
    return [new_row(**base, repeat=r, purpose=p, status="failed",
                    error=f"cell exited with code {detail} before recording this repeat: {reason} "
                          f"(see logs/{log.name})", **extra) for r, p, extra in missing]


def _name(proc) -> str:
    try:
        return " ".join(proc.cmdline())[:200] or proc.name()
    except psutil.Error:
        return "?"
