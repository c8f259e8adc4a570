"""The daemon's pool of shims: one real :class:`agent_shim.Shim` per key.

A key is (hub url, token, environment, agent name, hub key, CA, tower session
id). Gates and ``towerctl exec`` use the session id "": one daemon-owned
session per settings, ended when the daemon closes it. Hooks use the agent's
derived session id (``cc-dev-<uuid>``): one shim per Claude/Codex session,
created with ``end_session_on_close=False`` so that closing it leaves the
tower session to be resumed. Entries nobody uses are closed after the idle
timeout, and sooner when their hub has gone away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from towerctl.integrations import runtime
from towerctl.localshim.serverio import line

if TYPE_CHECKING:
    from agent_shim import Shim
    from agent_shim.errors import SessionKilled

log = logging.getLogger("towerctl.shimd")

#: A session whose hub has been unreachable and that nobody used for this long is dropped.
DISCONNECTED_DROP_S: Final = 30.0
#: (url, token, env, agent, hub_key, ca, tower session id): one shim, one tower
#: session, per key. The session id is "" for the daemon's own session per
#: settings (gates, ``towerctl exec``), and the agent's derived one for hooks.
ShimKey = tuple[str, str, str, str, str, str, str]


@dataclass(eq=False)
class Entry:
    shim: Shim
    last_used: float = field(default_factory=time.monotonic)
    busy: int = 0
    #: wait-mode connections whose tool is running: told when the session is killed.
    running: set[asyncio.StreamWriter] = field(default_factory=set)


async def handed_over(shim: Shim, timeout: float) -> bool:
    """Wait until the shim's outbox has gone to the hub's socket, within ``timeout``."""
    deadline = time.monotonic() + timeout
    spins = 0
    while shim.pending_reports:
        if time.monotonic() >= deadline:
            return False
        spins += 1
        await asyncio.sleep(0 if spins < 50 else 0.002)
    return True


class ShimPool:
    def __init__(self) -> None:
        self.shims: dict[ShimKey, Entry] = {}
        self._locks: dict[ShimKey, asyncio.Lock] = {}

    def _new_shim(self, key: ShimKey, timeout: float) -> Shim:
        from agent_shim import Shim

        url, token, env, agent, hub_key, ca, session_id = key
        ctx = ssl.create_default_context(cafile=ca) if ca and url.startswith("wss://") else None
        holder: list[Entry] = []

        def on_kill(exc: SessionKilled) -> None:
            for writer in list(holder[0].running) if holder else ():
                with contextlib.suppress(Exception):
                    writer.write(line({"type": "kill", "message": exc.reason}))

        shim = Shim(
            url,
            token,
            agent=agent,
            env=env,
            connect_timeout=timeout,
            on_kill=on_kill,
            hub_key=hub_key or None,
            ssl=ctx,
            session_id=session_id or None,
            # An agent's session (a hook's) outlives this daemon: closing leaves it to be resumed.
            end_session_on_close=not session_id,
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

    async def sweep(self, idle_timeout: float) -> None:
        """Close the entries nobody used for ``idle_timeout``, or whose hub is gone."""
        now = time.monotonic()
        for key, entry in list(self.shims.items()):
            if entry.busy:
                continue
            unused = now - entry.last_used
            # A session nobody uses, or one whose hub is gone (instead of
            # retrying it forever): the next call opens a new one.
            if unused >= idle_timeout or (
                not entry.shim.connected and unused >= min(idle_timeout, DISCONNECTED_DROP_S)
            ):
                log.info("closing unused session %s", entry.shim.session_id)
                await self._drop(key)

    async def close_all(self) -> tuple[int, bool]:
        """Close every shim after handing over what it queued; (how many, all delivered)."""
        entries = list(self.shims.values())
        self.shims.clear()
        results = await asyncio.gather(*(runtime.flush(e.shim) for e in entries), return_exceptions=True)
        return len(entries), all(r is True for r in results)

    def status(self) -> list[dict[str, object]]:
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
