"""flink-sql: Flink's idiomatic form for tables, a SQL query planned by Flink's planner.

The ``flink`` engine runs the group-by workload the generic way, as a
DataStream job of Python functions::

    indices.rebalance().flat_map(Read)            # Python, per partition: rows made, (key, (v1, 1, v2)) combined
        .key_by(bucket_of).process(BucketReduce)  # Python, per chunk of one bucket's pairs: JVM <-> Python
        .flat_map(Collect)                        # Python, per chunk: back to the job process

``flink-sql`` asks the same question in SQL::

    SELECT `key`, SUM(v1), COUNT(v1), AVG(v2) FROM rows GROUP BY `key`

which Flink's planner (Apache Calcite underneath) turns into a local
hash aggregate, a hash exchange by ``key`` and a global hash aggregate,
run in the JVM by generated code over binary rows, with no Python in the
loop. Python runs only where the rows are made: each partition's
generator (the very function the generic form reads) is called on a
worker by a typed ``flat_map`` (`engines.adapters.flink_tables`), and its
rows enter the JVM as Flink ``Row`` s of the frame's column types. For the
join, the planner picks the join strategy (a hash join, or a broadcast of
a small side) -- a plan the generic translation never makes.

=================  ==========================================================
session            what it is
=================  ==========================================================
``frame(parts,``   a table (`Frame`): partition *i* holds the rows of
``columns)``       ``parts[i]``, made on a worker; ``str(frame)`` is its name
                   in a query
``sql(query,``     a `Query`: ``query`` with ``{name}`` placeholders for the
``**frames)``      frames it reads (``"... FROM {rows}"``, ``rows=frame``)
``collect(*qs)``   run the queries (one Flink job for all; a frame stands for
                   ``SELECT *`` of it); each as a list of row tuples; a
                   worker's `DataflowError` comes back as itself
=================  ==========================================================

Nothing of Flink is imported here: a workload's ``run_columnar`` writes
SQL text in the driver (``session.frames == "flink-sql"``), and the query
runs in the ``flink`` engine's job process, on its settings (parallelism =
workers, BATCH mode), in Flink's own environment.

    >>> FlinkSQLEngine().frame_settings(2)["frames"]
    'Flink SQL over tables made by a typed flat_map on the workers; one BATCH job per collect'
"""

from __future__ import annotations

import itertools

from engines.adapters.columnar import ColumnarEngine, ColumnarSession, check_frame
from engines.adapters.flink import FlinkEngine
from engines.api import DataflowError
from engines.support import Support


class FlinkSQLEngine(ColumnarEngine):
    name = "flink-sql"
    generic = "flink"
    architecture = FlinkEngine.architecture
    description = "Flink SQL on the flink engine's job process: the idiomatic variant of flink"
    supports = {
        "dataflow": Support.native("SQL queries, for workloads with a columnar form (run_columnar): group-by, "
                                   "join, split and unnest planned by Flink's planner; other workloads are "
                                   "unsupported -- their generic translation is engine flink"),
        "tasks": FlinkEngine.supports["tasks"],
        "actors": FlinkEngine.supports["actors"],
    }
    options = FlinkEngine.options

    def frame_settings(self, workers: int) -> dict:
        return {
            "frames": "Flink SQL over tables made by a typed flat_map on the workers; one BATCH job per collect",
            "table.planner": "Flink's default (blink) planner, its optimizer's defaults",
        }

    def session(self, generic, settings, own):
        return FlinkSQLSession(generic, self.supports, settings, own)


class Frame:
    """A table of the session: its name in queries, its partitions and columns (made when a query runs)."""

    def __init__(self, name: str, partitions: tuple, columns: dict):
        self.name, self.partitions, self.columns = name, partitions, dict(columns)

    def __str__(self):
        return self.name

    def __repr__(self):
        return f"<Frame {self.name} {list(self.columns)}, {len(self.partitions)} partitions>"


class Query:
    """A SQL query over frames: its text with the frames' names in place."""

    def __init__(self, text: str, frames: dict[str, Frame]):
        self.frames = frames
        try:
            self.text = text.format(**frames)
        except KeyError as e:
            raise DataflowError(f"query names {{{e.args[0]}}} but no frame was given for it; given: "
                                f"{', '.join(frames) or 'none'} (session.sql(query, {e.args[0]}=frame))") from None

    def __repr__(self):
        return f"<Query {self.text!r}>"


class FlinkSQLSession(ColumnarSession):
    engine = "flink-sql"
    frames = "flink-sql"

    def __init__(self, generic, supports, settings, own):
        super().__init__(generic, supports, settings, own)
        self._names = itertools.count()

    def frame(self, partitions, columns):
        return Frame(f"frame_{next(self._names)}", check_frame(partitions, columns), columns)

    def sql(self, query: str, **frames: Frame) -> Query:
        """``query`` over ``frames``: write ``{name}`` where a frame is read (``FROM {rows}``)."""
        return Query(query, frames)

    def collect(self, *queries):
        """Run ``queries`` (a `Frame` stands for ``SELECT * FROM`` it) in one Flink job; each one's rows."""
        queries = [Query("SELECT * FROM {frame}", {"frame": q}) if isinstance(q, Frame) else q for q in queries]
        bad = [q for q in queries if not isinstance(q, Query)]
        if bad:
            raise DataflowError(f"flink-sql collects queries made by session.sql(...) (or frames), got {bad[0]!r}")
        tables = {f.name: (f.partitions, f.columns) for q in queries for f in q.frames.values()}
        sinks = self.generic._call(("sql", tables, [q.text for q in queries], self.generic.stamps.recording))
        return [sinks[f"q{i}"] for i in range(len(queries))]
