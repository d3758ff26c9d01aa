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
# # Lesson 1 — Data parallel: identical workers, partitions, the exchange by key
#
# **Learning goals.** By the end of this lesson you can
#
# 1. say what every worker of a data-parallel engine runs (every step, on its share of the data);
# 2. point, in a timeline, at the *exchange*: the moment records cross from worker to worker by key;
# 3. explain why the sending side combines before it sends, and what a skewed key does to the workers;
# 4. run the same flow from the command line, the way Bytewax's run script does.
#
# **The textbook** is the docstring of `engines/mini/dataparallel.py` (read it beside this lesson) and of
# `engines/plan.py` (the compiled plan every engine runs, and the shared pieces: fusing narrow steps,
# splitting by owner, merging).
# Spark, Bytewax and Flink are built this way.

# %%
import inspect
import operator
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from engines import get_engine
from engines.api import Dataflow
from harness import lessons

N = lessons.scale(tiny=2_000, small=200_000)   # words in the text (ARCHBENCH_LESSON_SIZE=tiny in CI)
print(f"lesson size: {lessons.size()}, {N:,} words")

# %% [markdown]
# ## 1. A flow is a definition
#
# A `Dataflow` is a frozen description: building it runs nothing. Partitions may be callables: they
# are called **on the worker** that owns them, so the data never passes through the driver.

# %%
import functools
import random

WORDS = ["data", "task", "actor", "shuffle", "key", "worker", "driver", "batch", "stream", "window"]


def text(part: int, n: int) -> list[str]:
    """Partition ``part``: ``n`` words in lines of ten, the same on every run."""
    rng = random.Random(part)
    words = rng.choices(WORDS, weights=range(len(WORDS), 0, -1), k=n)
    return [" ".join(words[i:i + 10]) for i in range(0, n, 10)]


def wordcount(partitions: int = 4) -> Dataflow:
    flow = Dataflow("wordcount")
    lines = flow.read([functools.partial(text, p, N // partitions) for p in range(partitions)])
    lines.flat_map(str.split).count_by_key().collect("counts")
    return flow


flow = wordcount()
[(step.op, step.name) for step in flow.steps]

# %% [markdown]
# `count_by_key` is not a core step: it is a `map` to `(word, 1)` and a `reduce_by_key` — the flow has
# two narrow steps (`flat_map`) and one keyed step. The keyed step is where the exchange happens.
#
# Every engine runs the flow's **compiled plan**, not its steps: `engines.plan.compile` fuses each
# chain of narrow steps into the *pipe* in front of the next stage, and cuts a stage at each keyed
# step (a shuffle) and each sink. Read it as "stage ← the stage it reads | the narrow steps on the way":

# %%
from engines.plan import compile

for stage in compile(flow).stages:
    print(stage)

# %% [markdown]
# Three stages: the read, the reduce (whose *map side* runs `read | flat_map | count_by_key` fused in
# one loop, then splits by owner), and the sink.
#
# ## 2. The deterministic form, in this process
#
# Every runtime of the mini engine has an in-process form: the same workers, as objects, messages
# delivered one at a time. It gives the same answer every time and is the place to debug.

# %%
with get_engine("mini-data").start(workers=2, processes=False) as session:
    counts = dict(session.dataflow(flow)["counts"])
sorted(counts.items(), key=lambda kv: -kv[1])[:5]

# %% [markdown]
# ## 3. Two worker processes, traced
#
# Now the real thing: two worker processes and a mesh of sockets between them. The trace is recorded
# by the engine's own tracer; each bar is a worker running one fused chain of steps, each vertical tick
# is bytes sent from one worker to another (or to the driver).

# %%
with get_engine("mini-data").start(workers=2) as session:
    out, trace = lessons.traced(session, lambda: session.dataflow(flow))
assert dict(out["counts"]) == counts            # the same answer as the in-process form
lessons.show(trace)

# %% [markdown]
# Read the picture: both workers are busy **at the same time** (that is the parallelism), each
# running `read → flat_map → count` on its own partitions (the `split` bars), then a short `merge`
# once every worker's end-of-input marker has arrived. The ticks between the worker lanes are the
# exchange. How many bytes crossed each link?

# %%
{f"{a} → {b}": f"{n:,} B" for (a, b), n in lessons.moved(trace).items()}

# %% [markdown]
# Few bytes for so many words: each worker **combined on the sending side** — one `(word, count)`
# per distinct word leaves a worker, not one per occurrence. Here is the whole data-parallel
# architecture, as one worker runs it: a generator that yields at each exchange.

# %%
from engines.mini import dataparallel

print(inspect.getsource(dataparallel.program))

# %% [markdown]
# ## 4. A skewed key
#
# Each key has one owner: `stable_hash(key) % workers`. When one key holds most of the records, its
# owner gets most of them in the exchange. A reduce would hide this -- the sending side combines a
# key's records into one -- so we *join* each record with a small table instead: a join cannot be
# combined before it is sent, so every record travels to its key's owner.

# %%
def keyed(part: int, n: int, hot: float) -> list:
    rng = random.Random(part)
    return [("hot" if rng.random() < hot else f"k{rng.randrange(1000)}", i) for i in range(n)]


TABLE = [("hot", "H")] + [(f"k{i}", "K") for i in range(1000)]


def skewed(hot: float) -> Dataflow:
    f = Dataflow(f"skew-{hot}")
    rows = f.read([functools.partial(keyed, p, N // 4, hot) for p in range(4)])
    rows.join(f.read([TABLE])).map(lambda kv: (kv[1][1], 1)).reduce_by_key(operator.add).collect("out")
    return f


with get_engine("mini-data").start(workers=2) as session:
    _, even = lessons.traced(session, lambda: session.dataflow(skewed(0.0)), workload="uniform keys")
    _, hot = lessons.traced(session, lambda: session.dataflow(skewed(0.9)), workload="90 % one key")
lessons.show(even, hot, titles=["uniform keys", "90 % of the records have one key"])

# %% [markdown]
# With one hot key the exchange is lopsided: look at the bytes each worker *received* from the other,
# and at the merge bars above -- the hot key's owner works while the other waits.

# %%
for name, t in (("uniform", even), ("hot key", hot)):
    received = {}
    for (src, dst), n in lessons.moved(t).items():
        if dst.startswith("worker") and src != dst:
            received[dst] = received.get(dst, 0) + n
    print(f"{name:8}", {lane: f"{n:,} B" for lane, n in sorted(received.items())})

# %% [markdown]
# ## 5. The run script
#
# A flow module can be run from the command line, as `python -m bytewax.run` runs Bytewax flows.
# `-w 2` starts two worker processes; with `-i`/`-a` the same command makes a cluster of several
# processes or hosts (see `engines/mini/run.py`).

# %%
folder = Path(tempfile.mkdtemp())
(folder / "my_flow.py").write_text('''
from engines.api import Dataflow
flow = Dataflow("letters")
flow.read([["a b a", "c"], ["b a"]]).flat_map(str.split).count_by_key().collect("counts")
''')
env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), os.getcwd(), os.environ.get("PYTHONPATH", "")])}
done = subprocess.run([sys.executable, "-m", "engines.mini.run", "my_flow", "-w", "2"], cwd=folder, env=env,
                      capture_output=True, text=True, timeout=120)
print(done.stdout or done.stderr)

# %% [markdown]
# ## Exercise
#
# Build a flow over the same `text` partitions that gives, for each **first letter**, how many words
# **longer than four letters** start with it: items `(letter, count)`, collected into a sink named
# `"letters"`. Put your flow in `answer` (replace `None`), then run the check cell.

# %%
answer = None   # your Dataflow here

# %% tags=["solution"]
if lessons.solutions():
    answer = Dataflow("letters")
    answer.read([functools.partial(text, p, N // 4) for p in range(4)]).flat_map(str.split) \
        .filter(lambda w: len(w) > 4).count_by_key(key=lambda w: w[0]).collect("letters")

# %%
want = {}
for p in range(4):
    for line in text(p, N // 4):
        for w in line.split():
            if len(w) > 4:
                want[w[0]] = want.get(w[0], 0) + 1
got = None
if answer is not None:
    with get_engine("mini-data").start(workers=2) as session:
        got = sorted(session.dataflow(answer).get("letters", []))
lessons.check("letters of long words", got, sorted(want.items()))

# %% [markdown]
# **Going further.** Run the exercise with `workers=1` and `workers=2` and compare the timelines;
# then read `engines/mini/dataparallel.py`'s `DataWorker` to see how the end-of-input markers tell a
# worker that it holds every record of its keys.
