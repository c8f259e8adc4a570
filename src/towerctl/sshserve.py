"""``towerctl ssh-serve``: the operator console over SSH, one PTY per login.

Each SSH login is authenticated by public key against an authorized_keys file
(re-read at every login, so adding or removing an operator needs no restart).
The key's options name the operator and the role::

    tower-operator="alice",tower-role="approver" ssh-ed25519 AAAA… alice@laptop

For each session with a PTY, ssh-serve mints a token in the hub's store named
after the operator with that role, starts ``python -m towerctl.cli tui`` on a
fresh pseudo-terminal with the token in its environment (never on its command
line), and relays bytes both ways. The hub audits decisions under the token's
name, so what alice approves over SSH is recorded as alice's. The token is
revoked when the session ends, and tokens left behind by an ssh-serve that was
killed outright are revoked when the next one starts (:class:`StoreTokens`).

Sessions without a PTY are refused, window resizes are forwarded
(``TIOCSWINSZ`` on the master and ``SIGWINCH`` to the console), and when the
connection drops the console is ended here: a process on a PTY whose other
side simply goes away gets no SIGHUP by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import pty
import re
import signal
import struct
import sys
import termios
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

import asyncssh

from towerctl.auth import hash_token, new_token
from towerctl.config import write_private
from towerctl.store import Store
from towerctl.store.models import TokenRow

log = logging.getLogger("towerctl.ssh")

OPERATOR_OPTION: Final = "tower-operator"
ROLE_OPTION: Final = "tower-role"
OPERATOR_ROLES: Final = ("viewer", "approver", "admin")
DEFAULT_ROLE: Final = "viewer"
_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")


class IdentityError(ValueError):
    """The key's authorized_keys entry does not name a usable operator."""


@dataclass(frozen=True, slots=True)
class Identity:
    operator: str
    role: str


def _one(value: object, option: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        return value[0]
    raise IdentityError(f'{option} must be given once, as {option}="value"')


def identity_of(conn: asyncssh.SSHServerConnection) -> Identity:
    """Operator and role from the options of the key that logged in."""
    operator = _one(conn.get_key_option(OPERATOR_OPTION), OPERATOR_OPTION)
    role = _one(conn.get_key_option(ROLE_OPTION), ROLE_OPTION) or DEFAULT_ROLE
    if operator is None:
        raise IdentityError(f'this key has no {OPERATOR_OPTION}="name" option in the authorized_keys file')
    if not _NAME_RE.fullmatch(operator):
        raise IdentityError(f"{OPERATOR_OPTION} {operator!r} is not a valid name (letters, digits, ._@+-)")
    if role not in OPERATOR_ROLES:
        raise IdentityError(f"{ROLE_OPTION} {role!r} is not one of {', '.join(OPERATOR_ROLES)}")
    return Identity(operator, role)


# ------------------------------------------------------------------ tokens


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    token_id: str


class TokenSource(Protocol):
    """Where a session's hub token comes from."""

    async def issue(self, who: Identity) -> IssuedToken: ...

    async def release(self, issued: IssuedToken) -> None: ...


class StoreTokens:
    """Mint one token per SSH session in the hub's store, named after the
    operator, and revoke it when the session ends (both audited, actor
    ``ssh-serve``). The store may be the hub's own (embedded) or the same
    SQLite file opened by this process: writes take the database lock and
    re-read the audit chain head.

    A process killed with SIGKILL (or a power cut) cannot revoke what it
    minted, and those tokens would stay valid. So each ssh-serve process holds
    an exclusive ``flock`` on ``<db>.ssh-serve/<instance>.lock`` for its
    lifetime and puts its instance id in every token id it mints; :meth:`sweep`
    (run at start) revokes the tokens of every instance whose lock nobody holds
    any more. The kernel drops a dead process's locks, so this needs no pid
    files and cannot revoke a live instance's tokens.
    """

    def __init__(self, store: Store, lock_dir: Path | None = None) -> None:
        self.store = store
        self.instance = uuid.uuid4().hex[:12]
        self.lock_dir = lock_dir if lock_dir is not None else Path(f"{store.path}.ssh-serve")
        self._lock: int | None = None

    async def sweep(self) -> list[str]:
        """Take this instance's lock; revoke dead instances' tokens. Returns their ids."""
        self.lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self._lock is None:
            fd = os.open(self.lock_dir / f"{self.instance}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._lock = fd
        dead: list[str] = []
        for lock in sorted(self.lock_dir.glob("*.lock")):
            if lock.stem == self.instance:
                continue
            try:
                fd = os.open(lock, os.O_RDWR)
            except FileNotFoundError:
                continue  # another instance swept it meanwhile
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue  # alive
            try:
                dead.append(lock.stem)
                lock.unlink(missing_ok=True)
            finally:
                os.close(fd)
        revoked: list[str] = []
        if dead:
            prefixes = tuple(f"t-ssh-{d}-" for d in dead)
            ts = time.time_ns() // 1_000_000
            for row in await self.store.tokens():
                if row.revoked_at is None and row.token_id.startswith(prefixes):
                    await self.store.token_revoked(row.token_id, actor="ssh-serve", ts_ms=ts)
                    revoked.append(row.token_id)
            if revoked:
                log.warning("revoked %d token(s) left by ssh-serve processes that died", len(revoked))
        return revoked

    def close(self) -> None:
        if self._lock is not None:
            (self.lock_dir / f"{self.instance}.lock").unlink(missing_ok=True)
            os.close(self._lock)
            self._lock = None

    async def issue(self, who: Identity) -> IssuedToken:
        token = new_token()
        ts = time.time_ns() // 1_000_000
        row = TokenRow(
            token_id=f"t-ssh-{self.instance}-{uuid.uuid4().hex[:12]}",
            name=who.operator,
            role=who.role,
            envs=(),
            hash=hash_token(token),
            created_at=ts,
            revoked_at=None,
        )
        await self.store.token_added(row, actor="ssh-serve", ts_ms=ts)
        return IssuedToken(token, row.token_id)

    async def release(self, issued: IssuedToken) -> None:
        await self.store.token_revoked(issued.token_id, actor="ssh-serve", ts_ms=time.time_ns() // 1_000_000)


# ---------------------------------------------------------------- host key


def load_or_create_host_key(path: Path) -> asyncssh.SSHKey:
    """The server's host key; an Ed25519 key is generated (mode 0600) if missing."""
    if path.exists():
        return asyncssh.read_private_key(str(path))
    key = asyncssh.generate_private_key("ssh-ed25519")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, key.export_private_key().decode("ascii"))
    log.info("generated SSH host key %s", path)
    return key


def set_winsize(fd: int, width: int, height: int, pixwidth: int = 0, pixheight: int = 0) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, pixwidth, pixheight))


# ------------------------------------------------------------------ server


def default_console_argv() -> list[str]:
    return [sys.executable, "-m", "towerctl.cli", "tui"]


@dataclass(slots=True)
class SSHServeConfig:
    hub_url: str
    authorized_keys: Path
    host_key: Path
    host: str = "127.0.0.1"
    port: int = 2222
    #: The console command; ``--url`` is appended, the token goes in TOWER_TOKEN.
    console_argv: Sequence[str] = field(default_factory=default_console_argv)
    #: After SIGHUP, how long the console gets before SIGTERM, then SIGKILL.
    kill_grace_s: float = 2.0


@dataclass(slots=True)
class ConsoleSession:
    """One live SSH login: who, and the console process serving it."""

    operator: str
    role: str
    pid: int
    done: asyncio.Event = field(default_factory=asyncio.Event)


class _Server(asyncssh.SSHServer):
    def __init__(self, authorized_keys: Path) -> None:
        self._keys = authorized_keys
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn

    def begin_auth(self, username: str) -> bool:
        assert self._conn is not None
        try:
            self._conn.set_authorized_keys(str(self._keys))
        except (OSError, ValueError) as exc:
            log.error("cannot read authorized keys %s: %s", self._keys, exc)
            self._conn.set_authorized_keys(asyncssh.SSHAuthorizedKeys())
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True


class SSHServe:
    """The SSH listener; ``sessions`` maps each live console's pid to its login."""

    def __init__(self, config: SSHServeConfig, tokens: TokenSource) -> None:
        self.config = config
        self.tokens = tokens
        self.sessions: dict[int, ConsoleSession] = {}
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        if self._acceptor is None:
            raise RuntimeError("ssh-serve not started")
        return int(self._acceptor.get_port())

    async def start(self) -> None:
        host_key = load_or_create_host_key(self.config.host_key)
        self._acceptor = await asyncssh.create_server(
            lambda: _Server(self.config.authorized_keys),
            self.config.host,
            self.config.port,
            server_host_keys=[host_key],
            process_factory=self._process,
            line_editor=False,
            encoding=None,
            allow_scp=False,
            agent_forwarding=False,
            x11_forwarding=False,
        )

    async def stop(self) -> None:
        if self._acceptor is not None:
            self._acceptor.close()
            await self._acceptor.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def __aenter__(self) -> SSHServe:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _process(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        task = asyncio.ensure_future(self._session(process))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _session(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        conn = process.get_extra_info("connection")
        peer = process.get_extra_info("peername")
        term = process.get_terminal_type()
        if term is None:
            _refuse(process, "this console needs a terminal: connect with `ssh -t`")
            return
        if process.command is not None or process.subsystem is not None:
            _refuse(process, "this server only serves the console: no commands, no subsystems")
            return
        try:
            who = identity_of(conn)
        except IdentityError as exc:
            _refuse(process, str(exc))
            return
        try:
            issued = await self.tokens.issue(who)
        except Exception as exc:
            log.exception("cannot issue a token for %s", who.operator)
            _refuse(process, f"cannot issue a hub token: {exc}")
            return
        log.info("ssh login: operator=%s role=%s peer=%s", who.operator, who.role, peer)
        try:
            code = await self._console(process, who, issued, term)
        finally:
            with contextlib.suppress(Exception):
                await self.tokens.release(issued)
        log.info("ssh logout: operator=%s exit=%s", who.operator, code)
        with contextlib.suppress(Exception):
            process.exit(code)

    async def _console(
        self, process: asyncssh.SSHServerProcess[bytes], who: Identity, issued: IssuedToken, term: str
    ) -> int:
        width, height, pixw, pixh = process.get_terminal_size()
        master, slave = pty.openpty()
        try:
            set_winsize(master, width or 80, height or 24, pixw, pixh)
            env = _console_env(term, self.config.hub_url, issued.token)
            child = await asyncio.create_subprocess_exec(
                *self.config.console_argv,
                "--url",
                self.config.hub_url,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env=env,
                start_new_session=True,
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        sess = ConsoleSession(who.operator, who.role, child.pid)
        self.sessions[child.pid] = sess
        out = asyncio.create_task(_pump_out(master, process))
        inp = asyncio.create_task(_pump_in(master, process, child.pid))
        waiter = asyncio.create_task(child.wait())
        try:
            await asyncio.wait({waiter, inp}, return_when=asyncio.FIRST_COMPLETED)
            if not waiter.done():
                # The client went away (or sent EOF): end the console ourselves.
                await _end(child.pid, waiter, self.config.kill_grace_s)
            # Let the console's last frame (terminal reset) reach the client.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(out), 1.0)
            return int(waiter.result())
        finally:
            if not waiter.done():
                await _end(child.pid, waiter, self.config.kill_grace_s)
            for task in (out, inp):
                task.cancel()
            for task in (out, inp):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            os.close(master)
            self.sessions.pop(child.pid, None)
            sess.done.set()


def _refuse(process: asyncssh.SSHServerProcess[bytes], message: str) -> None:
    log.warning("ssh session refused: %s", message)
    with contextlib.suppress(Exception):
        process.stderr.write(f"towerctl ssh-serve: {message}\r\n".encode())
        process.exit(1)


def _console_env(term: str, url: str, token: str) -> dict[str, str]:
    # TOWER_HOME / TOWER_CONFIG stay (themes, the local audit view); the
    # server's own TOWER_TOKEN never reaches a console.
    drop = {"COLUMNS", "LINES", "TERM", "TEXTUAL", "TOWER_TOKEN", "TOWER_AGENT", "TOWER_ENV"}
    env = {key: value for key, value in os.environ.items() if key not in drop}
    env.update(
        TERM=term or "xterm-256color",
        TOWER_URL=url,
        TOWER_TOKEN=token,
        LANG=env.get("LANG") or "C.UTF-8",
        COLORTERM=env.get("COLORTERM") or "truecolor",
    )
    return env


async def _end(pid: int, waiter: asyncio.Task[int], grace_s: float) -> None:
    """SIGHUP, then SIGTERM, then SIGKILL the console's process group."""
    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), grace_s)
            return
        except TimeoutError:
            continue


async def _readable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


async def _writable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(fd, wake)
    try:
        await ready
    finally:
        loop.remove_writer(fd)


async def _pump_out(master: int, process: asyncssh.SSHServerProcess[bytes]) -> None:
    """Console screen → SSH client, until the console closes its terminal."""
    while True:
        await _readable(master)
        try:
            data = os.read(master, 65536)
        except BlockingIOError:
            continue
        except OSError:  # EIO: every process holding the terminal is gone
            return
        if not data:
            return
        process.stdout.write(data)
        await process.stdout.drain()


async def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            await _writable(fd)
            continue
        view = view[n:]


async def _pump_in(master: int, process: asyncssh.SSHServerProcess[bytes], pid: int) -> None:
    """SSH client keys and resizes → console; returns when the client is gone."""
    while True:
        try:
            data = await process.stdin.read(4096)
        except asyncssh.TerminalSizeChanged as exc:
            set_winsize(master, exc.width, exc.height, exc.pixwidth, exc.pixheight)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGWINCH)
            continue
        except (asyncssh.BreakReceived, asyncssh.SignalReceived):
            continue
        except (asyncssh.Error, OSError):
            return
        if not data:
            return
        try:
            await _write_all(master, data)
        except OSError:
            return


__all__ = [
    "ConsoleSession",
    "Identity",
    "IdentityError",
    "IssuedToken",
    "SSHServe",
    "SSHServeConfig",
    "StoreTokens",
    "TokenSource",
    "identity_of",
    "load_or_create_host_key",
]
