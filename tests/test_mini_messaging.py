"""mini-actors' messaging core (engines/mini/messaging.py): its verbs on plain data, no processes, no threads.

A driver and two workers are three states; `wire` carries what each
queued to its destination, in order, as the sockets would; `run` plays a
worker's shell: it builds each woken actor from its recipe and handles
its mailbox one message at a time. So ordering, credit and supervision are
checked deterministically here; test_mini_actors.py checks the same
properties through the real shells, with processes.
"""

from __future__ import annotations

import pickle

import pytest

from engines.api import ActorError
from engines.mini import messaging as m


class Counter:
    def __init__(self, start=0):
        self.n = start

    def add(self, k):
        self.n += k
        return self.n


class Journal:
    def __init__(self):
        self.entries = []

    def note(self, who, i):
        self.entries.append((who, i))


def cluster(window=4):
    procs = {p: m.new_state(p, [0, 1], window=window, clock=lambda: 0.0) for p in ("driver", 0, 1)}
    objects = {0: {}, 1: {}}

    def wire():
        moved = True
        while moved:
            moved = False
            for state in procs.values():
                for dest, messages in m.take_outbox(state)[0].items():
                    moved = True
                    for message in messages:
                        m.receive(procs[dest], state["me"], message)

    def run(w):
        """Worker ``w``'s shell: build what was spawned, handle every mailbox that has mail."""
        state = procs[w]
        while state["wake"]:
            hosted, item = state["wake"].pop(0)
            if hosted["aid"] not in objects[w]:
                cls, args, kwargs = pickle.loads(hosted["recipe"])
                objects[w][hosted["aid"]] = cls(*args, **kwargs)
            if item is None:
                item = m.next_message(state, hosted)
            while item is not None:
                source, (_, aid, cid, method, payload), _ = item
                args, kwargs = pickle.loads(payload)
                value = getattr(objects[w][aid], method)(*args, **kwargs)
                item = m.handled(state, hosted, source, cid, True, pickle.dumps(value))

    return procs, wire, run


def spawn(driver, cls, *args, worker=None, max_restarts=3):
    return m.spawn(driver, cls.__name__, pickle.dumps((cls, args, {})), worker, max_restarts)


def send(state, aid, home, method, *args, waiter=None, flow=True):
    return m.send(state, aid, aid.rsplit("-", 1)[0], home, method, pickle.dumps((args, {})), waiter, flow)


def settled(state) -> dict:
    """``{waiter: value or error}`` of the calls answered so far, leaving none."""
    out = {w: pickle.loads(p) if type(p) is bytes else p for w, ok, p, _, _ in state["outcomes"]}
    state["outcomes"] = []
    return out


# ---------------------------------------------------------------- mailboxes and ordering


def test_each_senders_messages_reach_the_mailbox_in_order_even_before_the_spawn():
    procs, wire, run = cluster(window=0)
    driver, w0, w1 = procs["driver"], procs[0], procs[1]
    m.deliver(w0, 1, ("msg", "Journal-1", None, "note", pickle.dumps((("w1", 0), {}))))   # overtakes the spawn
    aid, home = spawn(driver, Journal, worker=0)
    for i in range(3):
        send(driver, aid, home, "note", "driver", i)
        send(w1, aid, home, "note", "w1", i + 1)
    wire()
    mailbox = [(source, pickle.loads(msg[4])[0]) for source, msg, _ in w0["hosted"][aid]["mailbox"]]
    assert [a for s, a in mailbox if s == "driver"] == [("driver", i) for i in range(3)]
    assert [a for s, a in mailbox if s == 1] == [("w1", i) for i in range(4)]
    run(0)
    assert not w0["hosted"][aid]["mailbox"] and w0["hosted"][aid]["idle"]


def test_a_message_to_an_actor_of_the_same_worker_goes_straight_into_its_mailbox():
    procs, wire, run = cluster()
    aid, home = spawn(procs["driver"], Counter, worker=0)
    wire()
    run(0)
    send(procs[0], aid, home, "add", 1, waiter="mine")
    assert procs[0]["outbox"] == {} and [(h["aid"], item[1][3]) for h, item in procs[0]["wake"]] == [(aid, "add")]
    run(0)
    assert settled(procs[0]) == {"mine": 1}


# ---------------------------------------------------------------- back-pressure


def test_a_sender_out_of_credit_waits_until_the_actor_has_handled_half_a_window():
    procs, wire, run = cluster(window=4)
    driver = procs["driver"]
    aid, home = spawn(driver, Counter, worker=1)
    assert [send(driver, aid, home, "add", 1) for _ in range(5)] == [True] * 4 + [False]
    assert not m.can_send(driver, aid, "Counter", home)
    assert send(driver, aid, home, "add", 1, flow=False)          # the engine's own messages never wait
    wire()
    run(1)                                                        # 5 handled: one credit, after 2, and one after 4
    credits = [msg for msg in procs[1]["outbox"]["driver"] if msg[0] == "credit"]
    assert credits == [("credit", aid, 0, 2), ("credit", aid, 0, 4)]
    wire()
    assert driver["credit"][aid] == [0, 4, 4] and m.can_send(driver, aid, "Counter", home)
    assert "back-pressure: Counter actor Counter-1 has not handled 4 messages from the driver in 60 s" in \
        str(m.why_waiting(driver, aid, "Counter", home, 60))


def test_credit_for_an_old_incarnation_is_ignored_and_a_new_one_starts_with_a_full_window():
    procs, wire, run = cluster(window=2)
    driver = procs["driver"]
    aid, home = spawn(driver, Counter, worker=0)
    assert [send(driver, aid, home, "add", 1) for _ in range(3)] == [True, True, False]
    m.receive(driver, 0, ("lost", 0, "worker 0 was killed by SIGKILL"))
    assert [send(driver, aid, home, "add", 1) for _ in range(3)] == [True, True, False]    # to incarnation 1
    m.credited(driver, aid, 0, 2)                                 # late, from the dead incarnation 0
    assert driver["credit"][aid] == [1, 2, 0] and not m.can_send(driver, aid, "Counter", home)
    m.credited(driver, aid, 1, 2)
    assert m.can_send(driver, aid, "Counter", home)


# ---------------------------------------------------------------- supervision


def test_a_lost_host_fails_its_calls_naming_the_actor_and_the_restart_has_fresh_state():
    procs, wire, run = cluster()
    driver = procs["driver"]
    aid, home = spawn(driver, Counter, 100, worker=0)
    send(driver, aid, home, "add", 5, waiter="before")
    wire()
    run(0)
    wire()
    assert settled(driver) == {"before": 105}
    send(driver, aid, home, "add", 1, waiter="in flight")
    wire()                                                        # delivered, never answered: worker 0 dies
    m.receive(driver, 0, ("lost", 0, "worker 0 (pid 42) was killed by SIGKILL"))
    m.receive(procs[1], 0, ("lost", 0, "worker 0 (pid 42) was killed by SIGKILL"))
    error = settled(driver)["in flight"]
    assert isinstance(error, ActorError)
    assert str(error) == ("Counter actor Counter-1: add() was lost in flight: its host worker 0 (pid 42) was killed by "
                          "SIGKILL. The actor was restarted on worker 1 with fresh state (restart 1 of 3); call again "
                          "to reach it.")
    wire()
    run(1)
    assert procs[1]["where"][aid][:2] == (1, 1)                   # worker 1 knows the new route
    send(driver, aid, home, "add", 1, waiter="after")             # the ref still says home 0: routed by ``where``
    wire()
    run(1)
    wire()
    assert settled(driver) == {"after": 101}                      # the constructor ran again: 100, not 105


def test_a_worker_that_learns_of_a_move_fails_its_own_calls_to_the_old_place():
    procs, wire, run = cluster()
    aid, home = spawn(procs["driver"], Counter, worker=0)
    wire()
    send(procs[1], aid, home, "add", 1, waiter="from worker 1")
    m.moved(procs[1], [(aid, (1, 1, "restarted on worker 1 with fresh state (restart 1 of 3)"))])
    assert str(settled(procs[1])["from worker 1"]).startswith(
        "Counter actor Counter-1: add() was lost in flight: its host worker 0 was lost. The driver restarts it")


def test_restarts_are_limited_and_a_dead_actor_says_why():
    procs, wire, run = cluster()
    driver = procs["driver"]
    aid, home = spawn(driver, Counter, worker=0, max_restarts=0)
    m.lose_worker(driver, 0, "worker 0 was killed by SIGKILL")
    assert driver["where"][aid] == (None, 1, "its host worker 0 was killed by SIGKILL, and it was not restarted "
                                             "(max_restarts=0 reached)")
    with pytest.raises(ActorError, match=r"Counter actor Counter-1 is stopped: its host worker 0 .*max_restarts=0"):
        send(driver, aid, home, "add", 1)
    with pytest.raises(ActorError, match=r"cannot spawn Counter on worker 0: it is lost.*live workers: \[1\]"):
        spawn(driver, Counter, worker=0)
    assert spawn(driver, Counter) == ("Counter-2", 1)             # placement skips the lost worker


# ---------------------------------------------------------------- retiring


def test_a_retired_actor_handles_what_came_before_and_refuses_the_rest():
    procs, wire, run = cluster(window=0)
    driver, w0 = procs["driver"], procs[0]
    aid, home = spawn(driver, Counter, worker=0)
    send(driver, aid, home, "add", 1, waiter="before")
    m.retire(driver, aid, "its actors() context has closed")
    wire()
    run(0)
    assert settled(driver) == {} and aid not in w0["hosted"]     # the reply is queued: it did run first
    wire()
    assert settled(driver) == {"before": 1}
    for cid in (7, None, None):                                   # from a worker that does not know yet
        m.deliver(w0, 1, ("msg", aid, cid, "add", pickle.dumps(((1,), {}))))
    (reply,) = w0["outbox"][1]
    refusal = "Counter actor Counter-1 is stopped: its actors() context has closed; add() was not run"
    assert reply[:3] == ("reply", 7, False) and str(reply[3]) == refusal
    assert w0["log"] == [f"tell {refusal} (further tells to it are dropped silently)"]     # once, not twice
    with pytest.raises(ActorError, match=r"Counter actor Counter-1 is stopped: its actors\(\) context has closed"):
        send(driver, aid, home, "add", 1)
