"""``archbench``: list engines and workloads, run the matrix, plot and report.

    archbench engines                  what exists, what runs here, and how
    archbench workloads                the workloads and their sizes
    archbench run [flags]              the matrix (no flags: a quick one on every available engine)
    archbench plot DIR                 PNG figures from a results folder
    archbench timeline DIR             Gantt timelines from a run's traces (run --trace)
    archbench fairness                 each adapter beside its engine's hand-written program
    archbench choose --workload-file F which architecture for your own workload, from a short matrix
    archbench report DIR               a Markdown report from a results folder
    archbench setup flink [--path P]   make Flink's own environment (it cannot share the project's)
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path

from engines import Planned, engine_names, get_engine
from engines.api import MODELS, ArchbenchError
from engines.support import Support
from harness.matrix import FULL_MATRIX
from workloads import SIZES, get_workload, load_workload_file, quick_workloads, workload_names

DEFAULT_SIZE = "small"
DEFAULT_WORKERS = "2"
DEFAULT_REPEAT = 3
QUICK_REPEAT = 2      # the quick matrix's: within two minutes on a 2-core machine (README, "The quick matrix")


class Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one clear line and exit code 2."""

    def error(self, message):
        sys.stderr.write(f"{self.prog}: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def cmd_engines(args) -> int:
    rows = []
    for name in engine_names():
        engine = get_engine(name)
        ok, why = engine.available()
        rows.append((name, engine.architecture, "yes" if ok else "no", *(engine.supports[m].label for m in MODELS),
                     engine.version() if ok else "-", engine, why))
    header = ("engine", "architecture", "available", *MODELS, "version")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
    print()
    for name, *_, engine, why in rows:
        notes = [] if isinstance(engine, Planned) else \
            [f"{m} {engine.supports[m]}" for m in MODELS if engine.supports[m] != Support.native()]
        if why:
            notes.insert(0, f"unavailable: {why}")
        print(f"{name}: {engine.description}" + "".join(f"\n    {n}" for n in notes))
    return 0


def cmd_workloads(args) -> int:
    for path in args.workload_file or []:
        load_workload_file(path)
    names = workload_names()
    width = max(len(n) for n in names)
    variants = [n for n in engine_names() if get_engine(n).columnar]
    print("* = in the quick matrix (`archbench run` with no flags); --workloads all runs every one")
    print(f"c = has a columnar form (run_columnar), the only workloads the idiomatic variants run: "
          f"{', '.join(variants)}\n")
    for name in names:
        w = get_workload(name)
        marks = ("*" if w.quick else " ") + ("c" if w.has_columnar_form() else " ")
        print(f"{name.ljust(width)} {marks} {w.model:<8}  {w.unit:<12}  {w.description}")
        if args.sizes:
            for size in SIZES:
                print(f"{'':{width}}    {size:<6} {w.sizes[size]}")
    return 0


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _names(text: str, valid: list[str], what: str, parser) -> list[str]:
    names = valid if text == "all" else _split(text)
    unknown = [n for n in names if n not in valid]
    if unknown:
        parser.error(f"unknown {what} {', '.join(map(repr, unknown))}; choose from: {', '.join(valid)}, or all")
    if not names:
        parser.error(f"no {what} given")
    return names


def _engine_options(pairs: list[str], parser) -> dict[str, dict]:
    """``dask.address=tcp://h:8786`` -> {"dask": {"address": "tcp://h:8786"}}; values may be JSON."""
    options: dict[str, dict] = {}
    for pair in pairs:
        target, _, value = pair.partition("=")
        engine, _, key = target.partition(".")
        if not _ or not key or engine not in engine_names():
            parser.error(f"--engine-option {pair!r}: write ENGINE.KEY=VALUE with ENGINE one of {', '.join(engine_names())}")
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
        options.setdefault(engine, {})[key] = value
    return options


def build_matrix(args, parser, stored: dict):
    """The matrix from the flags; with --resume, flags not given come from the run's manifest."""
    from harness.matrix import Matrix

    def pick(flag, default):
        given = getattr(args, flag)
        return given if given is not None else stored.get(flag, default)

    files = [str(Path(p).resolve()) for p in (args.workload_file or stored.get("workload_files", []))]
    for path in files:
        try:
            load_workload_file(path)
        except ArchbenchError as e:
            parser.error(str(e))
    if args.engines is None and "engines" not in stored:
        engines = [n for n in engine_names() if get_engine(n).available()[0]]
    else:
        spec = args.engines if args.engines is not None else ",".join(stored["engines"])
        engines = _names(spec, engine_names(), "engine", parser)
    quick = args.workloads is None and stored.get("quick", "workloads" not in stored)
    if quick:
        workloads = quick_workloads()
    else:
        spec = args.workloads if args.workloads is not None else ",".join(stored["workloads"])
        workloads = _names(spec, workload_names(), "workload", parser)
    sizes = _split(args.size) if args.size is not None else stored.get("sizes", [DEFAULT_SIZE])
    bad = [s for s in sizes if s not in SIZES]
    if bad or not sizes:
        parser.error(f"--size {args.size!r}: choose from {', '.join(SIZES)} (comma-separated for several)")
    if args.workers is not None:
        try:
            workers = [int(w) for w in _split(args.workers)]
        except ValueError:
            workers = []
        if not workers or min(workers) < 1:
            parser.error(f"--workers {args.workers!r}: give positive whole numbers, e.g. 1,2")
    else:
        workers = stored.get("workers", [int(DEFAULT_WORKERS)])
    repeat = pick("repeat", QUICK_REPEAT if quick else DEFAULT_REPEAT)
    warmup, timeout = pick("warmup", 1), pick("timeout", 120.0)
    if repeat < 1 or warmup < 0 or timeout <= 0:
        parser.error("--repeat must be ≥ 1, --warmup ≥ 0 and --timeout > 0")
    options = _engine_options(args.engine_option or [], parser) or stored.get("options", {})
    return Matrix(engines=engines, workloads=workloads, sizes=sizes, workers=workers, repeat=repeat,
                  warmup=warmup, timeout=timeout, seed=pick("seed", 42), workload_files=files, options=options,
                  quick=quick, trace=bool(args.trace or stored.get("trace")), fault=_fault(args, parser, stored))


def _fault(args, parser, stored: dict) -> str | None:
    """``--fault`` checked (`harness.faults.parse_fault`), as its canonical text; from the manifest on --resume."""
    from harness.faults import parse_fault

    text = getattr(args, "fault", None) or stored.get("fault")
    if not text:
        return None
    try:
        return str(parse_fault(text))
    except ArchbenchError as e:
        parser.error(str(e))


def cmd_run(args, parser) -> int:
    from harness.matrix import Progress, run_matrix
    from harness.results import make_manifest, read_manifest, read_rows, write_manifest

    if args.resume:
        if not args.out:
            parser.error("--resume needs --out DIR: the run folder to continue")
        out = Path(args.out)
        stored = read_manifest(out)
        if not stored:
            parser.error(f"--resume: {out} has no manifest.json; it is not an archbench run folder")
        matrix = build_matrix(args, parser, stored.get("matrix", {}))
        run_id = stored["run_id"]
    else:
        run_id = datetime.now().strftime("%Y-%m-%dT%H-%M-%S")
        out = Path(args.out) if args.out else Path("results") / "runs" / run_id
        if read_rows(out):
            parser.error(f"{out} already has results; add --resume to continue that run, or choose another --out")
        matrix = build_matrix(args, parser, {})
    out.mkdir(parents=True, exist_ok=True)
    write_manifest(out, make_manifest(run_id, matrix, sys.argv))
    cells = matrix.cells()
    print(f"archbench: {len(cells)} cells ({len(matrix.engines)} engines × {len(matrix.workloads)} workloads × "
          f"{len(matrix.sizes)} sizes × {len(matrix.workers)} worker counts), {matrix.repeat} repeats each "
          f"-> {out}", file=sys.stderr)
    if matrix.quick:
        print(f"archbench: the quick matrix -- {len(matrix.workloads)} of {len(workload_names())} workloads (one per "
              f"model, and the stream), {matrix.repeat} repeats: a first look, not a verdict. "
              f"The full matrix: {FULL_MATRIX}", file=sys.stderr)
    try:
        rows = run_matrix(matrix, out, run_id, Progress(len(cells)))
    except KeyboardInterrupt:
        print(f"\ninterrupted; finished rows are kept. Continue with: archbench run --resume --out {out}",
              file=sys.stderr)
        return 130
    from harness.report import summary_table

    print(summary_table(rows))
    if not args.no_plots:
        from harness.plot import plot_run
        from harness.report import write_report

        figures = plot_run(out)
        if matrix.trace and any(r.get("purpose") == "traced" and r.get("trace_file") for r in rows):
            from harness.timeline import draw_run

            figures += draw_run(out)
        for path in figures + [write_report(out)]:
            print(f"wrote {path}")
    return 1 if any(r["status"] == "wrong" for r in rows) else 0


def cmd_plot(args) -> int:
    from harness.plot import plot_run

    for path in plot_run(Path(args.dir)):
        print(f"wrote {path}")
    return 0


def cmd_timeline(args) -> int:
    from harness.timeline import draw_run

    for path in draw_run(Path(args.dir), args.workload, args.size, shared_axis=not args.per_panel_axis):
        print(f"wrote {path}")
    return 0


def cmd_fairness(args, parser) -> int:
    from harness.fairness import run_fairness, table
    from harness.twins import TWINS

    with_twins = sorted({e for e, _ in TWINS}, key=engine_names().index)
    if args.engines:
        engines = _names(args.engines, with_twins, "engine with a hand-written twin", parser)
    else:
        engines = [e for e in with_twins if get_engine(e).available()[0]]
        if not engines:
            parser.error(f"no engine with a twin ({', '.join(with_twins)}) is available here; see archbench engines")
    workloads = _split(args.workloads) if args.workloads else None
    cells = [(e, w) for e in engines for w in sorted({w for en, w in TWINS if en == e})
             if workloads is None or w in workloads]
    if not cells:
        parser.error(f"no twin for those engines and workloads; twins: "
                     f"{', '.join(f'{e}/{w}' for e, w in sorted(TWINS))}")
    if args.size not in SIZES:
        parser.error(f"--size {args.size!r}: choose from {', '.join(SIZES)}")
    out = Path(args.out) if args.out else Path("results") / "runs" / (datetime.now().strftime("%Y-%m-%dT%H-%M-%S")
                                                                       + "-fairness")
    print(f"archbench fairness: {len(cells)} cells, adapter and hand-written twin alternately, {args.repeat} "
          f"repeats each, {args.size}, {args.workers} workers -> {out}", file=sys.stderr)
    summary = run_fairness(cells, args.size, args.workers, args.repeat, args.timeout, out,
                           progress=lambda line: print(line, file=sys.stderr))
    print(table(summary))
    print(f"wrote {out / 'fairness.md'}")
    return 0


CHOOSE_SIZES, CHOOSE_WORKERS = ["tiny", "small"], [1, 2]


def cmd_choose(args, parser) -> int:
    """A short, bounded matrix for a user's own workload, then its verdict."""
    from harness.choice import write_choice
    from harness.matrix import Matrix, Progress, run_matrix
    from harness.plot import plot_run
    from harness.report import summary_table, write_report
    from harness.results import make_manifest, write_manifest

    try:
        names = load_workload_file(args.workload_file)
    except ArchbenchError as e:
        parser.error(str(e))
    engines = _names(args.engines, engine_names(), "engine", parser) if args.engines else \
        [n for n in engine_names() if get_engine(n).available()[0]]
    run_id = datetime.now().strftime("%Y-%m-%dT%H-%M-%S")
    out = Path(args.out) if args.out else Path("results") / "runs" / f"{run_id}-choose"
    matrix = Matrix(engines=engines, workloads=names, sizes=CHOOSE_SIZES, workers=CHOOSE_WORKERS, repeat=args.repeat,
                    warmup=1, timeout=args.timeout, workload_files=[str(Path(args.workload_file).resolve())],
                    trace=args.trace)
    out.mkdir(parents=True, exist_ok=True)
    write_manifest(out, make_manifest(run_id, matrix, sys.argv))
    cells = matrix.cells()
    print(f"archbench choose: {', '.join(names)} on {len(engines)} engines × sizes {', '.join(CHOOSE_SIZES)} × "
          f"workers {', '.join(map(str, CHOOSE_WORKERS))}: {len(cells)} cells, {matrix.repeat} repeats -> {out}",
          file=sys.stderr)
    rows = run_matrix(matrix, out, run_id, Progress(len(cells)))
    print(summary_table(rows))
    figures = plot_run(out)
    if args.trace:
        from harness.timeline import draw_run

        figures += draw_run(out)
    report = write_report(out)
    decided = json.loads(write_choice(out).read_text())["workloads"]
    for name in names:
        v = decided.get(name)
        if v is None:
            print(f"{name}: no engine ran it to the end; see {report}")
            continue
        per_arch: dict = {}
        for r in v["ranking"]:
            per_arch.setdefault(r["architecture"], r)
        archs = [(a, r) for a, r in per_arch.items() if a != "baseline"]
        print(f"\n{name}, at {v['size']} with {v['workers']} workers:")
        print(f"  fastest: {v['winner']} ({v['architecture']}); the next takes {v['ratio_to_next'] or '-'}× as long"
              f" -- {'significant' if v['significant'] else 'not significant: ' + v.get('leaders', '')}")
        if archs:
            print(f"  choose: {archs[0][0]} -- " + "; ".join(
                f"{a}: {r['engine']} {r['ratio']:.2f}× the fastest" for a, r in archs))
        print(f"  hypothesis {v['hypothesis']}: {v['deciding']}")
    print(f"\nwrote {report} and {out / 'choice.json'}")
    return 1 if any(r["status"] == "wrong" for r in rows) else 0


def cmd_setup(args) -> int:
    """Make the environment of an engine that cannot share the project's (Flink)."""
    from engines.adapters import flink_env

    path = Path(args.path) if args.path else flink_env.env_path()
    start = datetime.now()
    try:
        flink_env.setup(path)
    except flink_env.SetupError as e:
        sys.stderr.write(f"archbench setup {args.engine}: {e}\n")
        return 1
    print(f"done in {(datetime.now() - start).total_seconds():.0f} s"
          + ("" if not args.path else f"; point the engine at it: export {flink_env.ENV_VAR}={path}"))
    return 0


def cmd_report(args) -> int:
    from harness.report import write_report

    print(f"wrote {write_report(Path(args.dir))}")
    return 0


def make_parser() -> Parser:
    parser = Parser(prog="archbench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", parser_class=Parser)
    sub.add_parser("engines", help="engines, whether they run here, and their support for each model")
    wl = sub.add_parser("workloads", help="the workloads, their model and unit")
    wl.add_argument("--sizes", action="store_true", help="also show the parameters of every size")
    wl.add_argument("--workload-file", action="append", metavar="PATH", help="also load your own workload module")
    run = sub.add_parser("run", help="run the benchmark matrix", description=(
        "Run engine × workload × size × workers; each cell in its own process. With no flags, the quick "
        f"matrix: every available engine, the quick workloads (one per model, and the stream), size "
        f"{DEFAULT_SIZE}, {DEFAULT_WORKERS} workers, {QUICK_REPEAT} repeats, then plots and a report. "
        f"The full matrix: {FULL_MATRIX}"))
    run.add_argument("--engines", help="comma-separated engine names, or all (default: every available one)")
    run.add_argument("--workloads", help="comma-separated workload names, or all (default: the quick ones, "
                     "marked * by `archbench workloads`)")
    run.add_argument("--size", help=f"one of {', '.join(SIZES)}, or several comma-separated (default: {DEFAULT_SIZE})")
    run.add_argument("--workers", help=f"worker counts, comma-separated (default: {DEFAULT_WORKERS})")
    run.add_argument("--repeat", type=int, help=f"timed repeats per cell (default: {DEFAULT_REPEAT}; "
                     f"{QUICK_REPEAT} in the quick matrix)")
    run.add_argument("--warmup", type=int, help="untimed runs before the repeats (default: 1)")
    run.add_argument("--timeout", type=float, help="seconds each phase of a cell may take: start-up, "
                     "each warm-up, each repeat (default: 120)")
    run.add_argument("--out", help="the run folder (default: results/runs/<timestamp>)")
    run.add_argument("--workload-file", action="append", metavar="PATH",
                     help="load your own workload module (repeatable)")
    run.add_argument("--seed", type=int, help="seed of the generated inputs (default: 42)")
    run.add_argument("--resume", action="store_true", help="continue the run in --out, skipping finished repeats")
    run.add_argument("--engine-option", action="append", metavar="ENGINE.KEY=VALUE",
                     help="a start-up option of one engine, e.g. dask.address=tcp://host:8786 (repeatable)")
    run.add_argument("--trace", action="store_true", help="after each cell's timed repeats, one more, untimed, "
                     "traced by the engine's own instruments: traces/<workload>-<size>-<engine>-w<N>.json "
                     "(Chrome trace JSON: open in ui.perfetto.dev) and timeline figures")
    run.add_argument("--fault", metavar="kill-worker[@F]",
                     help="after each cell's timed repeats, one more in which one worker process of the engine is "
                     "killed (SIGKILL) when a fraction F (default 0.5) of the cell's median run time has passed: "
                     "what each engine does -- recovered, failed, hung -- in report.md's fault table and "
                     "recovery.png")
    run.add_argument("--no-plots", action="store_true", help="skip the plots and report at the end")
    plot = sub.add_parser("plot", help="draw PNG figures from a results folder")
    plot.add_argument("dir")
    timeline = sub.add_parser("timeline", help="draw Gantt timelines and exchange heatmaps from a run's traces "
                              "(archbench run --trace)")
    timeline.add_argument("dir")
    timeline.add_argument("--workload", help="only this workload's traces")
    timeline.add_argument("--size", help="only this size's traces")
    timeline.add_argument("--per-panel-axis", action="store_true",
                          help="give each engine's panel its own time axis (default: one shared axis)")
    fair = sub.add_parser("fairness", help="each adapter beside the program its engine's users would write by "
                          "hand, alternately on one cluster: adapter ÷ hand-written")
    fair.add_argument("--engines", help="comma-separated (default: every available engine with a twin)")
    fair.add_argument("--workloads", help="comma-separated (default: every workload with a twin)")
    fair.add_argument("--size", default="medium", help=f"one of {', '.join(SIZES)} (default: medium)")
    fair.add_argument("--workers", type=int, default=2, help="worker count (default: 2)")
    fair.add_argument("--repeat", type=int, default=3, help="pairs of runs after the warm-ups (default: 3)")
    fair.add_argument("--timeout", type=float, default=300.0, help="seconds each phase may take (default: 300)")
    fair.add_argument("--out", help="the folder (default: results/runs/<timestamp>-fairness); a run folder "
                      "works too: its report then has a Fairness section")
    choose = sub.add_parser("choose", help="which architecture for your own workload: a short matrix "
                            f"(sizes {', '.join(CHOOSE_SIZES)}, workers 1 and 2, every available engine) "
                            "and its verdict")
    choose.add_argument("--workload-file", required=True, metavar="PATH", help="your workload module")
    choose.add_argument("--engines", help="comma-separated (default: every available engine)")
    choose.add_argument("--repeat", type=int, default=3, help="timed repeats per cell (default: 3)")
    choose.add_argument("--timeout", type=float, default=120.0, help="seconds each phase may take (default: 120)")
    choose.add_argument("--trace", action="store_true", help="also trace each cell and draw its timelines")
    choose.add_argument("--out", help="the run folder (default: results/runs/<timestamp>-choose)")
    setup = sub.add_parser("setup", help="make the environment of an engine that needs one of its own (flink)")
    setup.add_argument("engine", choices=["flink"])
    setup.add_argument("--path", help="where to make it (default: $ARCHBENCH_FLINK_ENV, else "
                                      "~/.cache/archbench/flink-venv); the engine reads $ARCHBENCH_FLINK_ENV")
    report = sub.add_parser("report", help="write report.md from a results folder")
    report.add_argument("dir")
    parser.commands = sub.choices
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    command = args.command or "run"
    if args.command is None:
        args = parser.parse_args(["run", *(argv or [])])
    try:
        if command == "engines":
            return cmd_engines(args)
        if command == "workloads":
            return cmd_workloads(args)
        if command == "run":
            return cmd_run(args, parser.commands["run"])
        if command == "plot":
            return cmd_plot(args)
        if command == "timeline":
            return cmd_timeline(args)
        if command == "choose":
            return cmd_choose(args, parser.commands["choose"])
        if command == "fairness":
            return cmd_fairness(args, parser.commands["fairness"])
        if command == "setup":
            return cmd_setup(args)
        return cmd_report(args)
    except ArchbenchError as e:
        print(f"archbench {command}: {e}", file=sys.stderr)
        return 2
