"""Idiomatic variants: the same cluster, driven through its DataFrame API.

The generic adapters run the *same* program on every engine: a neutral
`Dataflow` whose steps call Python functions on one record at a time. That
is what makes the comparison fair -- and it is not how anyone would write a
group-by on Spark or Dask. There one writes a **DataFrame** program:

==================  ==========================================  ==========================================
                    generic (``spark``, ``dask``)                idiomatic (``spark-df``, ``dask-df``)
==================  ==========================================  ==========================================
what is described   Python functions per record                 columns and relational operators
                    (``map(to_partial)``, ``reduce_by_key``)    (``groupBy("key").agg(sum, count, avg)``)
who runs the loop   the Python interpreter, record by record    compiled code over whole columns: Spark's
                                                                JVM on binary rows, pandas/numpy on arrays
what crosses the    pickled Python tuples                       Arrow columns (Spark); pandas frames and
network                                                         Arrow tables (Dask)
who plans           the adapter, step by step                   the engine's optimiser: Spark's Catalyst
                                                                may broadcast a small join side; Dask
                                                                reduces a group-by as a tree
==================  ==========================================  ==========================================

How much faster that is, the benchmark measures; the rule is that it is
*named*. A columnar variant is a separate engine (``spark-df`` beside
``spark``, ``dask-df`` beside ``dask``), so a results table never mixes the
two forms under one name (DESIGN.md, fairness rules).

How it fits together:

- A workload **declares** a columnar form by defining ``run_columnar(session,
  inputs)`` (`workloads.Workload`). It returns the same answer as ``run``, and
  the same ``check`` compares it with the same reference.
- A variant engine is marked ``columnar = True``. The harness runs
  ``run_columnar`` on it (`workloads.Workload.runner`), and records a
  workload without a columnar form as ``unsupported`` with the reason.
- A variant's session **wraps a running session of its generic engine**
  (`ColumnarEngine.over`): the same JVM or the same Dask cluster, the same
  worker count and thread settings, and every setting of the generic engine
  recorded beside the few the DataFrame API adds. ``start()`` starts the
  generic engine and wraps it; a test suite may wrap the one it already runs.
- The session offers what ``run_columnar`` needs, and nothing generic:

  ``session.frames``              ``"spark"``, ``"dask"`` or ``"flink-sql"``: which API to write
  ``session.frame(parts, cols)``  a DataFrame whose partition *i* holds the rows
                                  of ``parts[i]`` -- a list, or a zero-argument
                                  callable *called on a worker*, exactly as
                                  ``flow.read`` takes them -- with ``cols``
                                  ``{name: str | int | float}``
  ``session.collect(*frames)``    run them; each as a list of row tuples
  ``session.spark``,              the native handle (a ``SparkSession``, a Dask
  ``session.client``              ``Client``) for anything else
- ``session.dataflow(flow)`` is refused with the reason: a generic flow on
  ``spark-df`` would be the ``spark`` engine under another name.

    >>> partition_columns(lambda: [("a", 1), ("b", 2)], 0, {"key": str, "n": int})
    [['a', 'b'], [1, 2]]
"""

from __future__ import annotations

from engines import get_engine
from engines.adapters import AdapterEngine
from engines.api import ArchbenchError, DataflowError, Session, UnsupportedModel, describe_function
from engines.common import remote_traceback
from engines.plan import Plan
from engines.plan import source_items

#: the column types a frame may declare
COLUMN_TYPES = (str, int, float)


class ColumnarEngine(AdapterEngine):
    """An idiomatic variant of the adapter named ``generic``: its cluster, driven through DataFrames.

    Subclasses give ``generic``, `frame_settings` and `session`;
    availability, version, options and the generic settings are the
    generic engine's.
    """

    columnar = True
    generic = "?"                     # the engine of the generic translation, whose cluster this one drives

    @property
    def trace_options(self) -> dict:
        return get_engine(self.generic).trace_options

    def available(self) -> tuple[bool, str]:
        ok, why = get_engine(self.generic).available()
        return (ok, why) if not ok else super().available()

    def version(self) -> str:
        return get_engine(self.generic).version()

    def frame_settings(self, workers: int) -> dict:
        """The settings the DataFrame API adds to the generic engine's."""
        raise NotImplementedError

    def session(self, generic: Session, settings: dict, own: bool) -> "ColumnarSession":
        """This variant's session over ``generic`` (see `over`)."""
        raise NotImplementedError

    def settings(self, workers: int, **options) -> dict:
        self.check_options(options)
        return {**get_engine(self.generic).settings(workers, **options), **self.frame_settings(workers)}

    def start(self, workers: int = 2, **options) -> "ColumnarSession":
        self.check_options(options)
        return self.over(get_engine(self.generic).start(workers, **options), own=True)

    def over(self, generic: Session, own: bool = False) -> "ColumnarSession":
        """This variant on a running session of the generic engine: its cluster, its settings.

        ``own``: closing the variant closes ``generic`` too (as ``start`` does);
        otherwise ``generic`` stays up for its owner.
        """
        if generic.engine != self.generic:
            raise ArchbenchError(f"engine {self.name!r} wraps a {self.generic!r} session, got {generic.engine!r}")
        settings = {**generic.settings, **self.frame_settings(generic.workers)}
        try:
            return self.session(generic, settings, own)
        except BaseException:
            if own:
                generic.close()
            raise


class ColumnarSession(Session):
    """A variant's session: ``frame`` and ``collect`` over the generic engine's running session."""

    frames = "?"           # "spark" | "dask" | "flink-sql": the API a workload's run_columnar writes

    def __init__(self, generic: Session, supports: dict, settings: dict, own: bool):
        super().__init__(generic.workers, supports, settings)
        self.generic, self._own = generic, own

    @property
    def worker_pids(self) -> list[int]:
        return self.generic.worker_pids

    @property
    def targets_per_run(self) -> bool:
        return self.generic.targets_per_run

    def fault_targets(self) -> list[tuple[int, str]]:
        return self.generic.fault_targets()     # the same cluster: the generic engine's processes

    def fault_reason(self) -> str:
        return self.generic.fault_reason()

    def frame(self, partitions, columns: dict[str, type]):
        """A DataFrame: partition *i* holds the rows (tuples) of ``partitions[i]``, made on a worker."""
        raise NotImplementedError

    def collect(self, *frames) -> list[list[tuple]]:
        """Compute ``frames`` and bring each to the driver as a list of row tuples."""
        raise NotImplementedError

    def run_plan(self, plan: Plan) -> dict[str, list]:
        raise UnsupportedModel(
            f"engine {self.engine!r} does not run a generic Dataflow ({self.supports['dataflow']}); "
            f"it runs a workload's columnar form (run_columnar) -- run flow {plan.name!r} on engine "
            f"{self.generic.engine!r}, the generic translation on the same cluster")

    def trace_start(self) -> None:
        """A variant is traced by its generic engine's instruments: the same cluster runs its jobs."""
        self.generic.trace_start()

    def trace_stop(self):
        return self.generic.trace_stop()

    def close(self) -> None:
        if self._own:
            self.generic.close()


def check_frame(partitions, columns: dict[str, type]) -> tuple:
    """The partitions as a tuple, after refusing a frame no engine can make (naming what it may be).

    >>> check_frame([[("a", ["x"])]], {"key": str, "tags": list})
    Traceback (most recent call last):
    ...
    engines.api.DataflowError: frame column 'tags' has type list; choose from: str, int, float
    """
    if isinstance(partitions, (str, bytes)) or not hasattr(partitions, "__len__") or not partitions:
        raise DataflowError("a frame needs a non-empty list of partitions (each a list of rows, or a "
                            f"zero-argument callable returning them), got {partitions!r:.80}")
    if not columns:
        raise DataflowError("a frame needs at least one column: {name: str | int | float}")
    for name, kind in columns.items():
        if kind not in COLUMN_TYPES:
            raise DataflowError(f"frame column {name!r} has type {getattr(kind, '__name__', kind)}; "
                                f"choose from: {', '.join(t.__name__ for t in COLUMN_TYPES)}")
    return tuple(partitions)


def partition_columns(source, index: int, columns: dict[str, type]) -> list[list]:
    """Partition ``index`` of a frame, made here (on a worker), as one list per column.

    A partition that raises, or whose rows do not have one field per
    column, fails with a `DataflowError` naming the partition's function.
    """
    try:
        rows = list(source_items(source))
    except Exception as e:
        raise DataflowError(f"partition {index} of a frame ({describe_function(source)}) raised "
                            f"{remote_traceback(e)}") from None
    if not rows:
        return [[] for _ in columns]
    data = []
    if isinstance(rows[0], (tuple, list)):
        try:
            data = [list(values) for values in zip(*rows, strict=True)]
        except (TypeError, ValueError):  # a row that is not a sequence, or of another length
            pass
    if len(data) != len(columns):
        bad = next((row for row in rows if not isinstance(row, (tuple, list)) or len(row) != len(columns)),
                   rows[0])
        raise DataflowError(f"partition {index} of a frame ({describe_function(source)}) made the row {bad!r}; "
                            f"each row must be a tuple of {len(columns)} values: {', '.join(columns)}")
    return data
