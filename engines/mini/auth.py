"""Authentication: every connection proves a shared secret before anything is unpickled.

Unpickling runs code -- a pickle can name any function to call -- so a
process that unpickled bytes from whoever connects would run anyone's code.
The mini engine therefore opens every connection (driver to worker, worker
to worker, process to process) with a challenge-response handshake on a
shared secret, using HMAC-SHA256, and reads only small `engines.mini.wire`
handshake frames (decoded with ``struct``) until the peer has proved itself::

    acceptor                                         connector
       -- CHALLENGE  nonce_a (32 random bytes) ------------>
       <- PROOF      nonce_c | HMAC(secret, b"connect" + nonce_a + nonce_c)
       -- WELCOME    HMAC(secret, b"accept" + nonce_c + nonce_a) -->

Both sides prove the secret (mutual): the connector must not unpickle what
an impostor acceptor sends either. Fresh nonces defeat replay; the two
labels stop a proof from being reflected back. Digests are compared with
`hmac.compare_digest` (constant time). The handshake has a deadline, so a
silent connection cannot hold a thread; a connection that fails is logged
(``archbench.mini`` logger) and dropped, and the cluster goes on.

This is authentication, not encryption: on an untrusted network, run the
cluster inside a VPN or an SSH tunnel.

Where the secret comes from:

- a **local cluster** (one driver starting its own workers) makes a random
  one (`new_secret`) and hands it to its workers through the spawn pipe --
  never on a command line or in the environment;
- a **multi-process cluster** (``engines.mini.run -i/-a``) needs the same
  secret in every process: ``ARCHBENCH_SECRET`` or ``--secret-file``
  (`cluster_secret`). Without one, processes that listen only on loopback
  share a per-user secret file (mode 0600, so other users of the host
  cannot read it); a process asked to listen beyond loopback refuses to
  start and says why.

State of a `Listener`: ``sock`` (bound at construction, so "address in use"
is reported at once), ``address`` (``(host, port)``, or a Unix socket's
path), ``on_conn`` (called with each authenticated `Conn`), ``dropped:
int`` (connections refused so far).

Worked example -- a peer that knows the secret and one that does not::

    >>> secret = new_secret()
    >>> got = []
    >>> with Listener("127.0.0.1", 0, secret, got.append) as listener:
    ...     good = connect(listener.address, secret)
    ...     try:
    ...         connect(listener.address, b"wrong")  # doctest: +ELLIPSIS
    ...     except AuthError as e:
    ...         print(e)
    ...     _ = wait_for(lambda: got and listener.dropped, 5)
    ...     print(len(got), listener.dropped)  # doctest: +ELLIPSIS
    authentication with 127.0.0.1:... failed: the peer closed the connection
    1 1
    >>> good.close()
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import secrets
import socket
import threading
import time
from pathlib import Path

from engines.mini.wire import CHALLENGE, PROOF, WELCOME, Conn, PeerClosed, WireError

log = logging.getLogger("archbench.mini")

SECRET_ENV = "ARCHBENCH_SECRET"
NONCE = 32
HANDSHAKE_TIMEOUT = 5.0
MAX_HANDSHAKES = 32      # handshakes in progress at once; more are dropped at once


class AuthError(ConnectionError):
    """A peer failed the handshake, or no secret may be used here (the message says why)."""


# ---------------------------------------------------------------- secrets


def new_secret() -> bytes:
    """32 random bytes: the secret of a local cluster."""
    return secrets.token_bytes(32)


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` resolves to is a loopback address.

    >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("0.0.0.0")
    (True, True, False)
    """
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def cluster_secret(hosts: list[str], secret_file: str | None = None) -> bytes:
    """The shared secret of a multi-process cluster whose processes listen on ``hosts``.

    ``--secret-file``, else ``ARCHBENCH_SECRET``, else -- loopback only --
    the per-user secret. Beyond loopback without a secret: `AuthError`.
    """
    if secret_file:
        try:
            secret = Path(secret_file).read_bytes().strip()
        except OSError as e:
            raise AuthError(f"cannot read the secret file {secret_file}: {e.strerror}") from None
        if not secret:
            raise AuthError(f"the secret file {secret_file} is empty")
        return secret
    if os.environ.get(SECRET_ENV):
        return os.environ[SECRET_ENV].encode()
    outside = [h for h in hosts if not is_loopback(h)]
    if outside:
        raise AuthError(f"refusing to listen on {outside[0]} without a shared secret: beyond loopback anyone "
                        f"who reaches the port could run code in this process; set {SECRET_ENV} or pass "
                        "--secret-file (the same secret in every process)")
    return user_secret()


def user_secret() -> bytes:
    """This user's loopback secret, created on first use in a file only the user can read."""
    base = os.environ.get("XDG_RUNTIME_DIR") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = Path(base) / "archbench"
    path = folder / "mini-secret"
    if not path.exists():
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = folder / f".mini-secret-{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_hex(32).encode())
        try:
            os.link(tmp, path)          # atomic and exclusive: two racing processes agree on one secret
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    if path.stat().st_mode & 0o077:
        raise AuthError(f"{path} is readable by other users; remove it (a new one is made) or set {SECRET_ENV}")
    return path.read_bytes().strip()


# ---------------------------------------------------------------- the handshake


def _digest(secret: bytes, label: bytes, first: bytes, second: bytes) -> bytes:
    return hmac.new(secret, label + first + second, hashlib.sha256).digest()


def _expect(conn: Conn, kind: int, size: int) -> bytes:
    got, payload = conn.read_frame()
    if got != kind or len(payload) != size:
        raise WireError("unexpected handshake frame")
    return bytes(payload)


def accept_handshake(sock: socket.socket, secret: bytes, peer: str, timeout: float = HANDSHAKE_TIMEOUT) -> Conn:
    """Run the acceptor's side; a trusted `Conn`, or `AuthError` (the socket is then closed)."""
    conn = Conn(sock, peer, trusted=False)
    sock.settimeout(timeout)
    try:
        nonce_a = os.urandom(NONCE)
        conn.send_frame(CHALLENGE, [nonce_a])
        proof = _expect(conn, PROOF, NONCE + 32)
        nonce_c, mac = proof[:NONCE], proof[NONCE:]
        if not hmac.compare_digest(mac, _digest(secret, b"connect", nonce_a, nonce_c)):
            raise AuthError("wrong secret")
        conn.send_frame(WELCOME, [_digest(secret, b"accept", nonce_c, nonce_a)])
    except (OSError, WireError) as e:
        conn.close()
        raise AuthError(_reason(e)) from None
    sock.settimeout(None)
    conn.trusted = True
    return conn


def connect(address, secret: bytes, peer: str | None = None, timeout: float = HANDSHAKE_TIMEOUT) -> Conn:
    """Connect to ``address`` -- ``(host, port)``, or the path of a Unix socket -- and prove the secret;
    a trusted `Conn`, or `AuthError`/`OSError`."""
    peer = peer or describe(address)
    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(address)
        except OSError:
            sock.close()
            raise
    else:
        sock = socket.create_connection(tuple(address), timeout=timeout)
    conn = Conn(sock, peer, trusted=False)
    try:
        nonce_a = _expect(conn, CHALLENGE, NONCE)
        nonce_c = os.urandom(NONCE)
        conn.send_frame(PROOF, [nonce_c, _digest(secret, b"connect", nonce_a, nonce_c)])
        mac = _expect(conn, WELCOME, 32)
        if not hmac.compare_digest(mac, _digest(secret, b"accept", nonce_c, nonce_a)):
            raise AuthError("the peer does not know the secret")
    except (OSError, WireError) as e:
        conn.close()
        raise AuthError(f"authentication with {describe(address)} failed: {_reason(e)}") from None
    sock.settimeout(None)
    conn.trusted = True
    return conn


def describe(address) -> str:
    """``127.0.0.1:7000``, or a Unix socket's path; what an error or a log line calls an address."""
    return address if isinstance(address, str) else f"{address[0]}:{address[1]}"


def as_address(address):
    """An address as it came back through a pickle or JSON: a path stays a path, ``[host, port]`` a tuple."""
    return address if isinstance(address, str) else tuple(address)


def _reason(error: BaseException) -> str:
    if isinstance(error, PeerClosed):
        return "the peer closed the connection"
    if isinstance(error, socket.timeout):
        return "no answer within the handshake deadline"
    return str(error) or type(error).__name__


# ---------------------------------------------------------------- listening


class Listener:
    """Accept connections on ``(host, port)`` -- or, when ``port`` is None, on a Unix socket at the path
    ``host`` -- and hand each authenticated one to ``on_conn``.

    Each handshake runs in its own thread, so a slow or hostile peer never
    holds up the others. ``on_conn`` runs in that thread too; if it raises,
    the connection is dropped and logged.
    """

    def __init__(self, host: str, port: int, secret: bytes, on_conn, name: str = "listener"):
        if port is None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(host)
            self.sock.listen(128)
            self.address = host
        else:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            self.sock = socket.create_server((host, port), family=family, backlog=128)
            self.address = self.sock.getsockname()[:2]
        self.secret = secret
        self.on_conn = on_conn
        self.name = name
        self.dropped = 0
        self._slots = threading.BoundedSemaphore(MAX_HANDSHAKES)
        self._closed = False
        threading.Thread(target=self._accept_loop, name=f"{name}-accept", daemon=True).start()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                sock, addr = self.sock.accept()
            except OSError:
                return  # closed
            if not self._slots.acquire(blocking=False):
                self._drop(sock, addr, "too many handshakes in progress")
                continue
            threading.Thread(target=self._handshake, args=(sock, addr), daemon=True).start()

    def _handshake(self, sock: socket.socket, addr) -> None:
        peer = describe(addr) if addr else "a local process"     # a Unix socket's peer has no address
        try:
            conn = accept_handshake(sock, self.secret, peer)
        except AuthError as e:
            self._drop(sock, addr, str(e))
            return
        finally:
            self._slots.release()
        try:
            self.on_conn(conn)
        except Exception as e:
            conn.close()
            self._drop(sock, addr, f"{type(e).__name__}: {e}")

    def _drop(self, sock: socket.socket, addr, why: str) -> None:
        self.dropped += 1
        sock.close()
        if not self._closed:
            log.warning("%s %s dropped a connection from %s: %s", self.name, describe(self.address),
                        describe(addr) if addr else "a local process", why)

    def close(self) -> None:
        """Stop accepting. Connections already handed over stay open. Safe twice."""
        self._closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        if isinstance(self.address, str):
            try:
                os.unlink(self.address)
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def wait_for(condition, timeout: float, interval: float = 0.01):
    """Poll ``condition()`` until it is truthy (its value) or ``timeout`` seconds pass (None)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value or None
        time.sleep(interval)
