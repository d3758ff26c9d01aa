"""What the three mini engines share: settings, a cluster to start, and the session around it.

Each mode is a runtime the cluster runs in every worker (`engines.mini.cluster`)
plus a driver; what differs between the modes is only that. A mode's engine
says which runtime (``runtime`` for worker processes, ``local_runtime`` for
the deterministic in-process form), adds its own settings
(`MiniEngine.mode_settings`), and builds its session on the host that
`MiniEngine.start_host` starts. Every setting below is recorded in a run's
manifest, as the session has it.

    >>> from engines.mini.dataparallel import MiniDataEngine
    >>> settings = MiniDataEngine().settings(2, processes=False)
    >>> settings["workers"], settings["transport"], settings["processes"]
    (2, 'driver: a Unix socket (TCP between machines); workers: TCP; HMAC-SHA256 authenticated', False)
"""

from __future__ import annotations

from engines import Engine
from engines.api import Session
from engines.mini.cluster import SPIN, Host, InProcessHost
from engines.mini.trace import Recording

COMMON_SETTINGS = {"processes": True, "start_method": "spawn (fresh interpreters)",
                   "transport": "driver: a Unix socket (TCP between machines); workers: TCP; HMAC-SHA256 authenticated",
                   "heartbeat_s": 1.0, "heartbeat_timeout_s": 30.0,
                   "spin_us": round(SPIN * 1e6)}   # a reader expecting an answer at once polls this long before it sleeps


class MiniEngine(Engine):
    """An engine of the mini family: a cluster of worker processes running the mode's runtime."""

    runtime = ""              # "module:Class" of the mode's cluster runtime, built in each worker process
    local_runtime = None      # the same runtime, as a class, for the in-process form (``processes=False``)

    def mode_settings(self) -> dict:
        """The mode's own settings (defaults; options given to ``start`` override them)."""
        return {}

    def settings(self, workers: int, **options) -> dict:
        return {"workers": workers, **COMMON_SETTINGS, **self.mode_settings(), **options}

    def start_host(self, settings: dict, options: dict | None = None, local_options: dict | None = None):
        """The cluster for a session with ``settings``: worker processes, or the in-process form.

        ``options`` go to every worker's runtime; ``local_options``, when
        given, replace them in the in-process form.
        """
        if settings["processes"]:
            return Host(settings["workers"], self.runtime, options=options, heartbeat=settings["heartbeat_s"],
                        timeout=settings["heartbeat_timeout_s"], spin=_spin(settings["spin_us"]))
        return InProcessHost(settings["workers"], self.local_runtime,
                             options=options if local_options is None else local_options)


def _spin(us) -> float:
    """The ``spin_us`` setting, in seconds: 0 (always sleep at once) to 100,000 us."""
    if isinstance(us, bool) or not isinstance(us, (int, float)) or not 0 <= us <= 100_000:
        raise ValueError(f"spin_us is how many microseconds a reader expecting an answer polls before it "
                         f"sleeps: a number from 0 (sleep at once) to 100000; got {us!r}")
    return us / 1e6


class MiniSession(Recording, Session):
    """A session on a mini cluster: the ``host``, its workers' pids, and closing it."""

    def __init__(self, workers: int, supports: dict, settings: dict, host):
        super().__init__(workers, supports, settings)
        self.host = host

    @property
    def worker_pids(self) -> list[int]:
        return list(self.host.worker_pids)

    def close(self) -> None:
        self.host.close()
