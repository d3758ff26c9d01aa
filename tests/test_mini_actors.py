"""mini-actors: the properties of the actor architecture, with real worker processes.

The contract suite (test_contract.py) checks the answers; these check what
makes it the actor architecture and not a remote procedure call: messages
from one sender stay in order; actors message each other worker to worker
and the trace shows the driver never relays; a flood of tells is slowed by
back-pressure instead of filling the receiver's memory; an actor whose
host is SIGKILLed comes back, fresh, in another process; a method may wait
for another actor; and errors say what happened and what to do.
"""

from __future__ import annotations

import operator
import os
import signal
import threading
import time

import psutil
import pytest

from conftest import delivered_on_the_main_thread, wait_until
from engines.api import ActorError, Dataflow, DataflowError
from engines.mini.actors import MiniActorsEngine
from engines.mini.trace import traffic


@pytest.fixture(scope="module")
def mini():
    with MiniActorsEngine().start(workers=2) as session:
        yield session


# ---------------------------------------------------------------- actors a new user might write


class Journal:
    """Remembers who sent what, in arrival order."""

    def __init__(self):
        self.entries = []

    def note(self, sender, i):
        self.entries.append((sender, i))

    def all(self):
        return list(self.entries)

    def pid(self):
        return os.getpid()


class Writer:
    """Tells a journal a numbered sequence from inside a method."""

    def __init__(self, name, journal):
        self.name, self.journal = name, journal

    def write(self, n):
        for i in range(n):
            self.journal.tell("note", self.name, i)
        return n

    def ask(self, other, method, *args):
        return other.call(method, *args).result()     # waiting for another actor inside a method


class Counter:
    def __init__(self, start=0):
        self.n = start

    def add(self, k=1):
        self.n += k
        return self.n

    def pid(self):
        return os.getpid()

    def nap(self, seconds):
        time.sleep(seconds)
        return "rested"


class Gate:
    """Holds its mailbox shut until a file appears, then eats blobs."""

    def __init__(self):
        self.eaten = 0

    def hold(self, path):
        deadline = time.monotonic() + 60
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.01)

    def eat(self, blob):
        self.eaten += 1

    def count(self):
        return self.eaten


class Broken:
    def __init__(self):
        raise ValueError("no config")


# ---------------------------------------------------------------- ordering and routing


def test_each_sender_keeps_its_order(mini):
    with mini.actors() as actors:
        journal = actors.spawn(Journal, worker=0)
        writers = [actors.spawn(Writer, f"w{k}", journal, worker=k % 2) for k in range(4)]
        for i in range(300):
            journal.tell("note", "driver", i)
        assert actors.gather([w.call("write", 300) for w in writers]) == [300] * 4
        wait_until(lambda: len(journal.call("all").result()) == 5 * 300)
        entries = journal.call("all").result()
        for sender in ["driver"] + [f"w{k}" for k in range(4)]:
            assert [i for s, i in entries if s == sender] == list(range(300)), sender


def test_actor_to_actor_messages_never_pass_through_the_driver(mini):
    with mini.actors() as actors:
        journal = actors.spawn(Journal, worker=1)
        writer = actors.spawn(Writer, "w", journal, worker=0)
        journal.call("all").result()          # both are up before the trace starts
        writer.call("write", 0).result()
        mini.trace()
        assert writer.call("write", 50).result() == 50
        wait_until(lambda: len(journal.call("all").result()) == 50)
        rows = mini.trace()
    moved = traffic(rows)
    assert moved.get((0, 1), 0) > 50 * 20                                    # the tells went 0 -> 1
    tells = [r for r in rows if r["event"] == "send" and (r["worker"], r["to"]) == (0, 1)]
    assert sum(r["items"] for r in tells) == 50 and all(r["what"] == "tell" for r in tells)
    to_one = [r for r in rows if r["event"] == "send" and (r["worker"], r["to"]) == ("driver", 1)]
    assert all("tell" not in r["what"] for r in to_one)                      # the driver only asked
    notes = [r for r in rows if r["event"] == "span" and r["method"] == "note"]
    assert len(notes) == 50 and {r["sender"] for r in notes} == {0} and {r["worker"] for r in notes} == {1}


def test_a_method_may_wait_for_another_actor_on_any_worker(mini):
    with mini.actors() as actors:
        here, there = actors.spawn(Counter, 10, worker=0), actors.spawn(Counter, 20, worker=1)
        writer = actors.spawn(Writer, "w", None, worker=0)
        assert writer.call("ask", there, "add", 1).result() == 21
        assert writer.call("ask", here, "add", 1).result() == 11     # same worker: its own thread


def test_the_trace_has_message_spans_with_mailbox_wait_and_service_time(mini):
    with mini.actors() as actors:
        counter = actors.spawn(Counter)
        mini.trace()
        actors.gather([counter.call("nap", 0.02) for _ in range(3)])
        rows = [r for r in mini.trace() if r["event"] == "span" and r["method"] == "nap"]
    assert len(rows) == 3 and {r["step"] for r in rows} == {counter.actor_id}
    assert all(r["end"] - r["start"] >= 0.015 for r in rows)
    assert max(r["wait"] for r in rows) >= 0.015         # the third waited for the first two


# ---------------------------------------------------------------- back-pressure


def test_a_flood_of_tells_is_slowed_and_memory_stays_bounded(tmp_path):
    gate_file, blob, total = tmp_path / "open", b"x" * 1024, 200_000
    with MiniActorsEngine().start(workers=2, mailbox=1000) as session, session.actors() as actors:
        gate = actors.spawn(Gate, worker=1)
        host = psutil.Process(session.worker_pids[1])
        gate.call("count").result()
        before = host.memory_info().rss
        gate.tell("hold", str(gate_file))
        sent = [0]

        def flood():
            for _ in range(total):
                gate.tell("eat", blob)
                sent[0] += 1

        def window_full():
            _, admitted, credited = session.driver.state["credit"][gate.actor_id]
            return admitted - credited >= 1000

        sender = threading.Thread(target=flood, daemon=True)
        sender.start()
        wait_until(window_full)               # the gate is shut: 1000 messages in flight, no more
        peak = host.memory_info().rss
        watch_until = time.monotonic() + 0.5
        while time.monotonic() < watch_until:  # watch half a second: the sender does not get further
            peak = max(peak, host.memory_info().rss)
            time.sleep(0.01)
        assert sent[0] <= 1000 - 2, "the sender was not slowed"   # "count" and "hold" took 2 of its 1000
        gate_file.touch()
        while sender.is_alive():
            peak = max(peak, host.memory_info().rss)
            sender.join(timeout=0.05)
        assert gate.call("count").result() == total
    assert peak - before < 64 * 2**20, f"the receiver grew by {(peak - before) / 2**20:.0f} MiB"


# ---------------------------------------------------------------- supervision


def test_an_actor_whose_host_is_killed_is_restarted_fresh_elsewhere():
    with MiniActorsEngine().start(workers=2) as session, session.actors() as actors:
        counter = actors.spawn(Counter, 100, worker=1)
        writer = actors.spawn(Writer, "w", None, worker=0)
        assert [counter.call("add").result() for _ in range(3)] == [101, 102, 103]
        old_pid = counter.call("pid").result()
        assert old_pid == session.worker_pids[1]
        in_flight = counter.call("nap", 30)
        session.driver.flush()                # on its way: sent, not answered
        os.kill(old_pid, signal.SIGKILL)
        with pytest.raises(ActorError, match=r"Counter actor Counter-1: nap\(\) was lost in flight.*"
                                             r"worker 1 \(pid \d+\) was killed by SIGKILL.*restart 1 of 3"):
            in_flight.result(timeout=20)
        assert counter.call("add").result(timeout=20) == 101           # fresh state: the constructor ran again
        assert counter.call("pid").result() == session.worker_pids[0] != old_pid
        assert writer.call("ask", counter, "add", 5).result(timeout=20) == 106   # refs held by actors follow


@pytest.mark.parametrize("spin_us", [0, 5_000])
def test_calls_are_answered_in_order_whether_the_caller_and_workers_poll_or_sleep(spin_us):
    with MiniActorsEngine().start(workers=2, spin_us=spin_us) as session, session.actors() as actors:
        assert session.host.spin == spin_us / 1e6
        counters = [actors.spawn(Counter, worker=w) for w in (0, 1)]
        assert [counters[i % 2].call("add").result() for i in range(100)] == [i // 2 + 1 for i in range(100)]
        assert actors.gather([counters[0].call("add") for _ in range(50)]) == list(range(51, 101))


class Hanger:
    def pid(self):
        return os.getpid()

    def hang(self, path):
        """Say it has started (the pid in ``path``), then hang until its worker is killed."""
        with open(path + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(path + ".tmp", path)
        time.sleep(120)


def test_a_call_whose_worker_is_killed_while_the_caller_reads_its_connection_fails_naming_it(tmp_path):
    path = str(tmp_path / "started")
    with MiniActorsEngine().start(workers=2) as session, session.actors() as actors:
        seen = delivered_on_the_main_thread(session.host)
        hanger = actors.spawn(Hanger, worker=1, max_restarts=0)
        pids = [hanger.call("pid").result() for _ in range(100)]
        assert set(pids) == {session.worker_pids[1]}
        assert any(seen), "no reply was read by the waiting caller: every one was handed over by a reader thread"

        def kill_when_started():
            wait_until(lambda: os.path.exists(path), 60, "hang() to start")
            os.kill(pids[0], signal.SIGKILL)

        killer = threading.Thread(target=kill_when_started)
        killer.start()
        with pytest.raises(ActorError, match=r"Hanger actor Hanger-1: hang\(\) was lost in flight.*SIGKILL"):
            hanger.call("hang", path).result(timeout=60)
        killer.join()
        assert actors.spawn(Hanger).call("pid").result(timeout=20) == session.worker_pids[0]


def test_restarts_are_limited_and_a_dead_actor_says_why():
    with MiniActorsEngine().start(workers=2) as session, session.actors() as actors:
        mortal = actors.spawn(Counter, worker=1, max_restarts=0)
        assert mortal.call("pid").result() == session.worker_pids[1]
        os.kill(session.worker_pids[1], signal.SIGKILL)
        wait_until(lambda: session.driver.state["where"][mortal.actor_id][0] is None)
        with pytest.raises(ActorError, match=r"Counter-1 is stopped: its host worker 1 .*SIGKILL.*max_restarts=0"):
            mortal.call("add").result()
        with pytest.raises(ActorError, match=r"cannot spawn Counter on worker 1: it is lost.*live workers: \[0\]"):
            actors.spawn(Counter, worker=1)
        assert actors.spawn(Counter).call("add").result() == 1       # placement skips the lost worker


# ---------------------------------------------------------------- errors that teach


def test_errors_name_the_actor_and_say_what_to_do(mini):
    with mini.actors() as actors:
        broken = actors.spawn(Broken)
        with pytest.raises(ActorError, match=r"Broken actor Broken-\d+ could not start: Broken.__init__ raised "
                                             r"ValueError: no config(.|\n)*Traceback"):
            broken.call("anything").result()
        counter = actors.spawn(Counter)
        with pytest.raises(ActorError, match=r"arguments of Counter.add\(\) could not be pickled.*plain data"):
            counter.call("add", threading.Lock())
        with pytest.raises(ActorError, match=r"cannot spawn Counter on worker 7.*live workers: \[0, 1\]"):
            actors.spawn(Counter, worker=7)
        with pytest.raises(ActorError, match="spawn needs a class"):
            actors.spawn(Counter())
        narcissus = actors.spawn(Writer, "n", None)
        with pytest.raises(ActorError, match=r"ask\(\) raised ActorError: Writer-\d+.write: an actor cannot wait "
                                             r"for its own reply"):
            narcissus.call("ask", narcissus, "write", 0).result(timeout=20)
    with pytest.raises(ActorError, match=r"Counter actor Counter-\d+ is stopped: its actors\(\) context has closed"):
        counter.call("add").result()


# ---------------------------------------------------------------- the other models on actors


def test_a_dataflow_runs_as_operator_actors_pushing_worker_to_worker(mini):
    flow = Dataflow("orders")
    orders = flow.read([[("ann", 5), ("bob", 7)] * 50, [("ann", 1), ("cat", 9)] * 50, [("dan", 2)]]).map(tuple)
    totals = orders.reduce_by_key(operator.add)
    totals.join(orders.filter(lambda o: o[1] > 4)).map(lambda kv: (kv[0], kv[1][0])).reduce_by_key(max) \
        .collect("big_spenders")
    orders.map(lambda o: o[0]).collect("names")
    mini.trace()
    out = mini.dataflow(flow)
    assert sorted(out["big_spenders"]) == [("ann", 300), ("bob", 350), ("cat", 450)]
    assert sorted(set(out["names"])) == ["ann", "bob", "cat", "dan"] and len(out["names"]) == 201
    moved = traffic(mini.trace())
    assert moved.get((0, 1), 0) > 0 and moved.get((1, 0), 0) > 0     # operators pushed batches to each other


def test_a_failing_step_is_named_and_the_session_goes_on(mini):
    flow = Dataflow("bad")
    flow.read([[1, 2], [0]]).map(lambda x: 10 // x, name="tenths").collect("out")
    with pytest.raises(DataflowError, match=r"tenths.*ZeroDivisionError"):
        mini.dataflow(flow)
    flow = Dataflow("good")
    flow.read([[1, 2], [5]]).map(lambda x: 10 // x).collect("out")
    assert sorted(mini.dataflow(flow)["out"]) == [2, 5, 10]


def test_a_reply_is_a_whole_future():
    """A call's Future is built without threading.Event (see endpoint.Reply): it must still have
    every attribute an engines.api.Future has, or a change to Future would break it unnoticed."""
    from engines.api import Future
    from engines.mini.endpoint import Reply

    reply = Reply("x.add", owner=None)
    assert set(vars(Future("x.add"))) <= set(vars(reply))
    reply._set_result(3)
    assert reply.done() and reply.result(timeout=0) == 3


# ---------------------------------------------------------------- the in-process form


def _story(session) -> list:
    with session.actors() as actors:
        journal = actors.spawn(Journal)
        writers = [actors.spawn(Writer, f"w{k}", journal) for k in range(3)]
        actors.gather([w.call("write", 5) for w in writers])
        entries = journal.call("all").result()
    return entries


def test_the_in_process_form_is_deterministic():
    runs = []
    for _ in range(2):
        with MiniActorsEngine().start(workers=2, processes=False) as session:
            runs.append(_story(session))
    assert runs[0] == runs[1] and len(runs[0]) == 15
