"""Delivery to operator clients, one bounded queue each.

``websockets.broadcast`` has no backpressure; a stalled operator (an SSH
session on a bad link) must never stall the hub or the other operators. Each
operator gets a bounded queue and its own sender task. When the queue
overflows, the backlog of broadcast events is dropped and the operator is
marked for a resync: its sender sends one fresh snapshot as soon as the
socket takes data again (built then, so it is current, and built once however
long the stall), then live events. Replies to the operator's own requests
(``result``, ``error``) are never dropped for a snapshot; a peer that keeps
sending requests without reading the replies is disconnected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import Final

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from towerctl.auth import Principal

log = logging.getLogger("towerctl.hub")

#: Frames queued for one operator before its backlog is replaced by a snapshot.
QUEUE_LIMIT: Final = 2000


class OperatorConn:
    def __init__(
        self,
        conn: ServerConnection,
        principal: Principal,
        snapshot: Callable[[], str],
        *,
        limit: int = QUEUE_LIMIT,
    ) -> None:
        self.conn = conn
        self.principal = principal
        self._snapshot = snapshot
        self._limit = limit
        #: (is a reply to this operator's request, frame)
        self._queue: deque[tuple[bool, str]] = deque()
        self._wake = asyncio.Event()
        self._resync = False
        self._task: asyncio.Task[None] | None = None
        #: How many times the backlog overflowed and was replaced by a snapshot.
        self.resyncs = 0

    @property
    def name(self) -> str:
        return self.principal.name

    @property
    def backlog(self) -> int:
        """Frames queued for this operator and not yet handed to its socket."""
        return len(self._queue)

    def start(self) -> None:
        self._task = asyncio.create_task(self._sender(), name=f"operator-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def push(self, data: str) -> None:
        """Queue a broadcast event; dropped if a resync is due (the snapshot covers it)."""
        if self._resync:
            return
        if len(self._queue) >= self._limit:
            self._overflow()
            return
        self._queue.append((False, data))
        self._wake.set()

    def reply(self, data: str) -> None:
        """Queue the answer to one of this operator's requests: never dropped."""
        if len(self._queue) >= self._limit:
            self._overflow()
            if len(self._queue) >= self._limit:
                # Nothing but replies left: it sends requests and reads nothing.
                log.warning("operator %s sends requests but reads no replies; disconnecting", self.name)
                self.conn.transport.abort()
                return
        self._queue.append((True, data))
        self._wake.set()

    def _overflow(self) -> None:
        self.resyncs += 1
        self._resync = True
        self._queue = deque(item for item in self._queue if item[0])
        self._wake.set()
        log.warning("operator %s lagging; its backlog is replaced by a fresh snapshot", self.name)

    async def _sender(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                if self._resync:
                    # Built now, once: it reflects every event dropped meanwhile.
                    self._resync = False
                    data = self._snapshot()
                elif self._queue:
                    data = self._queue.popleft()[1]
                else:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                await self.conn.send(data)


class Fanout:
    def __init__(self) -> None:
        self.operators: set[OperatorConn] = set()

    def add(self, op: OperatorConn) -> None:
        self.operators.add(op)
        op.start()

    async def remove(self, op: OperatorConn) -> None:
        self.operators.discard(op)
        await op.stop()

    def names(self) -> tuple[str, ...]:
        return tuple(sorted({op.name for op in self.operators}))

    def send(self, data: str) -> None:
        """Queue one already-encoded message for every operator (encoded once)."""
        for op in self.operators:
            op.push(data)
