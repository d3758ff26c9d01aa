"""Run a Dataflow from the command line on mini-data, the way Bytewax's run script does.

::

    python -m engines.mini.run my_flow                      # the variable `flow` in my_flow.py, one worker
    python -m engines.mini.run my_flow:get_flow(4) -w 2     # a call with literal arguments; two workers
    python -m engines.mini.run my_flow -w 2 --output out/   # out/<sink>-0.jsonl, one JSON value a line

    # one cluster of two processes (two hosts, or one host as here), two workers each:
    python -m engines.mini.run my_flow -w 2 -i 0 -a "127.0.0.1:7100;127.0.0.1:7101"
    python -m engines.mini.run my_flow -w 2 -i 1 -a "127.0.0.1:7100;127.0.0.1:7101"

The import string is ``module[:getter]``: ``module`` is found from the
current directory (a path ending in ``.py`` works too); ``getter`` is a
variable (default ``flow``) or a call with literal arguments such as
``get_flow(4)`` -- parsed, never ``eval``-ed. ``-w`` is the number of worker
processes this process starts. ``-i``/``-a`` make this process number ``i``
of a multi-process cluster whose processes listen on the ``-a`` addresses:
process ``i`` owns workers ``i*w .. i*w+w-1`` of the ``len(a)*w``, every
process reads the same flow (so all agree on who reads which partition),
and each process writes the sink items its own workers collected. The
processes authenticate with ``ARCHBENCH_SECRET`` or ``--secret-file``
(`engines.mini.auth.cluster_secret`: beyond loopback one is required).

Output: with ``--output DIR`` each ``collect`` sink goes to
``DIR/<sink>-<process id>.jsonl``, one JSON value per line (tuples become
arrays); without it, to stdout, one ``{"sink": ..., "item": ...}`` per line.

A usage mistake -- a missing module, a bad getter, a malformed address, a
port in use -- prints one line on stderr and exits with status 2; a flow
that fails prints the error (naming the step) and exits with status 1.

    >>> parse_getter("get_flow(4, name='x')")
    ('get_flow', (4,), {'name': 'x'}, True)
    >>> parse_addresses("127.0.0.1:7100; [::1]:7101")
    [('127.0.0.1', 7100), ('::1', 7101)]
"""

from __future__ import annotations

import argparse
import ast
import errno
import importlib
import json
import os
import sys
from pathlib import Path

from engines.api import ArchbenchError, Dataflow, DataflowError
from engines.mini.auth import AuthError, cluster_secret
from engines.mini.cluster import ClusterError, Host
from engines.mini.dataparallel import drive, drive_stream
from engines.plan import compile

RUNTIME = "engines.mini.dataparallel:DataWorker"


class UsageError(ArchbenchError):
    """A command-line mistake; the message is the one line printed."""


# ---------------------------------------------------------------- reading the command line


def parse_getter(text: str) -> tuple[str, tuple, dict, bool]:
    """``(name, args, kwargs, is_call)`` of ``flow`` or ``get_flow(4)``; literals only."""
    try:
        node = ast.parse(text, mode="eval").body
        if isinstance(node, ast.Name):
            return node.id, (), {}, False
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            args = tuple(ast.literal_eval(a) for a in node.args)
            kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg}
            if len(kwargs) == len(node.keywords):
                return node.func.id, args, kwargs, True
    except (SyntaxError, ValueError):
        pass
    raise UsageError(f"bad getter {text!r}: give a variable name (flow) or a call with literal "
                     "arguments (get_flow(4))")


def load_flow(import_str: str) -> Dataflow:
    """The Dataflow named by ``module[:getter]`` (the module is searched from the current directory)."""
    module_name, _, getter = import_str.partition(":")
    if module_name.endswith(".py"):
        path = Path(module_name).resolve()
        if not path.exists():
            raise UsageError(f"no flow file {module_name}")
        sys.path.insert(0, str(path.parent))
        module_name = path.stem
    else:
        sys.path.insert(0, os.getcwd())
    name, args, kwargs, is_call = parse_getter(getter or "flow")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            raise UsageError(f"cannot import the flow module {module_name!r}: no such module "
                             f"(searched from {os.getcwd()})") from None
        raise UsageError(f"importing {module_name!r} failed: {e}") from None
    except Exception as e:
        raise UsageError(f"importing {module_name!r} raised {type(e).__name__}: {e}") from None
    if not hasattr(module, name):
        found = sorted(k for k, v in vars(module).items() if isinstance(v, Dataflow) or
                       (callable(v) and not k.startswith("_") and getattr(v, "__module__", "") == module.__name__))
        raise UsageError(f"module {module_name!r} has no {name!r}" + (f"; it has: {', '.join(found)}" if found else ""))
    flow = getattr(module, name)
    if is_call:
        if not callable(flow):
            raise UsageError(f"{module_name}:{name} is a {type(flow).__name__}, not a function to call")
        try:
            flow = flow(*args, **kwargs)
        except Exception as e:
            raise UsageError(f"{module_name}:{getter} raised {type(e).__name__}: {e}") from None
    if not isinstance(flow, Dataflow):
        raise UsageError(f"{module_name}:{getter or 'flow'} is a {type(flow).__name__}, not a Dataflow"
                         + (" (did you mean to call it? add '()')" if callable(flow) else ""))
    return flow


def parse_addresses(text: str) -> list[tuple[str, int]]:
    """``host:port;host:port`` (``[v6]:port`` for IPv6) as a list of ``(host, port)``."""
    out = []
    for part in (p.strip() for p in text.split(";")):
        host, sep, port = part.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not (sep and host and port.isdigit() and 0 < int(port) < 65536):
            raise UsageError(f"-a: {part!r} is not host:port (expected e.g. \"127.0.0.1:7100;127.0.0.1:7101\")")
        out.append((host, int(port)))
    return out


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m engines.mini.run",
                description="Run a Dataflow on mini-data worker processes (flags as in Bytewax's run script).")
    p.add_argument("import_str", metavar="module[:getter]", help="the flow: module and a variable or a call")
    p.add_argument("-w", "--workers-per-process", type=int, default=1, dest="workers", help="worker processes here")
    p.add_argument("-i", "--process-id", type=int, default=None, help="this process's index in -a")
    p.add_argument("-a", "--addresses", default=None, help='every process\'s address, "host:port;host:port"')
    p.add_argument("--output", default=None, metavar="DIR", help="write DIR/<sink>-<process id>.jsonl")
    p.add_argument("--secret-file", default=None, help="the cluster's shared secret (else ARCHBENCH_SECRET)")
    return p


# ---------------------------------------------------------------- running


def _jsonable(value):
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return repr(value)


def write(out: dict[str, list], output: str | None, process_id: int) -> None:
    """Each sink to ``output/<sink>-<process id>.jsonl``, or every item to stdout."""
    if output is None:
        try:
            for sink, items in out.items():
                for item in items:
                    print(json.dumps({"sink": sink, "item": item}, default=_jsonable))
            sys.stdout.flush()
        except BrokenPipeError:     # the reader has gone (``| head``): the rest is unwanted, not an error
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    for sink, items in out.items():
        with open(folder / f"{sink.replace(os.sep, '_')}-{process_id}.jsonl", "w") as f:
            for item in items:
                f.write(json.dumps(item, default=_jsonable) + "\n")


def start(args) -> tuple[Dataflow, Host]:
    """Check the command line, load the flow, start this process's part of the cluster."""
    if args.workers < 1:
        raise UsageError(f"-w must be at least 1, got {args.workers}")
    if (args.process_id is None) != (args.addresses is None):
        raise UsageError("-i and -a go together: -i is this process's index in the -a list")
    addresses = parse_addresses(args.addresses) if args.addresses else None
    pid_ = args.process_id or 0
    if addresses and not 0 <= pid_ < len(addresses):
        raise UsageError(f"-i {pid_} is out of range: -a lists {len(addresses)} addresses (ids 0..{len(addresses) - 1})")
    flow = load_flow(args.import_str)
    try:
        secret = cluster_secret([h for h, _ in addresses], args.secret_file) if addresses else None
        host = Host(args.workers, RUNTIME, process_id=pid_, addresses=addresses, secret=secret)
    except AuthError as e:
        raise UsageError(str(e)) from None
    except OSError as e:
        if addresses is None:
            raise
        h, port = addresses[pid_]
        why = "address already in use" if e.errno == errno.EADDRINUSE else (e.strerror or str(e))
        raise UsageError(f"cannot listen on {h}:{port} (process {pid_} in -a): {why}") from None
    except ClusterError as e:
        raise UsageError(str(e)) from None
    return flow, host


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        flow, host = start(args)
    except UsageError as e:
        print(f"python -m engines.mini.run: error: {e}", file=sys.stderr)
        return 2
    try:
        plan = compile(flow)
        out = (drive_stream if plan.streaming else drive)(plan, host, run=1)[0]
        write(out, args.output, host.process_id)
        host.barrier("done")
        return 0
    except (DataflowError, ClusterError) as e:
        for conn in host.peers.values():           # tell the other processes why, before leaving
            try:
                conn.send(("abort", str(e).splitlines()[0]))
            except OSError:
                pass
        print(f"python -m engines.mini.run: flow {flow.name!r} failed: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        host.close()


if __name__ == "__main__":
    sys.exit(main())
