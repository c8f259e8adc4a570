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

An operator connected under ``towerctl.lines.v1`` or v2 (``agent_shim.wire``) gets,
in one frame, every message queued when its sender runs (in order, up to
``BATCH_MAX_MESSAGES`` / ``BATCH_MAX_BYTES``), one per line: the framing and
the ``write()`` are paid once per frame, not per event. Nothing waits for more
events to arrive, so no event reaches an operator later than it would
unbatched. A resync snapshot is always a frame of its own.
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

from agent_shim.protocol_fields import MAX_MESSAGE_BYTES
from agent_shim.wire import lines_that_fit
from towerctl.auth import Principal
from towerctl.tasks import cancel_and_wait

log = logging.getLogger("towerctl.hub")

#: Frames queued for one operator before its backlog is replaced by a snapshot.
QUEUE_LIMIT: Final = 2000
#: At most this many messages in one multi-message frame...
BATCH_MAX_MESSAGES: Final = 256
#: ...and at most this many bytes (UTF-8, separators included) of messages
#: joined into one; a single message larger than this still goes out, alone.
#: Well below what the operator client accepts (``16 * MAX_MESSAGE_BYTES``).
BATCH_MAX_BYTES: Final = 1024 * 1024
assert BATCH_MAX_BYTES < 16 * MAX_MESSAGE_BYTES


class OperatorConn:
    def __init__(
        self,
        conn: ServerConnection,
        principal: Principal,
        snapshot: Callable[[], str],
        *,
        limit: int = QUEUE_LIMIT,
        batch: bool = False,
        activity: bool = False,
        batch_messages: int = BATCH_MAX_MESSAGES,
        batch_bytes: int = BATCH_MAX_BYTES,
    ) -> None:
        """``batch``: the connection negotiated ``towerctl.lines.v1`` or v2;
        ``activity``: v2, so it takes ``activity`` messages."""
        self.conn = conn
        self.principal = principal
        self._snapshot = snapshot
        self._limit = limit
        self.batch = batch
        self.activity = activity
        self._batch_messages = batch_messages
        self._batch_bytes = batch_bytes
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
        await cancel_and_wait(self._task)

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
                    data = self._take_batch() if self.batch else self._queue.popleft()[1]
                else:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                await self.conn.send(data)

    def _take_batch(self) -> str:
        """Pop what is queued now, in order, into one frame's text (at least one
        message; more while both bounds allow). Every queued item came from
        ``encode`` (pydantic's ``model_dump_json``: no raw newline), so the
        lines are unambiguous."""
        queue = self._queue
        n = lines_that_fit((data for _, data in queue), self._batch_bytes, self._batch_messages)
        return "\n".join([queue.popleft()[1] for _ in range(n)])


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

    def send_activity(self, compact: Callable[[], list[str]], each: Callable[[], list[str]]) -> None:
        """Session activity: ``compact`` (``activity`` messages) for operators
        that take them, ``each`` (a ``session`` message per session) for the
        others; each form encoded once, and only if someone gets it."""
        forms: dict[bool, list[str]] = {}
        for op in self.operators:
            messages = forms.get(op.activity)
            if messages is None:
                messages = forms[op.activity] = compact() if op.activity else each()
            for data in messages:
                op.push(data)
