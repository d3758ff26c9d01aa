"""The engine registry: every engine archbench can drive, by name.

An engine says whether it can run here (``available()`` with the reason
when not), how it runs each of the three models (``supports``: one
`engines.support.Support` per model), its version, the settings it will
use, and ``start(workers=N)`` gives a session. Engines are imported only
when asked for, so listing them never starts a JVM or a Ray cluster. An
idiomatic variant (``columnar = True``: ``spark-df``, ``dask-df``) runs the
columnar forms of workloads on its generic engine's cluster
(`engines.adapters.columnar`).

    >>> engine = get_engine("serial")
    >>> engine.supports["tasks"]
    'native'
    >>> get_engine("pool").supports["actors"].why
    'pool work items are anonymous and stateless; no actor can live there'
    >>> with engine.start(workers=1) as session:
    ...     with session.tasks() as tasks:
    ...         tasks.submit(pow, 2, 10).result()
    1024
"""

from __future__ import annotations

import importlib
import importlib.util
from importlib import metadata

from engines.api import MODELS, ArchbenchError, Session
from engines.support import Support


class UnknownName(ArchbenchError, LookupError):
    """A name that is not in a registry; the message lists the valid ones."""


def missing_reason(module: str, extra: str = "") -> str:
    """Why an engine is unavailable when ``module`` is missing, and the fix (the pip extra, when there is one).

    >>> missing_reason("ray", "ray")
    "ray is not installed — pip install 'archbench[ray]'"
    """
    return f"{module} is not installed — pip install 'archbench[{extra}]'" if extra else f"{module} is not installed"


class Engine:
    """What the harness and the CLI know of an engine before starting it."""

    name = "?"
    architecture = "?"          # "baseline" | "data parallel" | "task parallel" | "actors" | "mixed"
    description = ""
    supports: dict[str, Support] = {}
    requires: tuple[str, ...] = ()      # the modules that must be importable (the first: the distribution measured)
    extra = ""                          # the pip extra that installs them
    #: start-up options for a session that will be traced (an instrument that must be on from the start)
    trace_options: dict = {}
    #: start-up options for a session whose cell has a faulted repeat (``--fault``): its recovery, where
    #: recovery costs something even without a fault (Bytewax's store and snapshots)
    fault_options: dict = {}
    columnar = False                    # an idiomatic variant (spark-df, dask-df): it runs a workload's
                                        # columnar form, ``run_columnar``, never the generic ``run``

    def available(self) -> tuple[bool, str]:
        """``(True, "")``, or ``(False, what is missing and how to get it)``."""
        for module in self.requires:
            if importlib.util.find_spec(module) is None:
                return False, missing_reason(module, self.extra)
        return True, ""

    def version(self) -> str:
        """The version of the thing measured (the framework's, or archbench's own)."""
        dist = self.requires[0] if self.requires else "archbench"
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "unknown"

    def settings(self, workers: int, **options) -> dict:
        """Every setting that matters for a fair comparison; ``start`` uses the same."""
        return {"workers": workers, **options}

    def start(self, workers: int = 2, **options) -> Session:
        raise NotImplementedError


class Planned(Engine):
    """An engine on the plan whose issue has not landed; listed so the CLI shows the whole plan."""

    def __init__(self, name: str, architecture: str, description: str):
        self.name, self.architecture, self.description = name, architecture, description
        self.supports = {m: Support.unsupported("not built yet") for m in MODELS}

    def available(self):
        return False, "not built yet"

    def version(self):
        return "-"


# name -> "module:Class" (imported on first use) or a Planned engine
_ENGINES: dict[str, str | Engine] = {
    "serial": "engines.serial:SerialEngine",
    "pool": "engines.pool:PoolEngine",
    "mini-data": "engines.mini.dataparallel:MiniDataEngine",
    "mini-tasks": "engines.mini.taskparallel:MiniTasksEngine",
    "mini-actors": "engines.mini.actors:MiniActorsEngine",
    "spark": "engines.adapters.spark:SparkEngine",
    "spark-df": "engines.adapters.spark_df:SparkDFEngine",
    "dask": "engines.adapters.dask:DaskEngine",
    "dask-df": "engines.adapters.dask_df:DaskDFEngine",
    "ray": "engines.adapters.ray:RayEngine",
    "bytewax": "engines.adapters.bytewax:BytewaxEngine",
    "flink": "engines.adapters.flink:FlinkEngine",
    "flink-sql": "engines.adapters.flink_sql:FlinkSQLEngine",
}
_loaded: dict[str, Engine] = {}


def engine_names() -> list[str]:
    """Every registered engine name, in the order the CLI lists them."""
    return list(_ENGINES)


def get_engine(name: str) -> Engine:
    """The engine called ``name``; an unknown name lists the valid ones."""
    if name not in _ENGINES:
        raise UnknownName(f"unknown engine {name!r}; choose from: {', '.join(_ENGINES)}")
    if name not in _loaded:
        spec = _ENGINES[name]
        if isinstance(spec, Engine):
            _loaded[name] = spec
        else:
            module, cls = spec.split(":")
            _loaded[name] = getattr(importlib.import_module(module), cls)()
    return _loaded[name]
