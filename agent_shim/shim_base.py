"""The state every part of the shim's client shares, declared once.

:class:`~agent_shim.client.Shim` is assembled from layers, one per concern
(the outbox and its resend bookkeeping, decision acceptance, the transport
loop), so that each module owns one thing while callers keep using one
object. Each layer subclasses the one below it and calls it through ``self``;
:class:`ShimBase` declares the attributes ``Shim.__init__`` sets so every
layer type-checks on its own. The declarations exist only for the type
checker: at run time the base is empty and every call resolves as it did in
one class.
"""

from __future__ import annotations

import asyncio
import logging
import ssl as ssl_module
import time
from collections import deque
from collections.abc import Callable

from websockets.asyncio.client import ClientConnection

from agent_shim.errors import SessionKilled
from agent_shim.gate import Gate
from agent_shim.protocol import Ack, Decision, Propose

log = logging.getLogger("agent_shim")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class ShimBase:
    """The attributes ``Shim.__init__`` sets (see there for what each is for)."""

    url: str
    _ssl: ssl_module.SSLContext | None
    _pinned_key: bytes | None
    _tofu_key: bytes | None
    agent: str
    env: str
    host: str
    session_id: str
    _token: str
    _connect_timeout: float
    _close_code: int
    _reconnect_max: float
    _on_kill: Callable[[SessionKilled], None] | None
    gate: Gate
    _outbox: deque[str]
    _unconfirmed: deque[tuple[str | None, str]]
    _unconfirmed_keys: set[str]
    _ever_connected: bool
    _outbox_limit: int
    _outbox_ready: asyncio.Event
    _connected: asyncio.Event
    _resumed: asyncio.Event
    _killed: SessionKilled | None
    _waiters: dict[str, tuple[Propose, asyncio.Future[Decision | Ack]]]
    _used_decisions: set[str]
    _gave_up: dict[str, None]
    _ws: ClientConnection | None
    _task: asyncio.Task[None] | None
    _closing: bool
    last_error: str
