"""Flink's own environment: a virtualenv apart from the project's, made by ``archbench setup flink``.

apache-flink cannot share the project's environment: it pins older pandas,
pyarrow and numpy, and Apache Beam (which runs its Python functions) pins
cloudpickle 2.2 -- the project pins cloudpickle 3.1, pandas 3.1, numpy 2.4.
So the ``flink`` engine runs a process of its own in a virtualenv of its
own (`engines.adapters.flink_job`), and this module makes that virtualenv:

1. ``python -m venv PATH`` with the interpreter running archbench (same
   Python version: plans pickled here are unpickled there);
2. ``pip install apache-flink==FLINK_VERSION`` (the one pin, here);
3. ``pip install --no-deps cloudpickle==<the project's pin>`` over Beam's
   2.2.1: a workload file is pickled *by value* by the driver's cloudpickle
   3, whose pickles cloudpickle 2.2 cannot load (``_function_setstate``
   moved); Flink's own jobs run unchanged with 3.1.2;
4. ``pip install --no-deps psutil pytest`` at the project's pins: the
   test suite's functions travel by reference to their modules, which
   import them.

archbench itself is **not** installed there: the job process gets the
driver's import directories on ``PYTHONPATH`` (`engines.adapters.driver_path`,
the project first), so it always runs the very code of the checkout that
started it, and one environment serves every checkout.

The path: ``--path``, else ``$ARCHBENCH_FLINK_ENV``, else
``$XDG_CACHE_HOME/archbench/flink-venv`` (``~/.cache/...``). The engine
reads the same (`env_path`).

    >>> env_path({"ARCHBENCH_FLINK_ENV": "/opt/flink-env"})
    PosixPath('/opt/flink-env')
    >>> env_path({"XDG_CACHE_HOME": "/c"})
    PosixPath('/c/archbench/flink-venv')
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

FLINK_VERSION = "2.3.0"      # the one pin of apache-flink (pyproject.toml names it in a comment)
ENV_VAR = "ARCHBENCH_FLINK_ENV"
SETUP = "run `archbench setup flink`"


def env_path(environ=os.environ) -> Path:
    """Where Flink's environment is (or will be made)."""
    if environ.get(ENV_VAR):
        return Path(environ[ENV_VAR])
    cache = Path(environ["XDG_CACHE_HOME"]) if environ.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return cache / "archbench" / "flink-venv"


def python_of(env: Path) -> Path:
    return env / "bin" / "python"


def installed_version(env: Path) -> str | None:
    """The apache-flink version installed in ``env``, or None when there is none."""
    for dist in env.glob("lib/python*/site-packages/apache_flink-*.dist-info"):
        match = re.match(r"apache_flink-(.+)\.dist-info", dist.name)
        if match:
            return match.group(1)
    return None


def missing(env: Path) -> str:
    """Why the environment cannot run the engine (empty when it can)."""
    if not python_of(env).exists():
        return f"Flink's environment is not set up ({env} does not exist) — {SETUP}"
    version = installed_version(env)
    if version is None:
        return f"{env} has no apache-flink — {SETUP}"
    if version != FLINK_VERSION:
        return f"{env} has apache-flink {version}, archbench pins {FLINK_VERSION} — {SETUP}"
    return ""


def project_pin(name: str) -> str:
    """``name==version`` as the project pins it (its installed metadata), else ``name`` alone."""
    try:
        for req in metadata.requires("archbench") or ():
            match = re.match(rf"{re.escape(name)}\s*==\s*([^\s;,]+)", req, re.IGNORECASE)
            if match:
                return f"{name}=={match.group(1)}"
    except metadata.PackageNotFoundError:
        pass
    return name


def setup(env: Path, say=print) -> None:
    """Make Flink's environment at ``env`` (again, if it exists), step by step, saying what it does.

    Raises `SetupError` with the fix when a step fails (the network is missing, say). Java is not
    needed to make the environment, only to run Flink: without it, the setup says so and goes on, and
    the engine stays unavailable, naming Java, until there is one.
    """
    note = java_note()
    if note:
        say(note)
    steps = [
        ("creating the virtualenv", [sys.executable, "-m", "venv", "--clear", str(env)]),
        (f"installing apache-flink=={FLINK_VERSION} (about 450 MB to download)",
         [str(python_of(env)), "-m", "pip", "install", "--progress-bar", "on", f"apache-flink=={FLINK_VERSION}"]),
        ("installing the driver's cloudpickle over Beam's pin (by-value pickles of workload files)",
         [str(python_of(env)), "-m", "pip", "install", "--no-deps", project_pin("cloudpickle")]),
        ("installing what the test suite's modules import",
         [str(python_of(env)), "-m", "pip", "install", project_pin("psutil"), project_pin("pytest")]),
    ]
    for i, (what, command) in enumerate(steps, 1):
        say(f"[{i}/{len(steps)}] {what}")
        done = subprocess.run(command, stdout=None, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            raise SetupError(_failed(what, done.stderr))
    check = subprocess.run([str(python_of(env)), "-c", "import pyflink.datastream, cloudpickle; "
                            "print(cloudpickle.__version__)"], capture_output=True, text=True)
    if check.returncode != 0:
        raise SetupError(_failed("importing pyflink in the new environment", check.stderr))
    say(f"Flink's environment is ready: {env} (apache-flink {FLINK_VERSION}, cloudpickle {check.stdout.strip()})")


def java_note() -> str:
    """What to tell the user making Flink's environment on a machine without Java (empty with Java)."""
    from engines.adapters import java_available

    ok, why = java_available()
    return "" if ok else f"note: Flink will need Java to run, and there is none here: {why}"


def _failed(what: str, stderr: str) -> str:
    tail = "\n".join(stderr.strip().splitlines()[-6:])
    hint = ""
    if re.search(r"(?i)connection|resolve|network|no matching distribution|timed out", stderr):
        hint = "\nIs PyPI reachable? pip needs the network (or a proxy/index: PIP_INDEX_URL)."
    return f"failed while {what}:\n{tail}{hint}"


class SetupError(Exception):
    """``archbench setup`` could not make an environment; the message says why and what to do."""
