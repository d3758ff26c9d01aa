"""The errors archbench raises on purpose, shared by every part of it.

They are part of the contract, imported by workloads from `engines.api`,
so their names are shown as ``engines.api.<Name>`` wherever they are
printed or pickled (the module they live in is a detail).
"""

from __future__ import annotations

import reprlib


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


for _error in (ArchbenchError, DataflowError, NotAPair):
    _error.__module__ = "engines.api"
