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
# # Lesson 2 — Task parallel: a scheduler walks a graph
#
# **Learning goals.** By the end of this lesson you can
#
# 1. step a task scheduler's state by hand and say why it placed each task where it did;
# 2. read a task-parallel timeline: the scheduler's decisions, the workers' tasks, the transfers;
# 3. compare the same graph on archbench's `mini-tasks` and on Dask;
# 4. explain **lineage**: how a lost worker's results are made again from their recipes.
#
# **The textbook** is the docstring of `engines/mini/scheduler.py` — the whole scheduler as plain
# data and verbs, in the manner of Dask's `dask/local.py` — and `engines/mini/taskparallel.py`.

# %%
import operator
import os
import signal
import time

from engines import get_engine
from engines.mini import scheduler
from harness import lessons

SPIN = lessons.scale(tiny=20_000, small=300_000)    # the work in one leaf task
print(f"lesson size: {lessons.size()}")

# %% [markdown]
# ## 1. The scheduler's state, by hand
#
# The scheduler is a dict of plain data and a few verbs that change it. Nothing here runs a task:
# the verbs leave messages for workers in `state["outbox"]`. Two workers; task `a` has no inputs,
# `b` needs `a`.

# %%
state = scheduler.new_state([0, 1])
fid = scheduler.function_id(state, operator.add)
scheduler.submit(state, "a", fid, (1, 2), {}, (), 0)
scheduler.submit(state, "b", fid, (None, 10), {}, ((0, "a"),), 0)    # add(<a's value>, 10)
{"where": state["where"], "waiting": state["waiting"], "to worker 0": [m[:2] for m in state["outbox"][0]]}

# %% [markdown]
# `a` went to a worker at once; `b` waits *here* for `a` (nothing is known of `add` yet: it might be
# long). Worker 0 now reports `a` done, 28 bytes, in 0.1 ms — and `b` is placed where `a`'s bytes are:

# %%
state["outbox"] = {0: [], 1: []}
scheduler.report(state, 0, [("done", "a", 28, 0.0001, None)])
{"where": state["where"], "who_has": state["who_has"], "to worker 0": [m[:2] for m in state["outbox"][0]]}

# %% [markdown]
# ## 2. A graph on two worker processes
#
# Leaves that compute, then a tree of merges. Each task's result stays on the worker that made it;
# a merge fetches its inputs from the peers that hold them — the driver sees only keys and sizes.

# %%
def leaf(i: int, spin: int) -> int:
    x = i
    for _ in range(spin):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
    return x


def merge(*xs: int) -> int:
    return sum(xs) & 0x7FFFFFFF


def graph(tasks, leaves: int = 8):
    level = [tasks.submit(leaf, i, SPIN) for i in range(leaves)]
    while len(level) > 1:
        level = [tasks.submit(merge, *level[j:j + 2]) for j in range(0, len(level), 2)]
    return level[0].result()


want = merge(*[merge(*[merge(leaf(i, SPIN), leaf(i + 1, SPIN)) for i in range(j, j + 4, 2)])
               for j in (0, 4)])


def run_graph(session):
    with session.tasks() as tasks:
        return graph(tasks)


with get_engine("mini-tasks").start(workers=2) as session:
    got, mini = lessons.traced(session, lambda: run_graph(session))
assert got == want
traces, titles = [mini], ["mini-tasks"]

dask = get_engine("dask")
ok, why = dask.available()
if ok:
    with dask.start(workers=2) as session:
        got, on_dask = lessons.traced(session, lambda: run_graph(session))
    assert got == want
    traces.append(on_dask)
    titles.append("Dask (its task stream)")
else:
    print(f"Dask is not here ({why}): only mini-tasks is drawn")
lessons.show(*traces, titles=titles)

# %% [markdown]
# In `mini-tasks` the **scheduler** lane shows each batch of decisions (purple); the ticks from the
# driver are the batches of `run` messages it sent. Both workers compute the leaves at once; the
# merges follow as soon as their inputs exist.
#
# ## 3. A worker lost mid-graph: lineage
#
# Now we kill worker 1 (SIGKILL: no goodbye) once a few leaves have finished. The results it held are
# gone — but the scheduler kept every task's *spec*, so it places the lost tasks again on the
# survivor, and makes again any lost result that something still needs.

# %%
with get_engine("mini-tasks").start(workers=2) as session:
    def killed_mid_graph():
        with session.tasks() as tasks:
            leaves = [tasks.submit(leaf, i, SPIN) for i in range(8)]
            while sum(f.done() for f in leaves) < 3:
                time.sleep(0.001)
            os.kill(session.worker_pids[1], signal.SIGKILL)
            level = leaves
            while len(level) > 1:
                level = [tasks.submit(merge, *level[j:j + 2]) for j in range(0, len(level), 2)]
            return level[0].result()

    got, lost = lessons.traced(session, killed_mid_graph)
    print("lost workers:", session._state["lost"])
assert got == want      # the right answer, from the survivor
lessons.show(lost, titles=["worker 1 killed after three leaves (its trace died with it): worker 0 runs the rest, and again what was lost"])

# %% [markdown]
# ## Exercise
#
# Write `chain(tasks, n)`: a chain of `n` tasks where task `k` computes `leaf(k, 1000) + <the result of
# task k-1>` (task 0 adds nothing), passing each Future to the next so the scheduler sees the
# dependency. Return the last task's value. Then the check cell runs it on `mini-tasks`.

# %%
chain = None   # your function here: def chain(tasks, n): ...

# %% tags=["solution"]
if lessons.solutions():
    def step(k, before):
        return leaf(k, 1000) + before

    def chain(tasks, n):
        f = tasks.submit(step, 0, 0)
        for k in range(1, n):
            f = tasks.submit(step, k, f)
        return f.result()

# %%
n = 20
got = None
if chain is not None:
    with get_engine("mini-tasks").start(workers=2) as session, session.tasks() as tasks:
        got = chain(tasks, n)
lessons.check("a chain of dependent tasks", got, sum(leaf(k, 1000) for k in range(n)))

# %% [markdown]
# **Going further.** Trace your chain with `lessons.traced` and look at where its links ran: the
# scheduler places a chain of *short* tasks on one worker ahead of their inputs (read "Placing" in
# `engines/mini/scheduler.py`), so no link waits for a round trip through the driver.
