"""Finding, starting and talking to this user's local shim daemon."""

from __future__ import annotations

import _socket
import os
import sys

from .settings import IDLE_ENV, RUNTIME_DIR_ENV, start_timeout
from .wire import Conn, Refused, say

#: Longest unix socket path we use (``sun_path`` is 104 to 108 bytes with the NUL).
MAX_SOCKET_PATH = 100


def private_dir() -> str:
    """Mirror of :func:`towerctl.integrations.runtime.private_dir`: 0700, ours, not a symlink."""
    import stat

    explicit = os.environ.get(RUNTIME_DIR_ENV)
    if explicit:
        path = explicit
    else:
        xdg = os.environ.get("XDG_RUNTIME_DIR", "")
        if xdg and os.path.isdir(xdg):
            root = xdg
        else:
            # tempfile.gettempdir() without importing tempfile (random, shutil …).
            root = "/tmp"
            for var in ("TMPDIR", "TEMP", "TMP"):
                candidate = os.environ.get(var)
                if candidate and os.path.isdir(candidate):
                    root = candidate
                    break
        path = os.path.join(root, f"towerctl-{os.getuid()}")
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError as exc:
        raise Refused(f"cannot use state directory {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise Refused(f"state directory {path} must be a directory owned by uid {os.getuid()} with mode 0700")
    return path


def install_key() -> str:
    """Names this installation: one daemon per user *and* per towerctl install."""
    import binascii

    here = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))  # towerctl/localshim
    return format(binascii.crc32(here.encode("utf-8", "surrogateescape")), "08x")


def socket_path(directory: str) -> str:
    path = os.path.join(directory, f"shimd-{install_key()}.sock")
    if len(path.encode("utf-8", "surrogateescape")) > MAX_SOCKET_PATH:
        raise Refused(f"socket path {path} is too long; set {RUNTIME_DIR_ENV} to a shorter directory")
    return path


def _try_connect(path: str) -> _socket.socket | None:
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    return sock


def daemon_env() -> dict[str, str]:
    """What the daemon inherits: locale, home, runtime dir, CA settings; never tokens."""
    keep = {"PATH", "HOME", "LANG", "TMPDIR", "XDG_RUNTIME_DIR", RUNTIME_DIR_ENV, IDLE_ENV}
    keep |= {"SSL_CERT_FILE", "SSL_CERT_DIR", "TZ", "LOGNAME", "USER"}
    return {k: v for k, v in os.environ.items() if k in keep or k.startswith("LC_")}


def _spawn(directory: str, path: str) -> None:
    """Start ``python -I -m towerctl.localshim.daemon`` detached (double fork, own session)."""
    argv = [sys.executable, "-I", "-m", "towerctl.localshim.daemon", "--socket", path]
    env = daemon_env()
    log = os.path.join(directory, f"shimd-{install_key()}.log")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            os.chdir("/")
            null = os.open(os.devnull, os.O_RDWR)
            err = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            os.dup2(null, 0)
            os.dup2(null, 1)
            os.dup2(err, 2)
            os.closerange(3, 256)
            os.execve(sys.executable, argv, env)
        finally:
            os._exit(127)
    os.waitpid(pid, 0)


def open_daemon(start_timeout: float) -> Conn:
    """Connect to this user's daemon, starting it (once, under a lock) if none listens."""
    import time

    directory = private_dir()
    path = socket_path(directory)
    sock = _try_connect(path)
    if sock is not None:
        return Conn(sock)
    import fcntl

    deadline = time.monotonic() + start_timeout
    lock = os.open(
        os.path.join(directory, f"shimd-{install_key()}.start.lock"),
        os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o600,
    )
    try:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                pass  # someone else is starting it: use theirs once it listens
            sock = _try_connect(path)
            if sock is not None:
                return Conn(sock)
            if time.monotonic() >= deadline:
                raise Refused(f"the local shim daemon did not start within {start_timeout:g}s")
            time.sleep(0.005)
        sock = _try_connect(path)
        if sock is None:
            _spawn(directory, path)
            while sock is None:
                if time.monotonic() >= deadline:
                    log = os.path.join(directory, f"shimd-{install_key()}.log")
                    raise Refused(
                        f"the local shim daemon did not start within {start_timeout:g}s (see {log})"
                    )
                time.sleep(0.005)
                sock = _try_connect(path)
        return Conn(sock)
    finally:
        os.close(lock)


def converse(request: dict[str, object], note: str) -> tuple[Conn, dict[str, object]]:
    """Send ``request``; print notes; return the connection and the verdict."""
    for attempt in (1, 2):
        conn = open_daemon(start_timeout())
        try:
            conn.send(request)
            while True:
                msg = conn.recv()
                kind = msg["type"]
                if kind == "note":
                    say(note, str(msg.get("message", ""))[:2000])
                elif kind == "verdict":
                    return conn, msg
                elif kind == "error":
                    raise Refused(f"the local shim daemon refused the request: {msg.get('message', '')}")
        except (EOFError, ConnectionError, BrokenPipeError) as exc:
            conn.close()
            # A daemon that was exiting (idle) as we connected: once more, with a new one.
            if attempt == 1 and conn.received == 0:
                continue
            raise Refused(f"the local shim daemon went away ({type(exc).__name__})") from None
        except BaseException:
            conn.close()
            raise
    raise Refused("unreachable")  # pragma: no cover
