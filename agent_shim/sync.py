"""The sync twin of ``Shim`` for plain scripts and sync agent frameworks.

It runs the async client on a private event loop in a daemon thread, so the
connection, heartbeats, pushed policies and pause/kill controls keep flowing
while the caller's thread is busy running the approved command.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

from agent_shim.approved import Approved
from agent_shim.client import Shim, new_action_id
from agent_shim.errors import SessionKilled
from agent_shim.policy import EnvPolicy
from agent_shim.protocol import Action

_T = TypeVar("_T")


class SyncShim:
    """Same surface as ``Shim``; use as ``with SyncShim(...) as shim:``."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        agent: str,
        env: str,
        host: str | None = None,
        session_id: str | None = None,
        connect_timeout: float = 5.0,
        on_kill: Callable[[SessionKilled], None] | None = None,
    ) -> None:
        self._args: dict[str, Any] = {
            "agent": agent,
            "env": env,
            "host": host,
            "session_id": session_id,
            "connect_timeout": connect_timeout,
            "on_kill": on_kill,
        }
        self._url = url
        self._token = token
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="towerctl-shim", daemon=True)
        self._shim: Shim | None = None

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    @property
    def shim(self) -> Shim:
        if self._shim is None:
            raise RuntimeError("SyncShim is not started; use it as a context manager")
        return self._shim

    @property
    def session_id(self) -> str:
        return self.shim.session_id

    @property
    def connected(self) -> bool:
        return self.shim.connected

    @property
    def paused(self) -> bool:
        return self.shim.paused

    @property
    def policy(self) -> EnvPolicy:
        return self.shim.policy

    def start(self) -> None:
        self._thread.start()

        async def make() -> Shim:
            shim = Shim(self._url, self._token, **self._args)
            await shim.start()
            return shim

        self._shim = self._call(make())

    def close(self) -> None:
        if self._shim is not None:
            self._call(self._shim.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> SyncShim:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_connected(self, timeout: float) -> bool:
        return self._call(self.shim.wait_connected(timeout))

    def admit(self, action: Action) -> Approved:
        return self._call(self.shim.admit(action))

    def report(self, approved: Approved, *, error: str = "") -> None:
        self._loop.call_soon_threadsafe(lambda: self.shim.report(approved, error=error))

    @contextlib.contextmanager
    def guard(self, action: Action) -> Iterator[Approved]:
        """Block for the verdict, yield the ticket, report the outcome on exit."""
        approved = self.admit(action)
        try:
            yield approved
        except BaseException as exc:
            approved.mark_failed()
            self.report(approved, error=f"{type(exc).__name__}: {exc}"[:4000])
            raise
        self.report(approved)

    def run_shell(
        self,
        command: str,
        *,
        target: str = "",
        reason: str = "",
        rollback: str = "",
        dry_run: str = "",
        cwd: str = "",
        capture: bool = True,
    ) -> Approved:
        action = Action(
            action_id=new_action_id(),
            kind="shell",
            command=command,
            target=target,
            cwd=cwd,
            reason=reason,
            rollback=rollback,
            dry_run=dry_run,
        )
        with self.guard(action) as approved:
            approved.verify()
            proc = subprocess.run(
                approved.action.command,
                shell=True,
                cwd=approved.action.cwd or None,
                stdout=subprocess.PIPE if capture else None,
                stderr=subprocess.STDOUT if capture else None,
                check=False,
            )
            approved.set_result(proc.returncode, proc.stdout or b"")
        return approved
