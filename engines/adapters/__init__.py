"""Adapters: the same three models, driven through Spark, Dask, Ray and Bytewax.

Each adapter is one module that a student can read beside the engine's own
documentation: it says, model by model, what the neutral program becomes in
that engine's idiom (a dataflow *is* an RDD job on Spark, a graph of futures
on Dask, a set of Ray tasks passing ObjectRefs, a Bytewax operator graph).

Beside ``spark`` and ``dask`` stand their idiomatic variants, ``spark-df``
(`engines.adapters.spark_df`) and ``dask-df`` (`engines.adapters.dask_df`):
the same cluster driven through its DataFrame API, for the workloads that
have a columnar form (`engines.adapters.columnar` says how and why).

What they share lives here:

- `AdapterEngine` -- the options an engine accepts (an unknown one lists
  the allowed ones). Availability, with a reason that says what to
  install, is every engine's (`engines.Engine.available`).
- `AdapterSession` -- how every adapter's session opens and closes: the log
  directory the engine writes its own logs to (so a run is quiet on the
  terminal), the framework's Python logger into a file there, and a
  session closed again when starting it fails.
- `missing_reason` (from `engines`) / `java_reason` -- the text of an
  unavailable engine's reason, built apart so it can be tested without
  uninstalling anything.
- `driver_path` / `environ` -- worker processes that the engine starts
  itself (Spark's Python workers, Ray's) do not inherit this process's
  ``sys.path``; they get its project and test directories through
  ``PYTHONPATH``, set only while the engine launches.
- `by_value_modules` / `send_by_value_too` / `pickle_by_value_fallback` -- a
  user's workload file is pickled *by value* (workers cannot import it):
  engines with their own copy of cloudpickle (Ray, PySpark) are told so too,
  and where an engine pickles records with plain ``pickle`` (Spark's and
  Bytewax's workers), a record of a class from that file falls back to
  cloudpickle, as Dask does.
- `logs_to_file` -- point a Python logger (``distributed``, ``ray``) at a
  file in the log directory instead of the terminal.

Fairness (DESIGN.md): every adapter starts ``workers`` worker processes or
slots with one thread each, and records every setting that changes speed in
``settings()``, which ``start()`` then uses unchanged. Each adapter accepts
one option that points it at a running cluster instead of a local one
(``master`` for Spark, ``address`` for Dask and Ray); the settings record it.

    >>> missing_reason("ray", "ray")
    "ray is not installed — pip install 'archbench[ray]'"
    >>> java_reason(java_home=None, java_on_path=None)
    'no Java runtime found — install openjdk-17-jre-headless (Debian) or set JAVA_HOME'
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from engines import Engine, missing_reason   # missing_reason: also the adapters' own name for it
from engines.api import ArchbenchError, Session

#: the option every adapter takes: where the engine's own logs go (the harness
#: passes the run folder's logs directory; default a fresh temporary directory)
LOG_DIR = "log_dir"


def java_reason(java_home: str | None, java_on_path: str | None) -> str:
    """Why Spark cannot start without a JVM (empty when one is found).

    >>> java_reason(java_home="/nonexistent", java_on_path=None)
    'JAVA_HOME=/nonexistent has no bin/java — point JAVA_HOME at a Java 17 runtime, or unset it'
    >>> java_reason(java_home=None, java_on_path="/usr/bin/java")
    ''
    """
    if java_home:
        if not Path(java_home, "bin", "java").exists():
            return f"JAVA_HOME={java_home} has no bin/java — point JAVA_HOME at a Java 17 runtime, or unset it"
        return ""
    if java_on_path:
        return ""
    return "no Java runtime found — install openjdk-17-jre-headless (Debian) or set JAVA_HOME"


class AdapterEngine(Engine):
    """An engine driven through a third-party framework, imported only in ``start``.

    Subclasses give ``requires`` (the modules that must be importable),
    ``extra`` (the pip extra that installs them) and ``options`` (the
    ``start`` options they accept besides ``log_dir``).
    """

    options: tuple[str, ...] = ()

    def check_options(self, options: dict) -> None:
        """Refuse an option this engine does not know, listing the ones it does."""
        allowed = (*self.options, LOG_DIR)
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise ArchbenchError(f"engine {self.name!r} has no option {', '.join(map(repr, unknown))}; "
                                 f"its options: {', '.join(allowed)}")


class AdapterSession(Session):
    """How every adapter's session opens and closes.

    ``__init__`` makes the session's log directory, ``self.logs`` (the
    ``log_dir`` option, or a new temporary directory; the settings record
    it), and, given ``logger``, sends that Python logger's records at
    ``level`` and above to ``<engine>-driver.log`` there instead of the
    terminal. A subclass then starts its framework inside
    ``with self.opening():``. ``self.undo`` holds what `close` puts back,
    last first (the logger, and whatever the subclass adds); a subclass's
    ``close`` stops its own things, then calls ``super().close()``.
    """

    def __init__(self, workers: int, supports: dict, settings: dict, logger: str | None = None,
                 level: int = logging.INFO):
        super().__init__(workers, supports, settings)
        self.logs = log_dir(self.settings[LOG_DIR], self.engine)
        self.settings[LOG_DIR] = str(self.logs)
        self.undo = contextlib.ExitStack()
        if logger is not None:
            self.undo.callback(logs_to_file(logger, self.logs / f"{self.engine}-driver.log", level))

    @contextlib.contextmanager
    def opening(self):
        """Start the framework in this block: if anything in it fails, the session is closed
        (so ``close`` must cope with a session half started) and the error raised."""
        try:
            yield
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Put back what the session changed (``self.undo``). Safe to call twice."""
        self.undo.close()


def gone(listing) -> str:
    """The processes of a `Session.fault_targets` listing that are gone now, named (``''`` if none).

    An engine's own error for a lost process rarely says which it was (Spark, Flink); a session keeps
    its last listing and names the missing ones in the error.
    """
    import psutil

    def alive(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    return " and ".join(f"{what.split(' (')[0]} (pid {pid})" for pid, what in listing if not alive(pid))


def log_dir(path: str | os.PathLike | None, engine: str) -> Path:
    """The directory an engine's logs go to: ``path`` (created, made absolute: Spark wants its event log
    directory as a file URI), or a new temporary one."""
    if path:
        p = Path(path).resolve()
        p.mkdir(parents=True, exist_ok=True)
        return p
    return Path(tempfile.mkdtemp(prefix=f"archbench-{engine}-"))


def java_available() -> tuple[bool, str]:
    """Whether a JVM can be started here (Spark needs one)."""
    why = java_reason(os.environ.get("JAVA_HOME"), shutil.which("java"))
    return not why, why


def logs_to_file(name: str, path: Path, level: int = logging.INFO):
    """Send logger ``name``'s records to ``path`` and no longer to the terminal.

    Returns a function that puts the logger back as it was. Mutates the
    logger (its handlers, level and propagation) until then.
    """
    logger = logging.getLogger(name)
    saved = (list(logger.handlers), logger.level, logger.propagate)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for h in saved[0]:
        logger.removeHandler(h)
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False

    def restore() -> None:
        logger.removeHandler(handler)
        handler.close()
        for h in saved[0]:
            logger.addHandler(h)
        logger.setLevel(saved[1])
        logger.propagate = saved[2]

    return restore


def driver_path() -> str:
    """This process's own import directories (not the interpreter's), as a ``PYTHONPATH`` value.

    Functions are pickled by reference to their module; a worker started by
    the engine must be able to import the modules this process imported
    from its project and test directories.
    """
    system = tuple(p for p in {sys.prefix, sys.base_prefix, sys.exec_prefix} if p)
    own = []
    for entry in sys.path:
        entry = os.path.abspath(entry or os.getcwd())
        if os.path.isdir(entry) and not entry.startswith(system) and entry not in own:
            own.append(entry)
    inherited = os.environ.get("PYTHONPATH")
    return os.pathsep.join(own + ([inherited] if inherited else []))


@contextlib.contextmanager
def environ(**values: str | None):
    """Set environment variables (None removes one) while the block runs; then restore them.

    For launching an engine's processes, which copy the environment when they start.
    """
    saved = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def by_value_modules() -> list[str]:
    """The modules cloudpickle sends by value (a user's ``--workload-file``), sorted."""
    import cloudpickle

    return sorted(cloudpickle.list_registry_pickle_by_value())


def send_by_value_too(vendored_cloudpickle) -> None:
    """Register the by-value modules with an engine's own copy of cloudpickle (Ray and PySpark vendor one)."""
    for name in by_value_modules():
        vendored_cloudpickle.register_pickle_by_value(sys.modules[name])


def pickle_by_value_fallback(cloudpickle=None) -> None:
    """In a worker process: ``pickle.dumps`` falls back to cloudpickle when plain pickle fails.

    Plain pickle names a class by its module, which a worker cannot import
    when the class comes from a user's workload file; cloudpickle sends the
    class along (Dask's serializer does the same). Records that plain pickle
    handles still go the fast way. ``cloudpickle``: the copy that sent the
    class here (an engine's own copy keeps its own record of classes sent by
    value, so only that copy gives the driver back its very class). Mutates
    the ``pickle`` module of this process; call it only in processes that
    run an engine's workers.
    """
    import pickle

    if cloudpickle is None:
        import cloudpickle
    if getattr(pickle.dumps, "falls_back", False):
        return
    plain = pickle.dumps

    def dumps(obj, *args, **kwargs):
        try:
            return plain(obj, *args, **kwargs)
        except (pickle.PicklingError, AttributeError, TypeError):
            return cloudpickle.dumps(obj, *args, **kwargs)

    dumps.falls_back = True
    pickle.dumps = dumps
