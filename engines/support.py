"""How an engine runs one programming model: a value with fields, shown as one line.

An engine's ``supports`` maps each model (``dataflow``, ``tasks``,
``actors``) to a `Support`:

- ``kind`` -- ``native`` (the engine's own idiom), ``emulated`` (built
  from what the engine does offer) or ``unsupported``;
- ``how`` -- how it is done (for ``unsupported``: why not, also named ``why``);
- ``streams`` -- for a dataflow, how the engine runs a timed stream.

Code reads the fields; people read the line. A Support *is* that line (a
``str``), so whoever reads ``supports`` as text -- ``archbench engines``,
the results' manifest, a workload -- reads what it read before::

    >>> tasks = Support.emulated("each submit is a one-partition Spark job")
    >>> tasks.kind, tasks.runs
    ('emulated', True)
    >>> print(tasks)
    emulated: each submit is a one-partition Spark job
    >>> Support.unsupported("no actor can live there").why
    'no actor can live there'
    >>> Support.native() == "native"
    True

The line puts a stream's note after the how, or straight after the kind
when there is no how; ``label`` (the column of the ``archbench engines``
table) is the line without its how::

    >>> flow = Support.emulated("compiled to a task graph", streams="streams as micro-batches")
    >>> str(flow), flow.label
    ('emulated: compiled to a task graph; streams as micro-batches', 'emulated')
    >>> Support.native(streams="streams as micro-batches of RDD jobs").label
    'native; streams as micro-batches of RDD jobs'
"""

from __future__ import annotations

KINDS = ("native", "emulated", "unsupported")


class Support(str):
    """How an engine runs one model (see the module docstring). Immutable; equal to its line."""

    kind: str
    how: str
    streams: str

    def __new__(cls, kind: str, how: str = "", streams: str = ""):
        if kind not in KINDS:
            raise ValueError(f"a Support's kind is one of {', '.join(KINDS)}, got {kind!r}")
        label = f"{kind}; {streams}" if streams and not how else kind
        line = f"{label}: {how}" + (f"; {streams}" if streams else "") if how else label
        self = super().__new__(cls, line)
        self.__dict__.update(kind=kind, how=how, streams=streams)
        return self

    @classmethod
    def native(cls, how: str = "", *, streams: str = "") -> "Support":
        """The engine runs the model in its own idiom (``how`` it maps, where that needs saying)."""
        return cls("native", how, streams)

    @classmethod
    def emulated(cls, how: str, *, streams: str = "") -> "Support":
        """The engine has no such model; it is built from what the engine offers, ``how``."""
        return cls("emulated", how, streams)

    @classmethod
    def unsupported(cls, why: str) -> "Support":
        """The engine does not run the model, and ``why`` (one line: what to use instead)."""
        return cls("unsupported", why)

    @property
    def runs(self) -> bool:
        """Whether the engine runs the model at all (natively or emulated)."""
        return self.kind != "unsupported"

    @property
    def why(self) -> str:
        """Why an unsupported model is not run ("" for one that is)."""
        return "" if self.runs else self.how

    @property
    def label(self) -> str:
        """The line without its how: the kind, and a stream's note when there is no how."""
        return f"{self.kind}; {self.streams}" if self.streams and not self.how else self.kind

    def __setattr__(self, name, value):
        raise AttributeError(f"a Support is immutable; make a new one (Support.{self.kind}(...))")

    def __delattr__(self, name):
        self.__setattr__(name, None)

    def __reduce__(self):  # travels as its fields, not as the line
        return Support, (self.kind, self.how, self.streams)
