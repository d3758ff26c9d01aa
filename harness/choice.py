"""The architecture-choice verdicts: which architecture wins each workload, how surely, and per trait.

Read from a run folder only -- the timed rows and the manifest, which keeps
each workload's declarations (`workloads.Workload.declared`: its traits, the
architecture its hypothesis expects to win, the field it is judged by).
For each workload, at the largest size and worker count the run has
(where the architecture matters most), the ok repeats of every engine
are ranked (`harness.stats.rank`):

- **winner**: the engine with the lowest median (baselines included -- a
  serial program that wins is an answer too), its architecture, and the
  ratio of the runner-up to it; **significant** only when the two-sided
  Mann–Whitney test between them says so;
- **hypothesis**: the best engine of the expected architecture against the
  best engine of any other architecture (baselines left out unless the
  hypothesis expects one): *confirmed* when the expected one is faster and
  the test says so, *refuted* when another is faster and the test says so,
  *undecided* otherwise -- with the deciding figure and, when undecided for
  want of repeats, how many would decide;
- per **trait**: the architecture that won most of the workloads with it.

`write_choice` writes ``choice.json``::

    {"workloads": {W: {"winner": engine, "architecture": a, "ratio_to_next": x, "significant": bool,
                       "hypothesis": "confirmed" | "refuted" | "undecided", "expected": a | null,
                       "deciding": "...", "size": s, "workers": n, "judged_by": field, "ranking": [...]}},
                       "faults": {engine: {"outcome": ..., "recovery_s": ...}}},   (with --fault)
     "traits": {T: {"architecture": a | null, "workloads": {W: a}}},
     "crossovers": ["sentences: where an engine's start-up is paid back, where a worker stops helping"]}
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.results import cells, median_of
from harness.stats import compare, rank


def _samples(rows: list[dict], field: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for row in rows:
        if row["status"] == "ok" and row.get(field) is not None:
            out.setdefault(row["engine"], []).append(float(row[field]))
    return out


def _largest(rows: list[dict]) -> tuple[str, int]:
    from workloads import SIZES

    sizes = sorted({r["size"] for r in rows}, key=SIZES.index)
    workers = max(int(r["workers"]) for r in rows if r["size"] == sizes[-1])
    return sizes[-1], workers


def verdict(workload: str, rows: list[dict], declared: dict, architecture_of: dict[str, str]) -> dict | None:
    """The verdict of one workload from its timed rows; None when no engine has an ok repeat."""
    size, workers = _largest(rows)
    field = declared.get("judge_by") or "run_s"
    here = [r for r in rows if r["size"] == size and int(r["workers"]) == workers]
    samples = _samples(here, field)
    ranked, leaders = rank(samples)
    if not ranked:
        return None
    best = ranked[0]
    out = {"size": size, "workers": workers, "judged_by": field, "winner": best.engine,
           "architecture": architecture_of.get(best.engine, "?"),
           "ratio_to_next": round(ranked[1].ratio, 3) if len(ranked) > 1 else None,
           "significant": bool(leaders and leaders.significant),
           "ranking": [{"engine": r.engine, "architecture": architecture_of.get(r.engine, "?"), "median": r.median,
                        "interval": [r.low, r.high], "confidence": r.level, "ratio": round(r.ratio, 3),
                        "ratio_interval": [round(r.ratio_low, 3), round(r.ratio_high, 3)]} for r in ranked]}
    if leaders is not None:
        out["leaders"] = f"{ranked[0].engine} vs {ranked[1].engine}: {leaders.verdict}" + \
            ("" if leaders.significant else f" (about {leaders.needed} repeats each would decide)")
    out.update(judge_hypothesis(declared.get("expect"), samples, architecture_of))
    return out


def judge_hypothesis(expect: str | None, samples: dict[str, list[float]], architecture_of: dict[str, str]) -> dict:
    """``{"expected", "hypothesis", "deciding"}``: the expected architecture's best engine against the rest's."""
    if expect is None:
        return {"expected": None, "hypothesis": "undecided", "deciding": "the hypothesis names no architecture"}
    import statistics

    def best_of(engines):
        engines = [e for e in engines if samples.get(e)]
        return min(engines, key=lambda e: statistics.median(samples[e])) if engines else None

    mine = best_of([e for e in samples if architecture_of.get(e) == expect])
    others = best_of([e for e in samples if architecture_of.get(e) not in (expect, *(() if expect == "baseline"
                                                                                      else ("baseline",)))])
    if mine is None:
        return {"expected": expect, "hypothesis": "undecided", "deciding": f"no {expect} engine has an ok repeat"}
    if others is None:
        return {"expected": expect, "hypothesis": "undecided",
                "deciding": f"no engine of another architecture ran it to compare {mine} with"}
    a, b = samples[mine], samples[others]
    result = compare(a, b)
    ratio = statistics.median(b) / statistics.median(a)
    figure = (f"{mine} ({expect}) {statistics.median(a):.4g} vs {others} ({architecture_of.get(others)}) "
              f"{statistics.median(b):.4g}: {others} takes {ratio:.2f}× as long; {result.verdict}")
    if not result.significant:
        return {"expected": expect, "hypothesis": "undecided",
                "deciding": figure + f" -- about {result.needed} repeats each would decide"}
    return {"expected": expect, "hypothesis": "confirmed" if ratio > 1 else "refuted", "deciding": figure}


def _declared(workload: str) -> dict:
    """A built-in workload's declarations, for a run whose manifest predates them (a user's: nothing)."""
    from workloads import get_workload

    try:
        return get_workload(workload).declared()
    except Exception:
        return {}


def choices(rows: list[dict], manifest: dict) -> dict:
    """``choice.json``'s content from a run's timed rows and manifest."""
    from harness.results import timed

    every, rows = rows, timed(rows)
    architecture_of = {name: e.get("architecture", "?") for name, e in manifest.get("engines", {}).items()}
    architecture_of.update({r["engine"]: r["architecture"] for r in rows if r.get("architecture")})
    declared = {w: manifest.get("workloads", {}).get(w) or _declared(w) for w in {r["workload"] for r in rows}}
    out: dict = {"workloads": {}, "traits": {}}
    for workload in dict.fromkeys(r["workload"] for r in rows):
        found = verdict(workload, [r for r in rows if r["workload"] == workload], declared.get(workload, {}),
                        architecture_of)
        if found is not None:
            found["faults"] = faults_of(every, workload, found["size"], found["workers"])
            out["workloads"][workload] = found
    for workload, v in out["workloads"].items():
        best_arch = next((r["architecture"] for r in v["ranking"] if r["architecture"] != "baseline"), None)
        for trait in declared.get(workload, {}).get("traits", []):
            out["traits"].setdefault(trait, {"workloads": {}})["workloads"][workload] = best_arch
    for trait, t in out["traits"].items():
        votes = [a for a in t["workloads"].values() if a]
        t["architecture"] = max(set(votes), key=votes.count) if votes else None
        t["won"] = f"{votes.count(t['architecture'])} of {len(t['workloads'])} workloads" if votes else ""
    out["crossovers"] = crossovers(rows)
    return out


def faults_of(rows: list[dict], workload: str, size: str, workers: int) -> dict:
    """What a killed worker did on each engine (``--fault``), at the verdict's size and worker count:
    ``{engine: {"outcome": ..., "recovery_s": ...}}``; empty without faulted repeats."""
    return {r["engine"]: {"outcome": r.get("fault_outcome"), "recovery_s": r.get("recovery_s")}
            for r in rows if r.get("purpose") == "faulted" and r["workload"] == workload
            and r["size"] == size and int(r["workers"]) == workers}


def fault_sentence(workload: str, v: dict) -> str | None:
    """The fault evidence of one verdict, in a sentence: how the winner fared, and who recovered."""
    faults = v.get("faults") or {}
    if not faults:
        return None
    mine = faults.get(v["winner"])
    recovered = [e for e, f in faults.items() if f["outcome"] == "recovered"]
    lost = [e for e, f in faults.items() if f["outcome"] in ("failed", "hung", "wrong")]
    head = (f"the winner, {v['winner']}, {mine['outcome']}" + (f" ({mine['recovery_s']:+.3g} s)"
            if mine.get("recovery_s") is not None else "") if mine else f"the winner, {v['winner']}, was not faulted")
    return (f"{workload}: with a worker killed mid-run {head}; recovered: {', '.join(recovered) or 'none'}; "
            f"did not: {', '.join(lost) or 'none'}")


def crossovers(rows: list[dict]) -> list[str]:
    """What the data shows about where an answer changes, in sentences:

    - where an engine's start is paid back: with two or more sizes, a line ``time = fixed + per_unit x units``
      fitted per engine; an engine with a larger fixed cost but a smaller per-unit cost than ``serial``
      overtakes it above ``(fixed - fixed_serial) / (per_unit_serial - per_unit)`` units;
    - where adding a worker stops helping: the first worker count whose median throughput is not above
      the previous one's.
    """
    from scipy.stats import linregress

    from harness.results import timed

    rows = timed(rows)
    lines = []
    fits: dict[tuple, dict[str, tuple[float, float]]] = {}
    scaling: dict[tuple, dict[int, float]] = {}
    points: dict[tuple, list] = {}
    for (engine, workload, size, workers), group in cells(rows).items():
        run, units, rate = median_of(group, "run_s"), median_of(group, "units"), median_of(group, "throughput")
        if run and units:
            points.setdefault((workload, workers, engine), []).append((units, run))
        if rate:
            scaling.setdefault((workload, size, engine), {})[workers] = rate
    for (workload, workers, engine), pts in points.items():
        if len({u for u, _ in pts}) > 1:
            fit = linregress([u for u, _ in pts], [t for _, t in pts])
            fits.setdefault((workload, workers), {})[engine] = (max(fit.intercept, 0.0), fit.slope)
    for (workload, workers), engines in fits.items():
        base = engines.get("serial")
        if base is None:
            continue
        for engine, (fixed, per_unit) in engines.items():
            if engine != "serial" and fixed > base[0] and 0 < per_unit < base[1]:
                at = (fixed - base[0]) / (base[1] - per_unit)
                lines.append(f"{workload} ({workers} workers): {engine} overtakes serial above about {at:,.0f} "
                             f"units (fixed cost {fixed:.3g} s vs {base[0]:.3g} s, {per_unit * 1e6:.3g} vs "
                             f"{base[1] * 1e6:.3g} µs a unit)")
    for (workload, size, engine), by_workers in scaling.items():
        ws = sorted(by_workers)
        stop = next((w for prev, w in zip(ws, ws[1:]) if by_workers[w] <= by_workers[prev]), None)
        if stop is not None and engine != "serial":   # serial is one process whatever --workers says
            lines.append(f"{workload} ({size}): on {engine}, going to {stop} workers did not raise throughput")
    return lines


def write_choice(out: Path) -> Path:
    """Write ``choice.json`` into the run folder ``out``; its path."""
    from harness.results import read_manifest, read_rows

    path = Path(out) / "choice.json"
    path.write_text(json.dumps(choices(read_rows(out), read_manifest(out)), indent=2) + "\n", encoding="utf-8")
    return path


def choice_section(data: dict) -> list[str]:
    """The report's *Architecture choice* section from ``choice.json``'s content."""
    if not data["workloads"]:
        return []
    lines = ["## Architecture choice", "",
             "Per workload, at its largest size and worker count in this run: the winner, by how much, and "
             "whether the difference is significant (two-sided Mann–Whitney, p < 0.05); the hypothesis of the "
             "workload's docstring judged against the measured figures (`choice.json`).", "",
             "| workload | size, workers | winner | architecture | next ÷ winner | significant | hypothesis | "
             "deciding figure |", "|---|---|---|---|---|---|---|---|"]
    for w, v in data["workloads"].items():
        ratio = f"{v['ratio_to_next']:.2f}×" if v["ratio_to_next"] else "-"
        lines.append(f"| {w} | {v['size']}, {v['workers']} | {v['winner']} | {v['architecture']} | {ratio} | "
                     f"{'yes' if v['significant'] else 'no'} | **{v['hypothesis']}** (expects "
                     f"{v['expected'] or 'none'}) | {v['deciding']} |")
    lines.append("")
    if data["traits"]:
        lines += ["Per trait, the architecture whose best engine won most of the workloads with it:", "",
                  "| trait | architecture | workloads |", "|---|---|---|"]
        for trait, t in sorted(data["traits"].items()):
            each = ", ".join(f"{w}: {a or '-'}" for w, a in t["workloads"].items())
            lines.append(f"| {trait} | {t['architecture'] or '-'} ({t['won']}) | {each} |")
        lines.append("")
    sentences = [s for s in (fault_sentence(w, v) for w, v in data["workloads"].items()) if s]
    if sentences:
        lines += ["Recovery counts too: a winner that fails when a worker dies may not be the answer for a job "
                  "that must finish (`--fault`, the *Faults* section):", ""] + [f"- {s}" for s in sentences] + [""]
    if data.get("crossovers"):
        lines += ["Where the answer changes, as the data shows it:", ""] + [f"- {c}" for c in data["crossovers"]] + [""]
    lines += ["What would change the answer: these verdicts hold for this machine, these sizes and worker "
              "counts, and this many repeats; an *undecided* verdict says how many repeats would decide, and a "
              "winner at a small size is often the engine with the cheapest start, not the best architecture "
              "(run at medium or large, with --workers 1,2).", ""]
    return lines
