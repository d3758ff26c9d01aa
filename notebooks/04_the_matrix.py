# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lesson 4 — The matrix: measuring fairly, reading the numbers
#
# **Learning goals.** By the end of this lesson you can
#
# 1. run a small benchmark matrix (workload × engine × size × workers) and say what each cell measured;
# 2. read `results.jsonl` into pandas in one line and ask it your own questions;
# 3. tell start-up from run time, and say why the harness times them apart;
# 4. read the figures the harness draws, and know which rows they come from.
#
# **The textbook**: `harness/matrix.py` (every cell in its own process, a timeout per phase, durable
# rows) and `harness/cell.py` (the phases of one cell); the fields of a row are in `results/README.md`.

# %%
import json
import tempfile
from pathlib import Path

import pandas as pd

from engines import get_engine
from harness import lessons
from harness.matrix import Matrix, run_matrix

SIZES = [lessons.size()]          # small in class (about a minute), tiny in CI
# engines that start in about a second; Spark's JVM (~4 s a cell) is left to `archbench run`
ENGINES = [e for e in ("serial", "pool", "mini-data", "mini-tasks", "dask")
           if get_engine(e).available()[0] and (lessons.size() != "tiny" or e != "dask")]
print("sizes:", SIZES, "engines:", ENGINES)

# %% [markdown]
# ## 1. Run a matrix
#
# Each cell starts its engine in a fresh process, generates the inputs, runs one untimed warm-up and
# then the timed repeats, and checks every answer against the workload's plain-Python reference
# (outside the timed region). A line is printed as each cell ends.

# %%
out = Path(tempfile.mkdtemp(prefix="lesson-matrix-"))
matrix = Matrix(engines=ENGINES, workloads=["wordcount", "fanout"], sizes=SIZES, workers=[1, 2], repeat=3,
                warmup=1, timeout=120)
rows = run_matrix(matrix, out, run_id="lesson", progress=lessons.NotebookProgress(len(matrix.cells())))
print(f"{len(rows)} rows in {out / 'results.jsonl'}")

# %% [markdown]
# ## 2. The rows, in pandas
#
# One row per repeat of a cell: long format, so any question is a `groupby` away.

# %%
df = pd.read_json(out / "results.jsonl", lines=True)
df[["engine", "workload", "size", "workers", "repeat", "status", "startup_s", "run_s", "throughput"]].head(8)

# %%
ok = df[df.status == "ok"]
medians = ok.groupby(["workload", "size", "engine", "workers"])["run_s"].median().unstack("workers")
medians

# %% [markdown]
# A cell that is not `ok` says why: an engine that does not run a model is `unsupported`, with its reason
# (mini-data runs dataflows, not task graphs) — never a blank.

# %%
df[df.status != "ok"].groupby(["engine", "workload"])["error"].first().head()

# %% [markdown]
# ## 3. Start-up is not the run
#
# Starting an engine can cost more than the work itself at these sizes. The harness times it apart
# (`startup_s`), so the run time compares the architectures, and the start-up is still on record.

# %%
import matplotlib.pyplot as plt

phases = ok[ok["size"] == SIZES[-1]].groupby(["engine", "workload"])[["startup_s", "run_s"]].median()
phases.plot.barh(stacked=True, figsize=(9, 0.35 * len(phases) + 1), title="start-up and run (medians)")
plt.xlabel("seconds")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 4. The harness's own figures
#
# `archbench plot DIR` draws from the rows only — the same functions, called here.

# %%
from IPython.display import Image, display

from harness.plot import plot_run

for path in plot_run(out):
    if path.name in ("throughput.png", "phases.png", "scaling.png"):
        display(Image(filename=str(path)))

# %% [markdown]
# ## 5. The committed example run
#
# `results/example/` is a run made once on a 2-core machine like CI's — medium size, 1 and 2 workers,
# every engine, with traces — and committed with the project, so its rows can be read without running
# anything (its `report.md`, figures and timelines are beside them). Its rows read like yours:

# %%
example = lessons.example_run()
ex = pd.read_json(example / "results.jsonl", lines=True)
ex_ok = ex[(ex.status == "ok") & (ex.purpose == "timed")]
ex_ok.groupby(["workload", "engine", "workers"])["run_s"].median().unstack("workers").round(3)

# %% [markdown]
# Its figures, drawn again here from its rows (in a scratch folder: the committed run stays as it is).
# At medium size a second worker pays on the dataflow engines, and start-ups (Spark's JVM, Ray's cluster)
# are small beside the work — unlike at `tiny` above.

# %%
import shutil

scratch = Path(tempfile.mkdtemp(prefix="lesson-example-"))
for name in ("results.jsonl", "manifest.json"):
    shutil.copy(example / name, scratch / name)
shutil.copytree(example / "latencies", scratch / "latencies")
for path in plot_run(scratch):
    if path.name in ("scaling.png", "phases.png"):
        display(Image(filename=str(path)))

# %% [markdown]
# ## Exercise
#
# From `df`, compute for each engine its **speed-up** on `wordcount` at size `SIZES[-1]`: the median
# run time with 1 worker divided by the median with 2 workers. Put a dict `{engine: speed-up}` in
# `answer` (only engines with both worker counts).

# %%
answer = None   # your dict here

# %% tags=["solution"]
if lessons.solutions():
    wc = ok[(ok.workload == "wordcount") & (ok["size"] == SIZES[-1])]
    by = wc.groupby(["engine", "workers"])["run_s"].median().unstack("workers").dropna()
    answer = (by[1] / by[2]).to_dict()

# %%
wc_rows = [r for r in rows if r["workload"] == "wordcount" and r["size"] == SIZES[-1] and r["status"] == "ok"]
import statistics

want = {}
for engine in {r["engine"] for r in wc_rows}:
    one = [r["run_s"] for r in wc_rows if r["engine"] == engine and r["workers"] == 1]
    two = [r["run_s"] for r in wc_rows if r["engine"] == engine and r["workers"] == 2]
    if one and two:
        want[engine] = statistics.median(one) / statistics.median(two)
lessons.check("speed-up per engine", answer, want)

# %% [markdown]
# **Going further.** A speed-up below 1 at `tiny` is not an engine being slow: the work is too small to
# pay for a second worker. Rerun with `ARCHBENCH_LESSON_SIZE=small` and compare; then read
# `results/README.md` for what `latency_p50_s` means for each model.
