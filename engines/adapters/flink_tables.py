"""flink-sql in the Flink job process: frames as Flink tables, queries run by Flink's SQL planner.

Runs in Flink's own environment (`engines.adapters.flink_job` calls `run`).
A frame's partitions become a table the way a read becomes a stream in the
generic translation -- ``from_collection(range(P)).rebalance()`` and a
`Rows` ``flat_map`` that makes partition *i* on the worker that gets
index *i* -- but typed: each row a Flink ``Row`` of the frame's columns
(``STRING``, ``BIGINT``, ``DOUBLE``), so from there on the planner works on
binary rows in the JVM and no Python runs. ``from_data_stream`` makes it a
table, registered under the frame's name; each query is planned by Flink's
SQL planner (hash aggregates, a hash or broadcast join, chosen by Flink) and
its rows come back through ``to_data_stream`` into a `Collect`. Every query
of one ``collect`` runs in **one** BATCH job.
"""

from __future__ import annotations

from pyflink.common import Row, Types
from pyflink.datastream.connectors import Sink
from pyflink.datastream.functions import FlatMapFunction
from pyflink.table import StreamTableEnvironment

from engines.adapters.columnar import partition_columns
from engines.adapters.flink_translate import DISCARD, Collect, Outbox, _Guarded

#: a frame's column types as Flink types them
TYPES = {str: Types.STRING, int: Types.LONG, float: Types.DOUBLE}


class Rows(_Guarded, FlatMapFunction):
    """Partition index in, that partition's rows out as Flink ``Row`` s (`partition_columns` checks them)."""

    def __init__(self, out, partitions, columns):
        _Guarded.__init__(self, out, ())
        self.partitions, self.columns = partitions, columns

    def flat_map(self, index):
        try:
            with self.stamp(f"frame partition {index}", "io"):
                data = partition_columns(self.partitions[index], index, self.columns)
        except Exception as e:
            raise self.failed(e) from None
        return [Row(*values) for values in zip(*data)]


def run(server, tables: dict, queries: list[str], tracing: bool = False) -> tuple:
    """Register ``tables`` (``{name: (partitions, {column: str | int | float})}``), run ``queries`` in one job;
    the reply for the driver, with sinks ``q0``, ``q1``, ... holding each query's rows as tuples."""
    sinks = [f"q{i}" for i in range(len(queries))]

    def build(env, port):
        out = Outbox(port, tracing)
        t_env = StreamTableEnvironment.create(env)
        for name, (partitions, columns) in tables.items():
            row = Types.ROW_NAMED(list(columns), [TYPES[kind]() for kind in columns.values()])
            rows = (env.from_collection(list(range(len(partitions))), type_info=Types.INT()).rebalance()
                    .flat_map(Rows(out, partitions, columns), output_type=row).name(name))
            t_env.create_temporary_view(name, t_env.from_data_stream(rows))
        for sink, query in zip(sinks, queries):
            t_env.to_data_stream(t_env.sql_query(query)).flat_map(Collect(out, sink, rows=True)) \
                .name(f"collect {sink}").sink_to(Sink(DISCARD))

    return server.run(sinks, build, "sql")
