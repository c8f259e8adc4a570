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

This module is the listener and the per-login session; the identity checks
and host key live in :mod:`towerctl.ssh_identity`, the token source in
:mod:`towerctl.ssh_tokens` and the PTY relay in :mod:`towerctl.ssh_relay`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pty
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

from towerctl.ssh_identity import DEFAULT_ROLE as DEFAULT_ROLE
from towerctl.ssh_identity import OPERATOR_OPTION as OPERATOR_OPTION
from towerctl.ssh_identity import OPERATOR_ROLES as OPERATOR_ROLES
from towerctl.ssh_identity import ROLE_OPTION as ROLE_OPTION
from towerctl.ssh_identity import (
    Identity,
    IdentityError,
    _Server,
    identity_of,
    load_or_create_host_key,
)
from towerctl.ssh_relay import _end, _pump_in, _pump_out
from towerctl.ssh_relay import set_winsize as set_winsize
from towerctl.ssh_tokens import IssuedToken, StoreTokens, TokenSource

log = logging.getLogger("towerctl.ssh")

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
