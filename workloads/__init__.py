"""Workloads: programs written once, against the session's three models.

A workload is a class in its own module. Subclassing `Workload` with a
``name`` registers it; every module of this package is a built-in one, and a
user's own module is loaded with `load_workload_file` (``archbench run
--workload-file my_workload.py``). The harness calls, for each cell::

    inputs = workload.generate(seed=seed, **workload.sizes[size])
    got = workload.runner(engine)(session, inputs)      # timed: run, or run_columnar
    workload.check(got, workload.reference(inputs))     # not timed

A workload may also have a **columnar form**: ``run_columnar(session,
inputs)``, the same question written as a DataFrame program. Only the
idiomatic variants (``spark-df``, ``dask-df``; `engines.adapters.columnar`)
run it, and they run nothing else: a workload without one is
``unsupported`` there. It must return what ``run`` returns, so the same
``check`` against the same reference applies.

    >>> wc = get_workload("wordcount")
    >>> wc.model, wc.unit
    ('dataflow', 'words')
    >>> get_workload("groupby").has_columnar_form(), get_workload("fanout").has_columnar_form()
    (True, False)
    >>> get_workload("wordcont")
    Traceback (most recent call last):
    ...
    engines.UnknownName: unknown workload 'wordcont'; did you mean wordcount? choose from: ...
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import pkgutil
import re
import sys
from pathlib import Path

from engines import Engine, UnknownName
from engines.api import MODELS, ArchbenchError, UnsupportedModel
from engines.support import Support
from workloads.check import same

# helper modules of this package that hold no workload
_NOT_WORKLOADS = {"check"}
SIZES = ("tiny", "small", "medium", "large")

_registry: dict[str, type["Workload"]] = {}
TRAITS = ("shuffle-heavy", "fine-grained tasks", "dependent chains", "stateful actors", "streaming latency",
          "iterative", "skew", "narrow work")
ARCHITECTURES = ("data parallel", "task parallel", "actors", "baseline")


class Workload:
    """Base class of every workload; see the module docstring for the protocol."""

    name: str = ""
    model: str = ""          # "dataflow" | "tasks" | "actors"
    unit: str = "items"      # what throughput counts
    sizes: dict[str, dict] = {}
    quick: bool = False      # part of the quick matrix `archbench run` runs with no flags
    #: what the workload stresses, from TRAITS (or your own words): the choice report's verdict per trait
    traits: tuple[str, ...] = ()
    #: the architecture the hypothesis expects to win -- "data parallel", "task parallel", "actors" or
    #: "baseline" -- or None when it names none; the choice report marks it confirmed, refuted or undecided
    expect: str | None = None
    #: the row field the verdict compares (lower is better): run time, or a latency percentile
    judge_by: str = "run_s"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            return  # an abstract helper class
        if cls.model not in MODELS:
            raise ArchbenchError(f"workload {cls.name!r} ({cls.__module__}): model must be one of "
                                 f"{', '.join(MODELS)}, got {cls.model!r}")
        if cls.expect is not None and cls.expect not in ARCHITECTURES:
            raise ArchbenchError(f"workload {cls.name!r} ({cls.__module__}): expect must be one of "
                                 f"{', '.join(ARCHITECTURES)} or None, got {cls.expect!r}")
        missing = [s for s in SIZES if s not in cls.sizes]
        if missing:
            raise ArchbenchError(f"workload {cls.name!r} ({cls.__module__}): sizes lacks {', '.join(missing)}; "
                                 f"give all of {', '.join(SIZES)}")
        old = _registry.get(cls.name)
        if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ArchbenchError(f"two workloads are named {cls.name!r}: {old.__module__}.{old.__qualname__} "
                                 f"and {cls.__module__}.{cls.__qualname__}; rename one")
        _registry[cls.name] = cls

    def declared(self) -> dict:
        """What the choice report needs to judge this workload, as plain data (kept in the manifest).

        >>> get_workload("wordcount").declared()["expect"]
        'data parallel'
        """
        doc = sys.modules[type(self).__module__].__doc__ or ""
        hypothesis = next((" ".join(p.split()) for p in doc.split("\n\n") if p.strip().startswith("Hypothesis:")), "")
        return {"model": self.model, "unit": self.unit, "traits": list(self.traits), "expect": self.expect,
                "judge_by": self.judge_by, "hypothesis": hypothesis, "description": self.description}

    @property
    def description(self) -> str:
        """The first line of the workload module's docstring."""
        doc = sys.modules[type(self).__module__].__doc__ or type(self).__doc__ or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    def generate(self, *, seed: int, **size):
        """Deterministic, picklable inputs for one size."""
        raise NotImplementedError

    def reference(self, inputs):
        """Plain single-process Python: the oracle every engine is checked against."""
        raise NotImplementedError

    def run(self, session, inputs):
        """The program, written once against the session's models."""
        raise NotImplementedError

    #: The columnar form, or None (the default: there is none). A workload that has
    #: one defines ``def run_columnar(self, session, inputs)``: a DataFrame program
    #: for the idiomatic variants, written for the API that ``session.frames``
    #: names ("spark" or "dask"), returning what ``run`` returns.
    run_columnar = None

    @classmethod
    def has_columnar_form(cls) -> bool:
        """Whether this workload defines ``run_columnar``."""
        return cls.run_columnar is not None

    def support_on(self, engine: Engine) -> Support:
        """How ``engine`` runs this workload: a `engines.support.Support`, native, emulated or unsupported.

        The engine's support for the workload's model, except that a
        columnar variant runs only a columnar form.
        """
        support = engine.supports.get(self.model) or Support.unsupported("model unknown to this engine")
        if engine.columnar and support.runs and not self.has_columnar_form():
            return Support.unsupported(f"{self.name} has no columnar form (run_columnar); {engine.name} runs only "
                                       f"columnar forms -- the generic translation is engine {engine.generic}")
        return support

    def runner(self, engine: Engine):
        """What runs on ``engine``: ``run_columnar`` on a columnar variant, ``run`` on every other engine."""
        if not engine.columnar:
            return self.run
        if not self.has_columnar_form():
            raise UnsupportedModel(self.support_on(engine).why)
        return self.run_columnar

    def check(self, got, want) -> None:
        """Raise `workloads.check.WrongResult` unless ``got`` matches ``want``.

        Default: canonical equality; a dataflow's sinks may come in any order.
        """
        same(got, want, unordered=self.model == "dataflow")

    def units(self, inputs) -> int:
        """How many units (``unit``) one run processes; throughput = units / run time."""
        raise NotImplementedError


def builtin_modules() -> list[str]:
    """Every module of this package that holds workloads: one workload (or a family) per module."""
    return [f"workloads.{m.name}" for m in pkgutil.iter_modules(__path__)
            if not m.name.startswith("_") and m.name not in _NOT_WORKLOADS]


def _load_builtins() -> None:
    for module in builtin_modules():
        importlib.import_module(module)


def workload_names() -> list[str]:
    """Every registered workload (built-ins and loaded files), sorted by model then name."""
    _load_builtins()
    return sorted(_registry, key=lambda n: (MODELS.index(_registry[n].model), n))


def quick_workloads() -> list[str]:
    """The workloads of the quick matrix: one per model, and the stream."""
    return [n for n in workload_names() if _registry[n].quick]


def get_workload(name: str) -> Workload:
    """A fresh instance of the workload called ``name``."""
    _load_builtins()
    if name not in _registry:
        close = difflib.get_close_matches(name, _registry, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise UnknownName(f"unknown workload {name!r}; {hint}choose from: {', '.join(workload_names())} "
                          "(or load your own with --workload-file)")
    return _registry[name]()


def load_workload_file(path: str | Path) -> list[str]:
    """Import a user's workload module from ``path``; the names it registered.

    The module is registered with cloudpickle *by value*: worker processes
    cannot import a file that is not on their path, so its functions and
    classes travel inside each pickle instead.
    """
    import cloudpickle

    path = Path(path).resolve()
    if not path.is_file():
        raise ArchbenchError(f"--workload-file {path}: no such file")
    module_name = "archbench_user_" + re.sub(r"\W", "_", path.stem)
    if module_name in sys.modules:
        return [n for n, c in _registry.items() if c.__module__ == module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    before = set(_registry)
    try:
        spec.loader.exec_module(module)
    except ArchbenchError:
        del sys.modules[module_name]
        raise
    except Exception as e:
        del sys.modules[module_name]
        raise ArchbenchError(f"--workload-file {path}: importing it raised {type(e).__name__}: {e}") from e
    cloudpickle.register_pickle_by_value(module)
    added = [n for n, c in _registry.items() if c.__module__ == module_name or n not in before]
    if not added:
        raise ArchbenchError(f"--workload-file {path}: defines no Workload subclass with a name; "
                             "see the README, 'Your own workload'")
    return added
