"""dask-df: Dask's idiomatic form, a dask.dataframe program of pandas partitions.

The ``dask`` engine runs the group-by workload the generic way: a graph of
futures whose tasks loop over Python tuples -- per partition a ``split``
task (map, combine, cut into N buckets), per bucket a ``getitem``, per
owner a ``merge`` task (`engines.plan`). ``dask-df`` runs the same question
as a dask.dataframe program::

    rows.groupby("key").agg(s1=("v1", "sum"), n=("v1", "count"), mean=("v2", "mean"))

Each partition is a pandas DataFrame; Dask's planner (dask-expr) turns the
group-by into a **tree reduction**: a ``chunk`` task per partition (a pandas
group-by, in C over whole columns), then ``combine`` tasks that merge the
partial sums and counts, and one ``aggregate`` task for the means. A join
(``merge``) is a hash shuffle of both sides, partitions exchanged worker to
worker as Arrow tables (Dask's ``p2p`` shuffle) -- where the generic form
ships pickled tuples through one small task per bucket. Python runs one
task per partition, not one function call per record.

=================  ==========================================================
session            what it is
=================  ==========================================================
``frame(parts,``   ``dd.from_map``: one task per partition, which calls the
``columns)``       partition's generator on a worker and builds its pandas
                   frame there
``collect(*dfs)``  one ``client.compute`` of them all (shared parts, such as
                   a join read by two results, are computed once); a
                   DataFrame comes back as its rows, a Series as its
                   ``(index, value)`` pairs
``client``         the Dask ``Client`` of the ``dask`` engine's cluster
=================  ==========================================================

Settings (``settings()``): every setting of the ``dask`` engine (a
LocalCluster of N worker processes, one thread each; logs to files in
``log_dir``), plus the shuffle method, set while ``collect`` plans the graph
(``p2p``, Dask's default on a distributed cluster), and the group-by's
output partitions (``split_out=1``, Dask's default: one result partition,
reached by a tree). Existing cluster: ``start(workers,
address="tcp://host:8786")`` as for ``dask``.

    >>> DaskDFEngine().settings(2)["threads_per_worker"]
    1
"""

from __future__ import annotations

from engines.adapters.columnar import ColumnarEngine, ColumnarSession, check_frame, partition_columns
from engines.adapters import by_value_modules
from engines.adapters.dask import DaskEngine, _ByValue, _unwrap
from engines.support import Support

#: a frame's column types as pandas names them
_DTYPES = {str: "str", int: "int64", float: "float64"}


class DaskDFEngine(ColumnarEngine):
    name = "dask-df"
    generic = "dask"
    architecture = DaskEngine.architecture
    description = "dask.dataframe on the dask engine's cluster: the idiomatic variant of dask"
    supports = {
        "dataflow": Support.native("dataframe programs, for workloads with a columnar form (run_columnar): pandas "
                                   "partitions, group-by by tree reduction, p2p-shuffled join; other workloads are "
                                   "unsupported -- their generic translation is engine dask"),
        "tasks": Support.unsupported("a dataframe variant runs only dataframe programs; Dask's tasks are engine dask"),
        "actors": Support.unsupported("a dataframe variant runs only dataframe programs; Dask's actors are "
                                      "engine dask"),
    }
    requires = ("dask", "distributed", "pandas", "pyarrow")
    extra = "dask"
    options = DaskEngine.options

    def frame_settings(self, workers: int) -> dict:
        return {
            "frames": "dask.dataframe (dask-expr); pandas partitions made on the workers by from_map",
            "dataframe.shuffle.method": "p2p",
            "groupby.split_out": 1,
        }

    def session(self, generic, settings, own):
        return DaskDFSession(generic, self.supports, settings, own)


class DaskDFSession(ColumnarSession):
    engine = "dask-df"
    frames = "dask"

    def __init__(self, generic, supports, settings, own):
        super().__init__(generic, supports, settings, own)
        self.client = generic.client

    def frame(self, partitions, columns):
        import dask.dataframe as dd

        parts = list(check_frame(partitions, columns))
        if by_value_modules():  # a user's workload file: its functions cannot be imported on a worker
            parts = [_ByValue(part) for part in parts]
        make = _PandasPartition(columns)
        return dd.from_map(make, parts, range(len(parts)), meta=make.empty(), label="frame-partition",
                           enforce_metadata=False)

    def collect(self, *frames):
        import dask

        # the shuffle method is chosen while the graph is planned, here in the client
        with dask.config.set({"dataframe.shuffle.method": self.settings["dataframe.shuffle.method"]}):
            futures = self.client.compute(list(frames))
        return [_rows(result) for result in self.client.gather(futures)]


class _PandasPartition:
    """What a ``from_map`` task calls on a worker: partition ``index``'s rows as a pandas DataFrame."""

    def __init__(self, columns: dict[str, type]):
        self.columns = columns

    def __call__(self, source, index: int):
        return self._frame(partition_columns(_unwrap(source), index, self.columns))

    def empty(self):
        """The frame's columns and types, no rows: Dask's ``meta``."""
        return self._frame([[] for _ in self.columns])

    def _frame(self, data: list[list]):
        import pandas as pd

        return pd.DataFrame({name: pd.Series(values, dtype=_DTYPES[kind])
                             for (name, kind), values in zip(self.columns.items(), data)})


def _rows(result) -> list[tuple]:
    """A computed pandas result as plain rows: a DataFrame's row tuples (index left out), a Series' pairs.

    >>> import pandas as pd
    >>> _rows(pd.DataFrame({"k": ["a"], "n": [2]})), _rows(pd.Series([3], index=["b"]))
    ([('a', 2)], [('b', 3)])
    """
    if hasattr(result, "columns"):
        return list(zip(*(result.iloc[:, i].tolist() for i in range(result.shape[1]))))
    return list(zip(result.index.tolist(), result.tolist()))
