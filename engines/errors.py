"""The errors archbench raises on purpose, shared by every part of it.

They are part of the contract, imported by workloads from `engines.api`,
so their names are shown as ``engines.api.<Name>`` wherever they are
printed or pickled (the module they live in is a detail).
"""

from __future__ import annotations

import pickle
import reprlib
import traceback


class ArchbenchError(Exception):
    """Base of every error archbench raises on purpose."""


class DataflowError(ArchbenchError):
    """A flow definition is wrong, or a step failed while running."""




class NotAPair(DataflowError):
    """A keyed step got an item that is not a ``(key, value)`` pair.

    Every engine raises this one error, in these words, for such an item. A
    pair is an item that unpacks into two, as a 2-tuple does. The step, the
    item (shortened) and its type are fields, so nothing has to read the
    message to know what happened::

        >>> raise NotAPair("sum", "a line of text")
        Traceback (most recent call last):
        ...
        engines.api.NotAPair: step 'sum' needs (key, value) items, got 'a line of text' (str): make each item a pair first, e.g. .map(lambda x: (key_of(x), x)) or .key_by(key_of)
    """

    def __init__(self, step: str, item):
        self.step, self.item, self.kind = step, _SHORT.repr(item), type(item).__name__
        super().__init__(self._text())

    def _text(self) -> str:
        return (f"step {self.step!r} needs (key, value) items, got {self.item} ({self.kind}): make each item "
                "a pair first, e.g. .map(lambda x: (key_of(x), x)) or .key_by(key_of)")

    def __reduce__(self):  # travels from a worker with its fields, not only its text
        return _not_a_pair, (self.step, self.item, self.kind)


def _not_a_pair(step: str, item: str, kind: str) -> NotAPair:
    error = NotAPair.__new__(NotAPair)
    error.step, error.item, error.kind = step, item, kind
    DataflowError.__init__(error, error._text())
    return error


_SHORT = reprlib.Repr()   # an item as an error shows it: long strings and containers cut short
_SHORT.maxstring = _SHORT.maxother = 60



class UnsupportedModel(ArchbenchError):
    """The engine does not offer this programming model (see its ``supports``)."""


class TaskError(ArchbenchError):
    """A task failed. The message names the task and carries the remote traceback.

    What the message says is also in fields, so code never has to read it:

    - ``task`` -- the name of the task that failed (None: the error is the
      session's, not one task's)
    - ``dependency`` -- when the task did not run because a task it depends
      on failed: that task's name (on Dask and Ray, which fail everything
      downstream of a failed task with its error, the task that failed
      first); else None
    - ``worker`` -- where it ran, as its engine names workers (mini-tasks:
      the worker's index; Dask: its address; Ray: its worker id); None where
      it is not known
    - ``original`` -- the exception the user's function raised (for a task
      that did not run: the one its failed dependency raised), where that
      exception can travel to the driver; else None

    The fields travel with the error from a worker to the driver::

        >>> import pickle
        >>> error = TaskError("task add-2 did not run: dependency parse-1 failed: ValueError: x",
        ...                   task="add-2", dependency="parse-1", original=ValueError("x"))
        >>> copy = pickle.loads(pickle.dumps(error))
        >>> copy.task, copy.dependency, repr(copy.original)
        ('add-2', 'parse-1', "ValueError('x')")
    """

    def __init__(self, message: str, *, task: str | None = None, dependency: str | None = None,
                 worker=None, original: BaseException | None = None):
        super().__init__(message)
        self.task, self.dependency, self.worker, self.original = task, dependency, worker, original

    def __reduce__(self):  # its fields travel too; the original exception only if it can
        return _task_error, (str(self), self.task, self.dependency, self.worker, _travels(self.original))


def _task_error(message: str, task, dependency, worker, original) -> TaskError:
    return TaskError(message, task=task, dependency=dependency, worker=worker, original=original)


def _travels(error: BaseException | None) -> BaseException | None:
    """``error`` if it survives pickling (an exception may hold what cannot), else None."""
    try:
        pickle.dumps(error, protocol=5)
    except Exception:
        return None
    return error


class ActorError(ArchbenchError):
    """An actor call failed: the method raised, or the actor (or its host) is gone."""


def remote_traceback(error: BaseException) -> str:
    """What an error raised on a worker says on the driver: its type and message, then the traceback
    from where it was raised (a traceback does not survive pickling; its text does).

    Every runtime's error for a user's function that raised ends with this.

    >>> print(remote_traceback(ValueError("bad input")))
    ValueError: bad input
    <BLANKLINE>
    Traceback on the worker:
    ValueError: bad input
    """
    remote = "".join(traceback.format_exception(error)).rstrip()
    return f"{type(error).__name__}: {error}\n\nTraceback on the worker:\n{remote}"


for _error in (ArchbenchError, DataflowError, NotAPair, UnsupportedModel, TaskError, ActorError):
    _error.__module__ = "engines.api"
