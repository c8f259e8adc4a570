"""``towerctl shimd``: the per-user local shim daemon.

One process per user (and per towerctl installation) listens on a unix
socket in the user's private runtime directory (mode 0700, see
:func:`towerctl.integrations.runtime.private_dir`) and holds one real
:class:`agent_shim.Shim` (websocket to the hub, pinned hub key, the policy
the hub pushed, the rate window) per (hub url, token, environment, agent
name, hub key, CA), reused by every call with those settings. Each request
runs the gate's judge/admit path: classification and policy in the shim,
waiting for an operator where policy says ask, and failing closed when the
hub cannot be reached or the proposal could not be handed to it.

Security: the socket file is 0600 in a 0700 directory, and every connection's
peer uid is checked with ``SO_PEERCRED`` (``LOCAL_PEERCRED`` on macOS); a
peer of another uid, or one whose uid cannot be learnt, is refused. Requests
are bounded (:data:`~towerctl.localshim.fastclient.MAX_LINE` bytes, a read
deadline, a connection limit); a malformed one gets an error reply and the
daemon goes on serving.

Lifecycle: started on demand by the fast client (detached, its own session,
stderr to ``shimd-KEY.log`` beside the socket), or in the foreground with
``towerctl shimd``. It exits by itself after ``--idle-timeout`` seconds
without a request (``TOWER_SHIMD_IDLE``, default 600), and cleanly on
SIGTERM/SIGINT or ``towerctl shimd --stop``: it stops listening, removes its
socket, and closes its shims after handing over what they still had to send,
which ends their tower sessions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import logging
import os
import shlex
import signal
import socket
import ssl
import stat
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from towerctl.integrations import runtime
from towerctl.localshim import fastclient as wire

if TYPE_CHECKING:
    from agent_shim import Shim
    from agent_shim.errors import SessionKilled

log = logging.getLogger("towerctl.shimd")

IDLE_TIMEOUT_S: Final = 600.0
#: A client must send its request line within this many seconds of connecting.
READ_TIMEOUT_S: Final = 10.0
MAX_CONNECTIONS: Final = 256
#: A session whose hub has been unreachable and that nobody used for this long is dropped.
DISCONNECTED_DROP_S: Final = 30.0
#: (url, token, env, agent, hub_key, ca): one shim, one tower session, per key.
ShimKey = tuple[str, str, str, str, str, str]


class BadRequest(ValueError):
    """A request the daemon will not act on: answered with an error reply."""


# ------------------------------------------------------------------ peers


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end of a unix socket, or None if unknown."""
    so_peercred = getattr(socket, "SO_PEERCRED", None)
    if so_peercred is not None:  # Linux: struct ucred {pid_t pid; uid_t uid; gid_t gid;}
        raw = sock.getsockopt(socket.SOL_SOCKET, so_peercred, struct.calcsize("iII"))
        _pid, uid, _gid = struct.unpack("iII", raw)
        return int(uid)
    if sys.platform == "darwin":  # SOL_LOCAL=0, LOCAL_PEERCRED=1: struct xucred {u_int version; uid_t uid; …}
        raw = sock.getsockopt(0, 1, 76)
        _version, uid = struct.unpack_from("II", raw)
        return int(uid)
    return None


def peer_allowed(uid: int | None, own: int) -> bool:
    """Only our own uid may use the daemon; an unknown peer is refused (fail closed)."""
    return uid is not None and uid == own


def check_dir(path: str) -> None:
    """The socket's directory must be ours, a real directory, mode 0700."""
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise SystemExit(
            f"towerctl shimd: {path} must be a directory owned by uid {os.getuid()} with mode 0700"
        )


# --------------------------------------------------------------- requests


def _str(req: dict[str, Any], name: str, *, limit: int = 4096, default: str | None = None) -> str:
    value = req.get(name, default)
    if not isinstance(value, str):
        raise BadRequest(f"{name!r} must be a string")
    if len(value) > limit:
        raise BadRequest(f"{name!r} is longer than {limit} characters")
    return value


@dataclass(frozen=True, slots=True)
class AdmitRequest:
    key: ShimKey
    mode: str
    connect_timeout: float
    kind: str
    command: str
    argv: list[str]
    shape: str
    target: str
    cwd: str
    reason: str
    rollback: str
    dry_run: str

    @property
    def url(self) -> str:
        return self.key[0]

    @classmethod
    def parse(cls, req: dict[str, Any]) -> AdmitRequest:
        mode = _str(req, "mode")
        if mode not in ("exec", "wait"):
            raise BadRequest("'mode' must be exec or wait")
        shape = _str(req, "shape", default="argv")
        if shape not in ("argv", "sh"):
            raise BadRequest("'shape' must be argv or sh")
        argv = req.get("argv")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise BadRequest("'argv' must be a non-empty list of strings")
        timeout = req.get("connect_timeout", wire.CONNECT_TIMEOUT_S)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0.05 <= timeout <= 120:
            raise BadRequest("'connect_timeout' must be a number of seconds between 0.05 and 120")
        url, token = _str(req, "url"), _str(req, "token")
        if not url or not token:
            raise BadRequest("'url' and 'token' are required")
        key: ShimKey = (
            url,
            token,
            _str(req, "env", limit=128),
            _str(req, "agent", limit=255),
            _str(req, "hub_key", default=""),
            _str(req, "ca", default=""),
        )
        return cls(
            key=key,
            mode=mode,
            connect_timeout=float(timeout),
            kind=_str(req, "kind", limit=32),
            command=_str(req, "command", limit=wire.MAX_LINE),
            argv=list(argv),
            shape=shape,
            target=_str(req, "target", default=""),
            cwd=_str(req, "cwd", default=""),
            reason=_str(req, "reason", default="", limit=wire.MAX_LINE),
            rollback=_str(req, "rollback", default="", limit=wire.MAX_LINE),
            dry_run=_str(req, "dry_run", default="", limit=wire.MAX_LINE),
        )

    def runs_exactly(self, command: str) -> bool:
        """Whether the approved ``command`` text is what ``argv`` will run."""
        if self.shape == "sh":
            return self.argv == ["/bin/sh", "-c", command]
        try:
            return shlex.split(command) == self.argv
        except ValueError:
            return False


@dataclass(eq=False)
class Entry:
    shim: Shim
    last_used: float = field(default_factory=time.monotonic)
    busy: int = 0
    #: wait-mode connections whose tool is running: told when the session is killed.
    running: set[asyncio.StreamWriter] = field(default_factory=set)


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode("utf-8") + b"\n"


# ----------------------------------------------------------------- daemon


class Daemon:
    def __init__(self, socket_path: str, idle_timeout: float = IDLE_TIMEOUT_S) -> None:
        self.socket_path = socket_path
        self.idle_timeout = idle_timeout
        self.shims: dict[ShimKey, Entry] = {}
        self._locks: dict[ShimKey, asyncio.Lock] = {}
        self.active = 0
        self.last_activity = time.monotonic()
        self.stopping = asyncio.Event()
        self.peer_uid: Callable[[socket.socket], int | None] = peer_uid
        self._server: asyncio.Server | None = None
        self._inode: int | None = None
        self.served = 0

    # -------------------------------------------------------------- shims

    def _new_shim(self, key: ShimKey, timeout: float) -> Shim:
        from agent_shim import Shim

        url, token, env, agent, hub_key, ca = key
        ctx = ssl.create_default_context(cafile=ca) if ca and url.startswith("wss://") else None
        holder: list[Entry] = []

        def on_kill(exc: SessionKilled) -> None:
            for writer in list(holder[0].running) if holder else ():
                with contextlib.suppress(Exception):
                    writer.write(_line({"type": "kill", "message": exc.reason}))

        shim = Shim(
            url,
            token,
            agent=agent,
            env=env,
            connect_timeout=timeout,
            on_kill=on_kill,
            hub_key=hub_key or None,
            ssl=ctx,
        )
        entry = Entry(shim)
        holder.append(entry)
        self.shims[key] = entry
        return shim

    async def entry_for(self, key: ShimKey, timeout: float) -> Entry:
        """The connected shim for ``key``, created or reconnected within ``timeout``;
        raise :class:`runtime.Unreachable` otherwise (the entry is then dropped)."""
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            entry = self.shims.get(key)
            if entry is not None and entry.shim.connected:
                return entry
            try:
                if entry is None:
                    shim = self._new_shim(key, timeout)
                    await runtime.connect(shim, timeout)
                else:
                    await self._reconnected(entry.shim, timeout)
            except runtime.Unreachable:
                current = self.shims.get(key)
                # A session other calls are still using (waiting for an approval
                # that may yet arrive once the hub is back) is left to them.
                if current is not None and current.busy == 0:
                    await self._drop(key)
                raise
            return self.shims[key]

    async def _reconnected(self, shim: Shim, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not await shim.wait_connected(min(0.05, max(0.0, deadline - time.monotonic()))):
            err = shim.last_error
            if err.startswith(("hub refused", "hub rejected")) or time.monotonic() >= deadline:
                raise runtime.Unreachable(err or f"no welcome within {timeout:g}s")

    async def _drop(self, key: ShimKey) -> None:
        entry = self.shims.pop(key, None)
        if entry is not None:
            with contextlib.suppress(Exception):
                await entry.shim.close(drain_timeout=2.0)

    # ----------------------------------------------------------- requests

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.active += 1
        self.last_activity = time.monotonic()
        try:
            sock = writer.get_extra_info("socket")
            uid = self.peer_uid(sock) if sock is not None else None
            if not peer_allowed(uid, os.getuid()):
                log.warning("refused a connection from uid %s", uid)
                writer.write(
                    _line({"type": "error", "message": f"refused: peer uid {uid} is not {os.getuid()}"})
                )
                return
            if self.active > MAX_CONNECTIONS:
                writer.write(_line({"type": "error", "message": "too many connections"}))
                return
            try:
                raw = await asyncio.wait_for(reader.readline(), READ_TIMEOUT_S)
            except (ValueError, asyncio.LimitOverrunError):
                writer.write(
                    _line({"type": "error", "message": f"request larger than {wire.MAX_LINE} bytes"})
                )
                return
            except TimeoutError:
                writer.write(_line({"type": "error", "message": f"no request within {READ_TIMEOUT_S:g}s"}))
                return
            if not raw:
                return
            try:
                await self.dispatch(raw, reader, writer)
            except BadRequest as exc:
                writer.write(_line({"type": "error", "message": f"bad request: {exc}"}))
        except (ConnectionError, OSError) as exc:
            log.info("client went away: %s", exc)
        except Exception:
            log.exception("request failed")
            with contextlib.suppress(Exception):
                writer.write(_line({"type": "error", "message": "internal error in the local shim daemon"}))
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
            writer.write(_line({"type": "pong", "pid": os.getpid()}))
        elif op == "status":
            writer.write(_line({"type": "status", "pid": os.getpid(), "sessions": self.status()}))
        elif op == "stop":
            writer.write(_line({"type": "stopping", "pid": os.getpid()}))
            self.stopping.set()
        elif op == "admit":
            self.served += 1
            await self.admit(AdmitRequest.parse(req), reader, writer)
        else:
            raise BadRequest(f"unknown op {op!r}")

    def status(self) -> list[dict[str, Any]]:
        return [
            {
                "url": key[0],
                "env": key[2],
                "agent": key[3],
                "session_id": e.shim.session_id,
                "connected": e.shim.connected,
                "busy": e.busy,
            }
            for key, e in self.shims.items()
        ]

    async def admit(
        self, req: AdmitRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        from pydantic import ValidationError

        from agent_shim import Action, ActionDenied, SessionKilled, new_action_id

        def verdict(allow: bool, message: str, action_id: str = "") -> None:
            writer.write(
                _line(
                    {
                        "type": "verdict",
                        "verdict": "allow" if allow else "deny",
                        "message": message,
                        "action_id": action_id,
                    }
                )
            )

        try:
            action = Action(
                action_id=new_action_id(),
                kind=req.kind,  # type: ignore[arg-type]  # validated by the model
                command=req.command,
                target=req.target,
                cwd=req.cwd,
                reason=req.reason,
                rollback=req.rollback,
                dry_run=req.dry_run,
            )
        except ValidationError as exc:
            verdict(False, f"denied: this invocation cannot be put to review ({exc.errors()[0]['msg']})")
            return
        try:
            entry = await self.entry_for(req.key, req.connect_timeout)
        except runtime.Unreachable as exc:
            verdict(False, f"denied: tower unreachable at {req.url} ({exc}); failing closed")
            return
        except ValueError as exc:  # a malformed hub key
            verdict(False, f"denied: bad hub key: {exc}")
            return
        except OSError as exc:  # an unreadable TOWER_CA file
            verdict(False, f"denied: cannot set up the connection to {req.url}: {exc}")
            return
        shim = entry.shim
        entry.busy += 1
        entry.last_used = time.monotonic()
        try:
            ruling = shim.gate.judge(action)
            if ruling.verdict == "ask":
                writer.write(
                    _line(
                        {
                            "type": "note",
                            "message": f"{action.command[:200]}: waiting for an operator's approval "
                            f"(up to {ruling.timeout_s}s; {ruling.explanation})",
                        }
                    )
                )
                await writer.drain()
            # Wait for the verdict, but give up if the client goes away meanwhile
            # (Ctrl-C on a call waiting for approval): nothing may start then.
            admitting = asyncio.create_task(shim.admit(action))
            hangup = asyncio.create_task(reader.read(1))
            done, _ = await asyncio.wait({admitting, hangup}, return_when=asyncio.FIRST_COMPLETED)
            if admitting not in done:
                admitting.cancel()
                with contextlib.suppress(BaseException):
                    await admitting
                log.info("client left before the verdict on %s", action.action_id)
                return
            hangup.cancel()
            with contextlib.suppress(BaseException):
                await hangup
            try:
                approved = admitting.result()
            except (ActionDenied, SessionKilled) as exc:
                who = f" by {exc.by}" if exc.by else ""
                verdict(False, f"denied{who}: {exc.reason}", action.action_id)
                return
            approved.verify()
            # What runs is re-derived from the approved text, never from the request's variables.
            if not req.runs_exactly(approved.action.command):
                shim.report(approved, error="refused: approved command differs from the invocation")
                verdict(False, "refused: the approved command differs from the invocation", action.action_id)
                return
            if not await self._handed_over(shim, req.connect_timeout):
                shim.report(approved, error="refused: the proposal could not be handed to the tower in time")
                verdict(
                    False,
                    "denied: the tower did not receive the proposal; refusing to run it unrecorded",
                    action.action_id,
                )
                return
            verdict(True, "allowed", action.action_id)
            if req.mode == "exec":
                return
            await writer.drain()
            entry.running.add(writer)
            try:
                raw = await reader.readline()
            finally:
                entry.running.discard(writer)
            report = self._parse_report(raw)
            if report is None:
                approved.mark_failed()
                shim.report(approved, error="the gate went away before reporting how the tool ended")
                return
            code, error = report
            approved.set_result(code)
            shim.report(approved, error=error)
            ok = await self._handed_over(shim, req.connect_timeout)
            writer.write(_line({"type": "reported", "ok": ok}))
        finally:
            entry.busy -= 1
            entry.last_used = time.monotonic()

    @staticmethod
    def _parse_report(raw: bytes) -> tuple[int, str] | None:
        if not raw:
            return None
        try:
            msg = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(msg, dict) or msg.get("op") != "report":
            return None
        code = msg.get("exit_code")
        if isinstance(code, bool) or not isinstance(code, int):
            return None
        error = msg.get("error", "")
        return code, error[:4000] if isinstance(error, str) else ""

    @staticmethod
    async def _handed_over(shim: Shim, timeout: float) -> bool:
        """Wait until the shim's outbox has gone to the hub's socket, within ``timeout``."""
        deadline = time.monotonic() + timeout
        spins = 0
        while shim.pending_reports:
            if time.monotonic() >= deadline:
                return False
            spins += 1
            await asyncio.sleep(0 if spins < 50 else 0.002)
        return True

    # ---------------------------------------------------------- lifecycle

    async def _idle_watch(self) -> None:
        tick = max(0.02, min(self.idle_timeout / 4, 5.0))
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), tick)
            now = time.monotonic()
            for key, entry in list(self.shims.items()):
                if entry.busy:
                    continue
                unused = now - entry.last_used
                # A session nobody uses, or one whose hub is gone (instead of
                # retrying it forever): the next call opens a new one.
                if unused >= self.idle_timeout or (
                    not entry.shim.connected and unused >= min(self.idle_timeout, DISCONNECTED_DROP_S)
                ):
                    log.info("closing unused session %s", entry.shim.session_id)
                    await self._drop(key)
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
        entries = list(self.shims.values())
        self.shims.clear()
        # Hand over what is queued, then end each tower session.
        results = await asyncio.gather(*(runtime.flush(e.shim) for e in entries), return_exceptions=True)
        log.info(
            "stopped; closed %d session(s)%s",
            len(entries),
            "" if all(r is True for r in results) else " (some reports were not delivered)",
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
        return wire.socket_path(wire.private_dir())
    except wire.Refused as exc:
        raise SystemExit(f"towerctl shimd: {exc}") from None


def idle_default() -> float:
    try:
        return float(os.environ.get(wire.IDLE_ENV) or IDLE_TIMEOUT_S)
    except ValueError:
        return IDLE_TIMEOUT_S


def run(socket_path: str, idle_timeout: float) -> int:
    """Serve in the foreground until idle, SIGTERM or ``--stop``."""
    # The daemon serves many settings; never let its own environment pick a hub key or CA.
    for var in ("TOWER_HUB_KEY", "TOWER_CA", "TOWER_TOKEN"):
        os.environ.pop(var, None)
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
