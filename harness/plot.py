"""Figures from a results folder, one fixed colour per engine.

``throughput.png``: per workload and size, the median throughput of each
engine × worker count (bars, min–max whiskers, log scale); cells that did
not pass are marked with their status instead of a bar, a wrong one in red.
A dashed line marks serial × N for each worker count N > 1 (`serial_ceilings`):
what N workers would reach running the serial engine's Python with nothing
lost, so the gap under it is what an engine spends on being parallel (or,
for a chain of dependent steps, the work not splitting: an upper bound, not a
target). A workload whose serial run mostly waited (a stream paced by its
source) has no line.
``latency.png``: per workload and size, the p50 / p90 / p99 latency of each
engine (medians over repeats, log scale). The figures a decision rests on
(scaling, growth, the latency CDF, phases) are `harness.evidence`'s.
"""

from __future__ import annotations

from pathlib import Path

from engines.api import ArchbenchError
from harness.drawing import color, grid
from harness.results import cells, median_of, read_rows, timed

def _panels(rows):
    """{(workload, size): [(engine, workers, rows of the cell)]}."""
    panels: dict[tuple, list] = {}
    for (engine, workload, size, workers), group in cells(rows).items():
        panels.setdefault((workload, size), []).append((engine, workers, group))
    return panels


#: below this share of its run on a CPU, serial was waiting (a stream's paced source, a sleep),
#: and N workers would not wait less: no serial × N line
BUSY = 0.8


def serial_ceilings(entries) -> dict[int, float]:
    """{N: serial throughput × N} for the worker counts N > 1 of a panel's ``entries``
    (``(engine, workers, rows)``), from the serial engine's median at N, else at any count
    (serial ignores workers); {} when no serial cell passed, or serial was busy less than
    `BUSY` of its run (median ``cpu_s`` ÷ median ``run_s``).

    >>> ok = lambda rate, cpu=1.0: [{"status": "ok", "throughput": rate, "run_s": 1.0, "cpu_s": cpu}]
    >>> serial_ceilings([("serial", 1, ok(100.0)), ("mini-data", 2, ok(180.0)), ("ray", 4, ok(50.0))])
    {2: 200.0, 4: 400.0}
    >>> serial_ceilings([("serial", 2, ok(100.0, cpu=0.45)), ("mini-data", 2, ok(100.0))])   # paced
    {}
    """
    serial = {w: median_of(group, "throughput") for engine, w, group in entries
              if engine == "serial" and _busy(group) >= BUSY}
    serial = {w: rate for w, rate in serial.items() if rate is not None}
    if not serial:
        return {}
    anyone = sorted(serial.values())[len(serial) // 2]
    return {w: serial.get(w, anyone) * w for w in sorted({w for _, w, _ in entries}) if w > 1}


def _busy(group: list[dict]) -> float:
    """The cell's median CPU seconds ÷ its median run time (1.0 when either is not known)."""
    cpu, run = median_of(group, "cpu_s"), median_of(group, "run_s")
    return cpu / run if cpu is not None and run else 1.0


def plot_throughput(rows: list[dict], path: Path) -> Path:
    panels = _panels(rows)
    plt, fig, axes = grid(len(panels))
    for ax, ((workload, size), entries) in zip(axes, panels.items()):
        unit = entries[0][2][0].get("unit") or "units"
        labels = []
        for i, (engine, workers, group) in enumerate(entries):
            labels.append(f"{engine} {workers}w")
            value = median_of(group, "throughput")
            if value is None:
                status = next(r["status"] for r in group if r["status"] != "ok")
                ax.text(i, 0.02, status.upper() if status == "wrong" else status, rotation=90, ha="center",
                        va="bottom", transform=ax.get_xaxis_transform(), fontsize=8,
                        color="red" if status == "wrong" else "dimgray", fontweight="bold" if status == "wrong" else None)
                continue
            values = [r["throughput"] for r in group if r["status"] == "ok" and r.get("throughput")]
            ax.bar(i, value, color=color(engine), edgecolor="black", linewidth=0.5)
            ax.plot([i, i], [min(values), max(values)], color="black", linewidth=1)
        ceilings = serial_ceilings(entries)
        for workers, rate in ceilings.items():
            ax.axhline(rate, color=color("serial"), linestyle="--", linewidth=1, zorder=0)
            ax.annotate(f"serial × {workers}", (1, rate), xycoords=("axes fraction", "data"), xytext=(-3, -2),
                        textcoords="offset points", ha="right", va="top", fontsize=7, color="dimgray")
        ax.set_xticks(range(len(labels)), labels, fontsize=7, rotation=40, ha="right")
        ax.set_yscale("log")
        if ceilings:                # room above the highest line for its label
            ax.set_ylim(top=max(ax.get_ylim()[1], max(ceilings.values()) * 1.25))
        ax.set_title(f"{workload} ({size})", fontsize=10)
        ax.set_ylabel(f"{unit} / s (higher is better)", fontsize=8)
        ax.grid(axis="y", which="both", alpha=0.3)
    fig.suptitle("Throughput: median of the ok repeats, whiskers min–max; dashed: serial × workers", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_latency(rows: list[dict], path: Path) -> Path:
    panels = _panels(rows)
    plt, fig, axes = grid(len(panels))
    marks = (("latency_p50_s", "o", "p50"), ("latency_p90_s", "s", "p90"), ("latency_p99_s", "^", "p99"))
    for ax, ((workload, size), entries) in zip(axes, panels.items()):
        labels = []
        for i, (engine, workers, group) in enumerate(entries):
            labels.append(f"{engine} {workers}w")
            for field, marker, name in marks:
                value = median_of(group, field)
                if value is not None:
                    ax.scatter(i, value, color=color(engine), marker=marker, edgecolor="black", linewidth=0.5,
                               s=36, label=name if i == 0 else None, zorder=3)
        ax.set_xticks(range(len(labels)), labels, fontsize=7, rotation=40, ha="right")
        ax.set_yscale("log")
        ax.set_title(f"{workload} ({size})", fontsize=10)
        ax.set_ylabel("seconds (lower is better)", fontsize=8)
        ax.grid(axis="y", which="both", alpha=0.3)
        handles = [plt.Line2D([], [], marker=m, linestyle="", color="gray", label=n) for _, m, n in marks]
        ax.legend(handles=handles, fontsize=7, loc="best")
    fig.suptitle("Latency per unit (task: submit→result seen; actor call: call→reply; dataflow: the job)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_run(out: Path) -> list[Path]:
    """Draw every figure of the run folder ``out``; their paths."""
    out = Path(out)
    every = read_rows(out)
    rows = timed(every)
    if not rows:
        raise ArchbenchError(f"{out} has no results.jsonl rows to plot; run `archbench run --out {out}` first")
    from harness.evidence import draw_evidence
    from harness.faults import plot_recovery

    recovery = plot_recovery(every, out / "recovery.png")
    return [plot_throughput(rows, out / "throughput.png"), plot_latency(rows, out / "latency.png"),
            *draw_evidence(out, rows)[0], *([recovery] if recovery else [])]
