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
# # Lesson 3 — Actors: state that lives somewhere, and messages to it
#
# **Learning goals.** By the end of this lesson you can
#
# 1. say what an actor is (an object in a worker process, with a mailbox handled one message at a time);
# 2. tell `call` (ask: a Future of the reply) from `tell` (send and forget), and when each is right;
# 3. pass a ref to another actor so messages go actor to actor, never through the driver;
# 4. explain supervision: what happens to an actor whose host dies;
# 5. run the same actor program on archbench's `mini-actors` and on Ray, and compare their timelines.
#
# **The textbook** is the docstring of `engines/mini/messaging.py` (the actor runtime as plain data: mailboxes,
# credit, supervision, with a worked example) and of `engines/mini/actors.py` (the modules around it, in
# reading order); the contract is in `engines/api.py` (`Actors`, `ActorRef`).

# %%
import os
import signal
import time

from engines import get_engine
from engines.api import ActorError
from harness import lessons

ROUNDS = lessons.scale(tiny=50, small=2_000)
print(f"lesson size: {lessons.size()}, {ROUNDS} messages")


# %% [markdown]
# ## 1. An actor keeps its state between messages

# %%
class Counter:
    def __init__(self, start=0):
        self.n = start

    def add(self, k=1):
        self.n += k
        return self.n

    def where(self):
        return os.getpid()

    def nap(self, seconds):
        time.sleep(seconds)
        return self.n


with get_engine("mini-actors").start(workers=2) as session, session.actors() as actors:
    counter = actors.spawn(Counter, 100)
    for _ in range(5):
        counter.tell("add", 2)                       # tell: nothing comes back
    print("after five tells and one call:", counter.call("add", 0).result())   # the tells came first
    print("the actor lives in process", counter.call("where").result(), "-- the driver is", os.getpid())
    try:
        counter.add(1)                                # a method is never called directly on a ref
    except AttributeError as e:
        print("AttributeError:", e)


# %% [markdown]
# Messages from one sender to one actor arrive in the order sent, so the five `tell`s were handled
# before the `call`. Calling a method directly on a ref is refused with the fix in the message.
#
# ## 2. Actor to actor: a relay ring
#
# Each `Relay` holds a ref to the next one and `tell`s it; the driver only starts the token and asks
# the last hop. The messages travel worker to worker.

# %%
class Relay:
    def __init__(self):
        self.next, self.seen = None, 0

    def link(self, other):
        self.next = other
        return True

    def hop(self, token, left):
        self.seen += 1
        if left > 0:
            self.next.tell("hop", token + 1, left - 1)

    def count(self):
        return self.seen


def ring(actors, size=4, rounds=ROUNDS):
    relays = [actors.spawn(Relay) for _ in range(size)]
    actors.gather([r.call("link", relays[(i + 1) % size]) for i, r in enumerate(relays)])
    relays[0].tell("hop", 0, rounds - 1)
    seen = 0
    while seen < rounds:                                   # ask until every hop has landed
        seen = sum(actors.gather([r.call("count") for r in relays]))
    return seen


with get_engine("mini-actors").start(workers=2) as session:
    def run():
        with session.actors() as actors:
            return ring(actors)
    hops, mini = lessons.traced(session, run)
print(hops, "hops")
traces, titles = [mini], ["mini-actors: relays on two workers"]

ray = get_engine("ray")
ok, why = ray.available()
if ok:
    with ray.start(workers=2) as session:
        def run_on_ray():
            with session.actors() as actors:
                return ring(actors)
        hops_on_ray, on_ray = lessons.traced(session, run_on_ray)
    assert hops_on_ray == hops
    traces.append(on_ray)
    titles.append("Ray: the same program, an actor per process")
else:
    print(f"Ray is not here ({why}): only mini-actors is drawn")
lessons.show(*traces, titles=titles, shared_axis=False)

# %% [markdown]
# Each green bar is one message handled. On `mini-actors` the relays are light objects, many to a
# worker process; the ticks between worker lanes are messages going actor to actor. Ray starts a
# process per actor, so its lanes are processes, and each hop crosses one (each panel has its own
# time axis: compare the numbers on them).
#
# ## 3. Supervision: the host dies, the actor comes back fresh
#
# We kill the worker process that hosts a counter while it handles a long call. The call in flight fails, naming the actor, the
# method and the cause; the driver, which supervises, restarts the actor on a live worker — with **fresh** state:
# the constructor runs again. State that must survive a crash has to be saved somewhere else.

# %%
with get_engine("mini-actors").start(workers=2) as session, session.actors() as actors:
    counter = actors.spawn(Counter, 100, worker=1)
    print([counter.call("add").result() for _ in range(3)])
    host = counter.call("where").result()
    in_flight = counter.call("nap", 30)       # certainly still running when its host dies
    session.driver.flush()
    os.kill(host, signal.SIGKILL)
    try:
        print("the call in flight:", in_flight.result(timeout=20))
    except ActorError as e:
        print("ActorError:", str(e).splitlines()[0][:200])
    print("after the restart:", counter.call("add").result(timeout=20), "in process", counter.call("where").result())

# %% [markdown]
# ## Exercise
#
# Write a class `Bank` whose actor keeps balances per account: `deposit(account, amount)` returns the
# new balance of that account, and `total()` returns the sum of all balances. Put the class in
# `answer` (replace `None`); the check cell sends it messages on `mini-actors`.

# %%
answer = None   # your class here

# %% tags=["solution"]
if lessons.solutions():
    class Bank:
        def __init__(self):
            self.balances = {}

        def deposit(self, account, amount):
            self.balances[account] = self.balances.get(account, 0) + amount
            return self.balances[account]

        def total(self):
            return sum(self.balances.values())

    answer = Bank

# %%
got = None
if answer is not None:
    with get_engine("mini-actors").start(workers=2) as session, session.actors() as actors:
        bank = actors.spawn(answer)
        for i in range(30):
            bank.tell("deposit", f"acct-{i % 3}", i)
        got = {"acct-0": bank.call("deposit", "acct-0", 0).result(), "total": bank.call("total").result()}
lessons.check("a bank actor", got, {"acct-0": sum(range(0, 30, 3)), "total": sum(range(30))})

# %% [markdown]
# **Going further.** Give the `Bank` a ref to an `Auditor` actor and `tell` it every deposit from
# inside `deposit`: the audit trail then travels actor to actor. Then kill the bank's host as in §3 —
# what does the auditor still know that the restarted bank has forgotten?
