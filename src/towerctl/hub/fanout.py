"""Delivery to operator clients, one bounded queue each.

``websockets.broadcast`` has no backpressure; a stalled operator (an SSH
session on a bad link) must never stall the hub or the other operators. Each
operator gets a bounded queue and its own sender task; when the queue
overflows, the backlog is dropped and the operator gets a fresh snapshot
instead, which is both smaller and correct.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Final

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from towerctl.auth import Principal

log = logging.getLogger("towerctl.hub")

QUEUE_LIMIT: Final = 2000


class OperatorConn:
    def __init__(self, conn: ServerConnection, principal: Principal, snapshot: Callable[[], str]) -> None:
        self.conn = conn
        self.principal = principal
        self._snapshot = snapshot
        self._queue: asyncio.Queue[str] = asyncio.Queue(QUEUE_LIMIT)
        self._task: asyncio.Task[None] | None = None
        self.resyncs = 0

    @property
    def name(self) -> str:
        return self.principal.name

    def start(self) -> None:
        self._task = asyncio.create_task(self._sender(), name=f"operator-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def push(self, data: str) -> None:
        try:
            self._queue.put_nowait(data)
        except asyncio.QueueFull:
            self.resyncs += 1
            while not self._queue.empty():
                self._queue.get_nowait()
            log.warning("operator %s lagging; sending a fresh snapshot", self.name)
            self._queue.put_nowait(self._snapshot())

    async def _sender(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                data = await self._queue.get()
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
