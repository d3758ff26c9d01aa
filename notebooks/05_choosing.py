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
# # Lesson 5 — Choosing an architecture, and defending the choice
#
# **Learning goals.** By the end of this lesson you can
#
# 1. read a verdict: the winner, by how much, and whether the difference is *significant*;
# 2. say why three repeats can never prove a difference, and how many would;
# 3. write your own workload and get a verdict for it with `archbench choose`;
# 4. explain why the answer can change with the input size or the number of workers.
#
# **The textbook**: `harness/stats.py` (intervals and the Mann–Whitney test, from scipy) and
# `harness/choice.py` (how a hypothesis is marked confirmed, refuted or undecided).

# %%
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import lessons
from harness.stats import compare, median_interval

ENGINES = "serial,mini-data,mini-tasks,mini-actors"

# %% [markdown]
# ## 1. The verdicts of the example run
#
# `results/example/` is a run committed with the project (medium size, 1 and 2 workers, every engine).
# `archbench report` wrote its verdicts to `report.md` and, for programs, to `choice.json`: per workload
# the fastest engine and its architecture, the ratio of the runner-up to it, whether that difference is
# significant, and whether the workload's hypothesis held.

# %%
import pandas as pd

example = json.loads((lessons.example_run() / "choice.json").read_text())
pd.DataFrame(example["workloads"]).T[["winner", "architecture", "ratio_to_next", "significant", "hypothesis"]]

# %% [markdown]
# Per *trait* — what the workloads have in common — the architecture that won across them:

# %%
pd.DataFrame(example["traits"]).T

# %% [markdown]
# ## 2. What three repeats can say
#
# Two engines, three run times each, one clearly faster. Is the difference *significant*?

# %%
fast, slow = [1.00, 1.02, 0.99], [1.50, 1.48, 1.52]
print(compare(fast, slow))
print("the median of 'fast' lies in", median_interval(fast))

# %% [markdown]
# No: with three values per side, the smallest p-value a two-sided Mann–Whitney test can reach is 0.1,
# so no difference can be significant at 0.05 — the test says so, and how many repeats would decide.
# The interval of a median from three values is [min, max], and it covers the true median only 75 % of
# the time. With five repeats each:

# %%
print(compare(fast + [1.01, 1.0], slow + [1.49, 1.51]))

# %% [markdown]
# ## 3. Your own workload, and `archbench choose`
#
# A workload is a class: inputs, a plain-Python reference, the program against the session's models.
# It may declare what the verdict judges it by: `traits`, `expect` (the architecture its hypothesis
# says should win) and `judge_by`. Below is one; `archbench choose` runs it on several engines at two
# sizes with 1 and 2 workers, and writes the verdict.

# %%
WORKLOAD = '''
"""Sessions: page views grouped into per-user counts, then joined with the users' countries."""
import functools
import operator
import random

from engines.api import Dataflow
from workloads import Workload


def views(part, n):
    rng = random.Random(part)
    return [(f"u{rng.randrange(500)}", 1) for _ in range(n)]


class Sessions(Workload):
    name = "lesson-sessions"
    model = "dataflow"
    unit = "views"
    traits = ("shuffle-heavy",)
    expect = "data parallel"
    sizes = {s: {"n": n} for s, n in {"tiny": 2_000, "small": 40_000, "medium": 400_000, "large": 4_000_000}.items()}

    def generate(self, *, seed, n):
        return {"n": n}

    def _parts(self, inputs):
        return [functools.partial(views, p, inputs["n"] // 4) for p in range(4)]

    def reference(self, inputs):
        counts = {}
        for part in self._parts(inputs):
            for user, one in part():
                counts[user] = counts.get(user, 0) + one
        return {"by_country": [(u, (c, f"c{int(u[1:]) % 7}")) for u, c in counts.items()]}

    def run(self, session, inputs):
        flow = Dataflow("sessions")
        countries = flow.read([[(f"u{i}", f"c{i % 7}") for i in range(500)]])
        flow.read(self._parts(inputs)).reduce_by_key(operator.add).join(countries).collect("by_country")
        return session.dataflow(flow)

    def units(self, inputs):
        return inputs["n"]
'''
folder = Path(tempfile.mkdtemp(prefix="lesson-choose-"))
(folder / "sessions.py").write_text(WORKLOAD)
done = subprocess.run([sys.executable, "-m", "harness", "choose", "--workload-file", str(folder / "sessions.py"),
                       "--engines", ENGINES, "--out", str(folder / "run")], capture_output=True, text=True,
                      timeout=900)
print(done.stdout[-1500:] if done.returncode == 0 else done.stderr[-1500:])

# %% [markdown]
# The verdict names the fastest engine, the architecture to choose and every architecture's best
# ratio to the fastest; then it judges the hypothesis. The same is in `choice.json`:

# %%
verdict = json.loads((folder / "run" / "choice.json").read_text())["workloads"]["lesson-sessions"]
{k: verdict[k] for k in ("size", "workers", "winner", "architecture", "ratio_to_next", "significant", "hypothesis")}

# %% [markdown]
# ## 4. When the answer changes
#
# The verdict is judged at the largest size and worker count of the run. At the smallest, the
# ranking is often different: a start-up or a per-task cost that is paid once weighs more when the
# work is small. Compare the two rankings from the same run:

# %%
df = pd.read_json(folder / "run" / "results.jsonl", lines=True)
ok = df[(df.status == "ok") & (df.purpose == "timed")]
ok.groupby(["size", "workers", "engine"])["run_s"].median().unstack("engine").round(4)

# %% [markdown]
# The run's own figures show it: throughput against workers (dashed: the ideal from one worker) and run
# time against input size, where an engine with a fixed start-up cost is flat, then rises.

# %%
from IPython.display import Image, display

for name in ("scaling.png", "growth.png"):
    if (folder / "run" / name).exists():
        display(Image(filename=str(folder / "run" / name)))

# %% [markdown]
# ## Exercise
#
# From the table above: at size `tiny` with 2 workers, which engine has the lowest median run time?
# Put its name in `answer`.

# %%
answer = None   # an engine name

# %% tags=["solution"]
if lessons.solutions():
    answer = ok[(ok["size"] == "tiny") & (ok.workers == 2)].groupby("engine")["run_s"].median().idxmin()

# %%
tiny2 = ok[(ok["size"] == "tiny") & (ok.workers == 2)].groupby("engine")["run_s"].median()
lessons.check("the fastest engine at tiny with 2 workers", answer, tiny2.idxmin())

# %% [markdown]
# **Going further.** Give your workload a heavier `reference`-sized input (`medium`) and run
# `archbench choose` again with `--repeat 5`: does the verdict become significant? Which of the
# assumptions listed under "What would change the answer" in the report did it depend on?
