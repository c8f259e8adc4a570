"""``towerctl shimd``: the per-user local shim daemon.

One process per user (and per towerctl installation) listens on a unix
socket in the user's private runtime directory (mode 0700, see
:func:`towerctl.integrations.runtime.private_dir`) and holds real
:class:`agent_shim.Shim` sessions (:mod:`.pool`) for the fast clients: the
gate wrappers and ``towerctl exec`` (:mod:`.admit`), and the Claude Code /
Codex hooks (:mod:`.hookserve`). This module is the server: it accepts only
its own uid (:mod:`.serverio`), reads one request line, dispatches it, and
runs the lifecycle.

Lifecycle: started on demand by a fast client (detached, its own session,
stderr to ``shimd-KEY.log`` beside the socket), or in the foreground with
``towerctl shimd``. It exits by itself after ``--idle-timeout`` seconds
without a request (``TOWER_SHIMD_IDLE``, default 600), and cleanly on
SIGTERM/SIGINT or ``towerctl shimd --stop``: it stops listening, removes its
socket, and closes its shims after handing over what they still had to send,
which ends the daemon's own tower sessions and leaves the hooks' to be resumed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any, Final

from towerctl.integrations import runtime
from towerctl.localshim import admit as admitting
from towerctl.localshim.pool import Entry, ShimPool
from towerctl.localshim.serverio import BadRequest, check_dir, first_line, line, peer_allowed, peer_uid
from towerctl.localshim.shimclient import connect, settings, wire

log = logging.getLogger("towerctl.shimd")

IDLE_TIMEOUT_S: Final = 600.0
#: Still importable from here.
__all__ = ["Daemon", "main", "peer_allowed", "peer_uid", "request", "run"]


class Daemon:
    def __init__(self, socket_path: str, idle_timeout: float = IDLE_TIMEOUT_S) -> None:
        self.socket_path = socket_path
        self.idle_timeout = idle_timeout
        self.pool = ShimPool()
        self.active = 0
        self.last_activity = time.monotonic()
        self.stopping = asyncio.Event()
        self.peer_uid: Callable[[socket.socket], int | None] = peer_uid
        self._server: asyncio.Server | None = None
        self._inode: int | None = None
        self.served = 0

    @property
    def shims(self) -> dict[Any, Entry]:
        return self.pool.shims

    # ----------------------------------------------------------- requests

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.active += 1
        self.last_activity = time.monotonic()
        try:
            raw = await first_line(reader, writer, self.peer_uid, self.active)
            if raw is None:
                return
            try:
                await self.dispatch(raw, reader, writer)
            except BadRequest as exc:
                writer.write(line({"type": "error", "message": f"bad request: {exc}"}))
        except (ConnectionError, OSError) as exc:
            log.info("client went away: %s", exc)
        except Exception:
            log.exception("request failed")
            with contextlib.suppress(Exception):
                writer.write(line({"type": "error", "message": "internal error in the local shim daemon"}))
        finally:
            self.active -= 1
            self.last_activity = time.monotonic()
            with contextlib.suppress(Exception):
                await writer.drain()
                writer.close()

    async def dispatch(self, raw: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            req = json.loads(raw)
        except ValueError:
            raise BadRequest("not a JSON object") from None
        if not isinstance(req, dict):
            raise BadRequest("not a JSON object")
        if req.get("v") != wire.PROTOCOL:
            raise BadRequest(f"protocol version must be {wire.PROTOCOL}")
        op = req.get("op")
        if op == "ping":
            writer.write(line({"type": "pong", "pid": os.getpid()}))
        elif op == "status":
            writer.write(line({"type": "status", "pid": os.getpid(), "sessions": self.status()}))
        elif op == "stop":
            writer.write(line({"type": "stopping", "pid": os.getpid()}))
            self.stopping.set()
        elif op == "admit":
            self.served += 1
            await admitting.admit(self.pool, admitting.AdmitRequest.parse(req), reader, writer)
        elif op == "hook":
            from towerctl.localshim import hookserve

            self.served += 1
            await hookserve.serve(self.pool, hookserve.HookRequest.parse(req), reader, writer)
        else:
            raise BadRequest(f"unknown op {op!r}")

    def status(self) -> list[dict[str, object]]:
        return self.pool.status()

    # ---------------------------------------------------------- lifecycle

    async def _idle_watch(self) -> None:
        tick = max(0.02, min(self.idle_timeout / 4, 5.0))
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), tick)
            await self.pool.sweep(self.idle_timeout)
            now = time.monotonic()
            if self.active == 0 and now - self.last_activity >= self.idle_timeout:
                log.info("idle for %.0fs; exiting", self.idle_timeout)
                self.stopping.set()

    async def serve(self, ready: Callable[[], None] | None = None) -> None:
        directory = os.path.dirname(self.socket_path) or "."
        check_dir(directory)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self.handle, self.socket_path, limit=wire.MAX_LINE)
        finally:
            os.umask(old)
        self._inode = os.lstat(self.socket_path).st_ino
        log.info(
            "listening on %s (pid %d, idle timeout %gs)", self.socket_path, os.getpid(), self.idle_timeout
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self.stopping.set)
        if ready is not None:
            ready()
        watcher = asyncio.create_task(self._idle_watch())
        try:
            await self.stopping.wait()
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await self.shutdown()

    async def shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        with contextlib.suppress(OSError):
            if os.lstat(self.socket_path).st_ino == self._inode:  # not a successor's socket
                os.unlink(self.socket_path)
        # Hand over what is queued, then close each session.
        closed, delivered = await self.pool.close_all()
        log.info(
            "stopped; closed %d session(s)%s",
            closed,
            "" if delivered else " (some reports were not delivered)",
        )


def _run_lock(socket_path: str, wait_s: float) -> int:
    """Hold an exclusive lock for this socket for the daemon's lifetime, waiting
    for a predecessor that is still shutting down; exit if another daemon runs."""
    fd = os.open(socket_path + ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise SystemExit(f"towerctl shimd: another daemon already serves {socket_path}") from None
            time.sleep(0.01)


def default_socket() -> str:
    try:
        return connect.socket_path(connect.private_dir())
    except wire.Refused as exc:
        raise SystemExit(f"towerctl shimd: {exc}") from None


def idle_default() -> float:
    try:
        return float(os.environ.get(settings.IDLE_ENV) or IDLE_TIMEOUT_S)
    except ValueError:
        return IDLE_TIMEOUT_S


def run(socket_path: str, idle_timeout: float) -> int:
    """Serve in the foreground until idle, SIGTERM or ``--stop``."""
    # The daemon serves many settings; never let its own environment pick a hub key or CA.
    for var in ("TOWER_HUB_KEY", "TOWER_CA", "TOWER_TOKEN"):
        os.environ.pop(var, None)
    # Hooks keep their PreToolUse -> PostToolUse hand-over files beside the socket,
    # where the in-process hooks of the same user look for them too.
    os.environ[runtime.RUNTIME_DIR_ENV] = os.path.dirname(os.path.abspath(socket_path))
    with contextlib.suppress(OSError):
        os.chdir("/")
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s shimd[%(process)d] %(levelname)s %(message)s"
        )
    lock = _run_lock(socket_path, 10.0)
    try:
        asyncio.run(Daemon(socket_path, idle_timeout).serve())
    finally:
        os.close(lock)
    return 0


def request(socket_path: str, op: str, timeout: float = 5.0) -> dict[str, Any] | None:
    """Send one control request (``ping``/``status``/``stop``); None if no daemon listens."""
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(socket_path)
    except OSError:
        return None
    conn = wire.Conn(sock)
    try:
        conn.send({"v": wire.PROTOCOL, "op": op})
        return conn.recv()
    except (OSError, EOFError, wire.Refused):
        return None
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="towerctl shimd", description="The local shim daemon.")
    parser.add_argument(
        "--socket", default=None, help="Unix socket path (default: in the private runtime dir)."
    )
    parser.add_argument("--idle-timeout", type=float, default=None, help="Exit after this many idle seconds.")
    args = parser.parse_args(argv)
    return run(
        args.socket or default_socket(),
        args.idle_timeout if args.idle_timeout is not None else idle_default(),
    )


if __name__ == "__main__":
    sys.exit(main())
