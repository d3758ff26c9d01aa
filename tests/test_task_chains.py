"""A failure at the head of a long chain of tasks, on the engines that resolve dependencies on the driver."""

from __future__ import annotations

import pytest

from engines import get_engine
from engines.api import TaskError


def boom(x):
    raise ValueError("the first link broke")


def inc(x):
    return x + 1


@pytest.mark.parametrize("engine", ["serial", "pool"])
def test_a_failure_fails_every_link_of_a_long_chain_with_a_short_message(engine):
    """5,000 dependents fail one after another (not one inside another: Python's stack is ~1,000 deep),
    and the last one's message says what failed first without repeating the whole chain."""
    with get_engine(engine).start(workers=2) as session, session.tasks() as tasks:
        head = tasks.submit(boom, 0)
        links = [head]
        for _ in range(5000):
            links.append(tasks.submit(inc, links[-1]))
        with pytest.raises(TaskError) as caught:
            links[-1].result(timeout=60)
        error = caught.value
        assert error.task == links[-1].name and error.dependency == links[-2].name
        assert isinstance(error.original, ValueError)
        assert str(error) == (f"task {links[-1].name} did not run: dependency {links[-2].name} failed: it did not "
                              "run: a task before it raised ValueError: the first link broke")
        assert all(link.done() for link in links)
