"""spark-df: Spark's idiomatic form, a DataFrame program planned by Spark SQL.

The ``spark`` engine runs the group-by workload the generic way, as an RDD
job of Python functions::

    rows.map(to_partial)                  # Python, per row: (key, (v1, 1, v2)), pickled
        .reduceByKey(add_partials, N)     # Python combiner per partition; pickled pairs shuffled
        .map(finish).collect()            # Python, per key: the mean

``spark-df`` runs the same question as a DataFrame program::

    rows.groupBy("key").agg(F.sum("v1"), F.count("v1"), F.avg("v2")).collect()

which Spark SQL's optimiser (Catalyst) plans as ``HashAggregate (partial) ->
Exchange hashpartitioning(key, N) -> HashAggregate (final)``: the same two
stages and the same map-side combine as ``reduceByKey``, but run in the JVM
by generated code over binary rows, with no Python in the loop. Python runs
only where the data is made: each partition's generator (the very function
the generic form reads) is called on an executor by ``mapInArrow``, and its
rows enter the JVM as Arrow columns. For the join, Catalyst sees that the
customers side is small and **broadcasts** it instead of shuffling both
sides -- a plan the generic translation never makes. The DataFrame is not
free: each partition is an Arrow Python task, whose fixed cost is higher
than an RDD task's, so on small inputs the generic form can win.

=================  ==========================================================
session            what it is
=================  ==========================================================
``frame(parts,``   ``spark.range(0, P, 1, P).mapInArrow(...)``: one row (its
``columns)``       index) per partition, so partition *i* is made by the task
                   that reads row *i*, on an executor
``collect(*dfs)``  ``df.collect()`` of each, as tuples; a worker's
                   `DataflowError` comes back as itself
``spark``          the ``SparkSession``, on the ``spark`` engine's SparkContext
=================  ==========================================================

Settings (``settings()``): every setting of the ``spark`` engine (one JVM,
``local[N]``, ``spark.sql.shuffle.partitions`` = N, driver memory, logs to
files in ``log_dir``), plus the SQL settings this variant sets on its
SparkSession: adaptive query execution on (Spark's default: it coalesces
small shuffle partitions and may turn a join into a broadcast at run time),
Arrow for Python data exchange, and the broadcast threshold (Spark's
default, 10 MB). Existing cluster: ``start(workers, master="spark://...")``
as for ``spark``.

Trace: the ``spark`` engine's, from the same event log
(`engines.adapters.columnar.ColumnarSession` hands ``trace_start`` /
``trace_stop`` to the session it wraps): a task slot per lane, each task a
``compute`` span named after its stage's operation (``collect``,
``mapInArrow`` ...), shuffle bytes written sent to ``shuffle``. Spark SQL's
code generation and Arrow batches run inside those spans; the trace does not
tell them apart.

    >>> SparkDFEngine().settings(2)["spark.sql.shuffle.partitions"]
    '2'
"""

from __future__ import annotations

from engines.adapters.columnar import ColumnarEngine, ColumnarSession, check_frame, partition_columns
from engines.adapters.spark import SparkEngine, _by_value, raised_on_worker
from engines.support import Support

#: a frame's column types as Spark SQL and Arrow name them
_SQL = {str: "STRING", int: "BIGINT", float: "DOUBLE"}
_ARROW = {str: "string", int: "int64", float: "float64"}


class SparkDFEngine(ColumnarEngine):
    name = "spark-df"
    generic = "spark"
    architecture = SparkEngine.architecture
    description = "Spark SQL DataFrames on the spark engine's JVM: the idiomatic variant of spark"
    supports = {
        "dataflow": Support.native("DataFrame programs, for workloads with a columnar form (run_columnar): Spark "
                                   "SQL group-by, join, explode; other workloads are unsupported -- their generic "
                                   "translation is engine spark"),
        "tasks": Support.unsupported("a DataFrame variant runs only DataFrame programs; Spark's task emulation "
                                     "is engine spark"),
        "actors": SparkEngine.supports["actors"],
    }
    requires = ("pyspark", "pyarrow")
    extra = "spark"
    options = SparkEngine.options

    def frame_settings(self, workers: int) -> dict:
        return {
            "frames": "Spark SQL DataFrames; partitions made on the executors by mapInArrow",
            "spark.sql.adaptive.enabled": "true",
            "spark.sql.execution.arrow.pyspark.enabled": "true",
            "spark.sql.autoBroadcastJoinThreshold": str(10 * 1024 * 1024),
        }

    def session(self, generic, settings, own):
        return SparkDFSession(generic, self.supports, settings, own)


class SparkDFSession(ColumnarSession):
    engine = "spark-df"
    frames = "spark"

    def __init__(self, generic, supports, settings, own):
        super().__init__(generic, supports, settings, own)
        from pyspark.sql import SparkSession

        self.spark = SparkSession.builder.getOrCreate()  # the running SparkContext: no second JVM
        if self.spark.sparkContext is not generic.sc:
            raise RuntimeError("spark-df: SparkSession.builder attached to another SparkContext than the "
                               "spark session it wraps")
        for key, value in settings.items():  # SQL settings are the SparkSession's (the JVM has the rest)
            if key.startswith("spark.sql.") and value is not None:
                self.spark.conf.set(key, value)

    def frame(self, partitions, columns):
        parts = check_frame(partitions, columns)
        _by_value()
        schema = ", ".join(f"`{name}` {_SQL[kind]}" for name, kind in columns.items())
        return self.spark.range(0, len(parts), 1, len(parts)).mapInArrow(_ArrowPartitions(parts, columns), schema)

    def collect(self, *frames):
        out = []
        for df in frames:
            try:
                out.append([tuple(row) for row in df.collect()])
            except Exception as e:
                on_worker = raised_on_worker(e)
                if on_worker is None:
                    raise
                raise on_worker from None
        return out


class _ArrowPartitions:
    """What ``mapInArrow`` calls on an executor: partition indices in, that partition's rows out as Arrow."""

    def __init__(self, partitions: tuple, columns: dict[str, type]):
        self.partitions, self.columns = partitions, columns

    def __call__(self, batches):
        import pyarrow as pa

        names = list(self.columns)
        types = [getattr(pa, _ARROW[kind])() for kind in self.columns.values()]
        for batch in batches:
            for index in batch.column(0).to_pylist():
                data = partition_columns(self.partitions[index], index, self.columns)
                yield pa.RecordBatch.from_arrays([pa.array(values, type=t) for values, t in zip(data, types)],
                                                 names=names)
