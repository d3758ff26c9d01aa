"""The same fault on every engine: one worker process killed mid-run (``archbench run --fault``).

Fault tolerance is one of the things the three architectures trade. A
data-parallel engine holds each key's state on one worker and must roll
back and replay (Spark recomputes lost partitions from lineage, Bytewax and
mini-data resume from snapshots); a task-parallel one recomputes a lost
result from its recipe (Dask, mini-tasks); an actor system restarts the
actor with fresh state and fails the calls that were in flight (Ray,
mini-actors). To compare them, each cell runs one more repeat after its
timed ones, and kills one of the engine's worker processes with SIGKILL
when a fraction ``at`` of the cell's median run time has passed: the last
of ``session.fault_targets()``, listed at that moment (an engine puts its
busiest process last: a worker with tasks running, an actor's host). That repeat's row has ``purpose``
``faulted`` -- it never counts toward a timed figure -- and says:

==============  ================================================================
``fault``       what was done: ``kill-worker@0.5``
fault_outcome   ``recovered`` (the right answer), ``failed`` (an error -- the row's
                ``error`` says which), ``hung`` (cut by ``--timeout``), ``wrong``
                (an answer, not the right one), ``missed`` (the run ended before
                the fault was due), ``unsupported`` (no worker process to kill:
                ``error`` says why)
recovery_s      the faulted run's time minus the median unfaulted one (a run that
                returned; a failed one's time to fail is its ``run_s``)
fault_pid       the process killed, and ``fault_target`` what it was
fault_at_s      when, in seconds after the run began
==============  ================================================================

    >>> parse_fault("kill-worker@0.25")
    Fault(kind='kill-worker', at=0.25)
    >>> str(parse_fault("kill-worker"))
    'kill-worker@0.5'
    >>> outcome(ran=True, right=True, hit=True)
    'recovered'
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass

import psutil

from engines.api import ArchbenchError

KINDS = ("kill-worker",)
OUTCOMES = ("recovered", "failed", "hung", "wrong", "missed", "unsupported")
DEFAULT_AT = 0.5
CELL_MARK = "ARCHBENCH_CELL"       # in the environment of a cell and every process it starts


@dataclass(frozen=True)
class Fault:
    """A fault to inject: ``kind`` at fraction ``at`` of a cell's median run time."""

    kind: str
    at: float = DEFAULT_AT

    def __str__(self):
        return f"{self.kind}@{self.at:g}"


def parse_fault(text: str) -> Fault:
    """``kill-worker`` or ``kill-worker@F`` (0 < F < 1, default 0.5); a mistake names what is allowed."""
    kind, _, at = text.partition("@")
    if kind not in KINDS:
        raise ArchbenchError(f"--fault {text!r}: the fault is one of {', '.join(KINDS)}, optionally @F "
                             f"(F between 0 and 1: when, as a fraction of the cell's median run time), "
                             f"e.g. kill-worker@0.3")
    try:
        fraction = float(at) if at else DEFAULT_AT
    except ValueError:
        fraction = -1.0
    if not 0 < fraction < 1:
        raise ArchbenchError(f"--fault {text!r}: F in {kind}@F is a fraction of the median run time, "
                             f"between 0 and 1 (exclusive), e.g. {kind}@0.5")
    return Fault(kind, fraction)


def outcome(*, ran: bool, right: bool, hit: bool) -> str:
    """The fault's outcome from how the run ended: ``ran`` (returned), ``right`` (its answer checked),
    ``hit`` (the fault happened before the run ended)."""
    if not hit:
        return "missed"
    if not ran:
        return "failed"
    return "recovered" if right else "wrong"


class Killer:
    """At ``delay`` seconds from `start`, SIGKILL the last of ``targets()`` -- listed then, not before, so an
    engine that puts its busiest process last (a worker with tasks running, an actor's host) can --
    unless `cancel` comes first."""

    def __init__(self, targets, delay: float):
        self.targets, self.delay = targets, delay
        self.pid: int | None = None
        self.what: str | None = None
        self.killed_at: float | None = None      # seconds after start
        self.found_none = False                   # the listing, when the fault was due, was empty
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault", daemon=True)

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._thread.start()

    def _run(self) -> None:
        if self._cancel.wait(self.delay):
            return
        try:
            found = self.targets()
        except Exception as e:                    # the engine could not say: no fault, and why
            self.what = f"the engine could not list its processes: {type(e).__name__}: {e}"
            return
        if not found:
            self.found_none = True
            return
        self.pid, self.what = found[-1]
        try:
            os.kill(self.pid, signal.SIGKILL)
            self.killed_at = time.perf_counter() - self._t0
        except ProcessLookupError:
            pass                                  # gone already: the fault did not happen

    def cancel(self) -> None:
        """Stop the fault if it has not happened; wait for the thread."""
        self._cancel.set()
        self._thread.join()


def orphans(mark: str) -> list[psutil.Process]:
    """Processes still alive whose environment carries ``ARCHBENCH_CELL=mark``: a cell's leftovers."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.pid != os.getpid() and proc.environ().get(CELL_MARK) == mark \
                    and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found




# ---------------------------------------------------------------- the fault table and its figure

OUTCOME_COLORS = {"recovered": "#2ca02c", "failed": "#d62728", "hung": "#000000", "wrong": "#ff7f0e",
                  "missed": "#9e9e9e", "unsupported": "#dddddd"}


def faulted(rows: list[dict]) -> list[dict]:
    """The faulted repeats among ``rows``."""
    return [r for r in rows if r.get("purpose") == "faulted"]


def lost(row: dict) -> str:
    """What the fault cost a run, in a few words: nothing, or the error's first line."""
    if row.get("fault_outcome") == "recovered":
        return "nothing: the right answer"
    error = (row.get("error") or "").strip()
    return error.splitlines()[0][:160] if error else "-"


def signed_seconds(value) -> str:
    """``+0.229 s``, ``-0.0012 s``; '-' for None.

    >>> signed_seconds(0.2291), signed_seconds(-0.00123), signed_seconds(None)
    ('+0.229 s', '-0.00123 s', '-')
    """
    return "-" if value is None else f"{value:+.3g} s"


def fault_section(rows: list[dict], out=None) -> list[str]:
    """The report's *Faults* section: one row per cell with a faulted repeat, and what each cell left
    running (``out/orphans.jsonl``). Empty without a faulted repeat."""
    from pathlib import Path

    from harness.results import cell_key, fmt_seconds, read_rows

    left = {cell_key(o): len(o["pids"]) for o in read_rows(Path(out) / "orphans.jsonl")} if out else {}

    rows = faulted(rows)
    if not rows:
        return []
    lines = ["## Faults", "",
             f"One more repeat per cell, after the timed ones (`--fault {rows[0].get('fault') or 'kill-worker'}`): "
             "one worker process of the engine killed with SIGKILL part-way through the run. *Recovery* is "
             "the faulted run's time minus the median unfaulted one; a faulted repeat never counts toward "
             "a timed figure.", ""]
    if any(r.get("fault_outcome") != "unsupported" for r in rows):
        lines += ["![recovery.png](recovery.png)", ""]
    lines += ["| workload | size | engine | workers | killed | at | outcome | run | recovery | lost | left running |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["workload"], r["size"], r["engine"], r["workers"])):
        killed = f"{r['fault_target']} (pid {r['fault_pid']})" if r.get("fault_pid") else "-"
        lines.append(f"| {r['workload']} | {r['size']} | {r['engine']} | {r['workers']} | {killed} | "
                     f"{fmt_seconds(r.get('fault_at_s'))} | **{r.get('fault_outcome') or '-'}** | "
                     f"{fmt_seconds(r.get('run_s'))} | {signed_seconds(r.get('recovery_s'))} | {lost(r)} | "
                     f"{left.get(cell_key(r), 0)} |")
    return lines + [""]


def plot_recovery(rows: list[dict], path) -> object | None:
    """``recovery.png``: per workload, each engine's faulted run (its outcome as the colour) beside a tick
    at its median unfaulted run -- the gap is the recovery. None without a fault to show."""
    from harness.drawing import grid
    from harness.results import cell_key, cells, median_of, timed

    medians = {key: median_of(group, "run_s") for key, group in cells(timed(rows)).items()}
    shown = [r for r in faulted(rows) if r.get("fault_outcome") not in (None, "unsupported")]
    panels: dict[tuple, list[dict]] = {}
    for r in shown:
        panels.setdefault((r["workload"], r["size"]), []).append(r)
    if not panels:
        return None
    plt, fig, axes = grid(len(panels))
    for ax, ((workload, size), group) in zip(axes, panels.items()):
        group.sort(key=lambda r: (r["engine"], r["workers"]))
        top = max([r.get("run_s") or 0.0 for r in group] + [medians.get(cell_key(r)) or 0.0 for r in group]) or 1.0
        crowded = len(group) > 5          # labels side by side would overlap: stand them up, one line each
        for i, r in enumerate(group):
            hung = r.get("run_s") is None
            height = 1.15 * top if hung else r["run_s"]
            ax.bar(i, height, color=OUTCOME_COLORS[r["fault_outcome"]], edgecolor="#333333", linewidth=0.6,
                   hatch="//" if hung else None, alpha=0.85)
            median = medians.get(cell_key(r))
            if median is not None:
                ax.hlines(median, i - 0.42, i + 0.42, color="#000000", linewidth=2)
            note = r["fault_outcome"] + ((" " if crowded else "\n") + signed_seconds(r["recovery_s"])
                                         if r.get("recovery_s") is not None else "")
            ax.annotate(note, (i, max(height, median or 0.0)), xytext=(0, 2), textcoords="offset points",
                        ha="center", va="bottom", fontsize=7, rotation=90 if crowded else 0)
        ax.set_ylim(0, (1.9 if crowded else 1.35) * top)
        ax.set_xticks(range(len(group)), [f"{r['engine']} {r['workers']}w" for r in group], fontsize=7,
                      rotation=40, ha="right")
        ax.set_ylabel("run time with the fault (s)", fontsize=8)
        ax.set_title(f"{workload} ({size})", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color=OUTCOME_COLORS[o]) for o in OUTCOME_COLORS if o != "unsupported"]
    handles.append(plt.Line2D([0], [0], color="#000000", linewidth=2))
    fig.legend(handles, [o for o in OUTCOME_COLORS if o != "unsupported"] + ["median run without a fault"],
               loc="lower center", ncol=len(handles), fontsize=8)
    fig.suptitle("One worker killed mid-run: what each engine did, and what it cost (hung: cut by the timeout)",
                 fontsize=11)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
