"""The results folder: one long-format table of rows, and a fairness manifest.

A run folder holds ``results.jsonl`` (one JSON object per repeat of a cell,
appended the moment the repeat ends, so an interrupted run loses nothing),
``manifest.json`` (the machine, versions, git commit and every engine
setting), ``logs/`` (each cell's own output) and the plots and report made
from the rows. Plots and reports read only this folder.

    >>> row = new_row(engine="serial", workload="wordcount", size="tiny", workers=1, repeat=0)
    >>> row["status"], len(row) == len(FIELDS)
    ('failed', True)
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

STATUSES = ("ok", "wrong", "failed", "timeout", "unsupported", "unavailable")

# every row has every field, in this order (documented in results/README.md)
FIELDS = (
    "run_id", "time", "engine", "architecture", "model", "workload", "size", "workers", "repeat",
    "seed", "status", "error", "startup_s", "load_s", "run_s", "check_s", "units", "unit",
    "throughput", "latency_count", "latency_p50_s", "latency_p90_s", "latency_p99_s",
    "latency_max_s", "peak_rss_bytes", "cpu_s",
    "purpose", "trace_file", "trace_overhead", "busy_fraction", "time_shares",
    "fault", "fault_outcome", "recovery_s", "fault_pid", "fault_target", "fault_at_s",
)
PURPOSES = ("timed", "traced", "faulted")   # a traced or faulted repeat is never part of a timed figure

PACKAGES = ("archbench", "cloudpickle", "psutil", "numpy", "pandas", "pyarrow", "matplotlib",
            "pyspark", "dask", "distributed", "ray", "bytewax", "pytest", "pytest-benchmark")


def new_row(**values) -> dict:
    """A row with every field: the given values, None elsewhere, status 'failed' until set."""
    unknown = set(values) - set(FIELDS)
    if unknown:
        raise KeyError(f"not result fields: {sorted(unknown)}")
    row = dict.fromkeys(FIELDS)
    row.update(status="failed", purpose="timed", time=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    row.update(values)
    return row


def append_row(path: Path, row: dict) -> None:
    """Append one row and make it durable before returning (a crash after this loses nothing)."""
    line = json.dumps(row, default=str) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_rows(path: Path) -> list[dict]:
    """Every complete row of ``results.jsonl`` (a line cut short by a crash is skipped)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def timed(rows: list[dict]) -> list[dict]:
    """The rows that figures and reports are made of: not the untimed traced repeats.

    >>> [r["repeat"] for r in timed([{"repeat": 0, "purpose": "timed"}, {"repeat": 3, "purpose": "traced"}, {"repeat": 1}])]
    [0, 1]
    """
    return [r for r in rows if r.get("purpose", "timed") == "timed"]


def cell_key(row: dict) -> tuple:
    """What identifies a cell: engine × workload × size × workers."""
    return (row["engine"], row["workload"], row["size"], int(row["workers"]))


# ------------------------------------------------------------------ manifest


def machine() -> dict:
    """CPU model, cores, memory and OS: what a reader needs to judge the numbers."""
    import psutil

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_model": cpu,
        "cores_logical": os.cpu_count(),
        "cores_physical": psutil.cpu_count(logical=False),
        "memory_bytes": psutil.virtual_memory().total,
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "hostname": platform.node(),
    }


def package_versions() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_state() -> dict:
    """The commit the code came from, and whether it had uncommitted changes."""
    root = Path(__file__).resolve().parent.parent

    def git(*args):
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)

    try:
        commit = git("rev-parse", "HEAD")
        if commit.returncode != 0:
            return {"commit": None, "dirty": None}
        return {"commit": commit.stdout.strip(), "dirty": bool(git("status", "--porcelain").stdout.strip())}
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}


def write_manifest(out: Path, manifest: dict) -> None:
    """Write ``manifest.json`` atomically (a reader never sees half of it)."""
    tmp = Path(out) / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(Path(out) / "manifest.json")


def read_manifest(out: Path) -> dict:
    path = Path(out) / "manifest.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def make_manifest(run_id: str, matrix, argv: list[str]) -> dict:
    """The fairness manifest: what ran, where, with which versions and settings."""
    from engines import get_engine
    from workloads import get_workload

    engines = {}
    for name in matrix.engines:
        engine = get_engine(name)
        ok, why = engine.available()
        options = {**(engine.trace_options if getattr(matrix, "trace", False) else {}),
                   **(engine.fault_options if getattr(matrix, "fault", None) else {}), **matrix.options.get(name, {})}
        engines[name] = {
            "architecture": engine.architecture, "available": ok, "reason": why,
            "version": engine.version() if ok else None,
            "supports": {model: str(support) for model, support in engine.supports.items()},   # each as its line
            "settings": {str(n): engine.settings(n, **options) for n in matrix.workers},
        }
    return {
        "run_id": run_id,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["archbench", *argv[1:]]),
        "matrix": matrix.as_dict(),
        "machine": machine(),
        "packages": package_versions(),
        "git": git_state(),
        "engines": engines,
        "workloads": {name: get_workload(name).declared() for name in matrix.workloads},   # what the verdicts judge
    }


def cells(rows: list[dict]) -> dict[tuple, list[dict]]:
    """Rows grouped by cell, in the order the cells first appear."""
    grouped: dict[tuple, list[dict]] = {}
    for row in rows:
        grouped.setdefault(cell_key(row), []).append(row)
    return grouped


def median_of(rows: list[dict], field: str):
    """The median of ``field`` over a cell's ok rows, None where there is none."""
    values = [r[field] for r in rows if r["status"] == "ok" and r.get(field) is not None]
    return statistics.median(values) if values else None


def status_of(rows: list[dict]) -> str:
    """``3 ok``, or ``2 ok, 1 timeout``: how a cell's repeats ended."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return ", ".join(f"{n} {s}" for s, n in counts.items())


# ------------------------------------------------------------------ how its numbers are shown


def fmt(value, unit: str = "", digits: int = 3) -> str:
    """A number in a few significant digits, with k/M for large ones; '-' for None."""
    if value is None:
        return "-"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.{digits}g}{suffix}{unit}"
    return f"{value:.{digits}g}{unit}"


def fmt_seconds(value) -> str:
    """Seconds in µs, ms or s, three significant digits; '-' for None."""
    if value is None:
        return "-"
    if value < 1e-3:
        return f"{value * 1e6:.3g} µs"
    if value < 1:
        return f"{value * 1e3:.3g} ms"
    return f"{value:.3g} s"
