"""The shim's connection to the hub: connect, resume, read, write, reconnect.

A background task that reconnects with jittered backoff, so the agent never
waits on the network except for a decision. On each (re)connect it says
hello, applies the welcome, re-sends what the previous connection may have
lost, then dispatches every hub message to the state it changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
from typing import Final

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from agent_shim.decision_check import DecisionAcceptance
from agent_shim.errors import SessionKilled
from agent_shim.protocol import (
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    Ack,
    AgentHello,
    Control,
    Decision,
    ErrorMsg,
    HubToAgentAdapter,
    PolicyUpdate,
    ProtocolError,
    Welcome,
    decode,
    encode,
)
from agent_shim.shim_base import log
from agent_shim.wire import LINES_SUBPROTOCOL, frame_lines, lines_that_fit

SHIM_VERSION: Final = "0.1.0"


class ShimTransport(DecisionAcceptance):
    """The connection loop of :class:`~agent_shim.client.Shim` and message dispatch."""

    # -------------------------------------------------------------- transport

    async def _run(self) -> None:
        delay = 0.05
        while not self._closing:
            try:
                async with connect(
                    self.url,
                    additional_headers={"Authorization": f"Bearer {self._token}"},
                    compression=None,
                    proxy=None,
                    max_size=MAX_MESSAGE_BYTES,
                    subprotocols=[Subprotocol(LINES_SUBPROTOCOL)],
                    open_timeout=self._connect_timeout,
                    ping_interval=10,
                    ping_timeout=20,
                    close_timeout=2,
                    ssl=self._ssl,
                ) as ws:
                    self._ws = ws
                    try:
                        await self._session(ws)
                    finally:
                        self._ws = None
                    delay = 0.05
            except asyncio.CancelledError:
                raise
            except InvalidStatus as exc:
                self.last_error = f"hub refused the connection: HTTP {exc.response.status_code}"
            except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError) as exc:
                self.last_error = f"hub unreachable: {exc or type(exc).__name__}"
            except ProtocolError as exc:
                self.last_error = f"hub sent a bad message: {exc.message}"
            finally:
                self._connected.clear()
            if self._closing:
                return
            log.warning("towerctl shim: %s; retrying", self.last_error)
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, self._reconnect_max)

    async def _session(self, ws: ClientConnection) -> None:
        hello = AgentHello(
            protocol=PROTOCOL_VERSION,
            agent=self.agent,
            env=self.env,
            host=self.host[:255],
            pid=os.getpid(),
            session_id=self.session_id,
            shim_version=SHIM_VERSION,
        )
        await ws.send(encode(hello))
        first = decode(HubToAgentAdapter, await asyncio.wait_for(ws.recv(), self._connect_timeout))
        if isinstance(first, ErrorMsg):
            self.last_error = f"hub rejected hello: {first.message}"
            return
        if not isinstance(first, Welcome):
            raise ProtocolError("unexpected", f"expected welcome, got {first.type}")
        self._on_welcome(first)
        # Re-send what the previous connection may have lost, in order.
        resend = [
            data
            for key, data in self._unconfirmed
            # A request for approval nobody waits for any more (it timed out
            # here meanwhile) must not reappear as pending at the hub.
            if key is None or key in self._waiters or json.loads(data)["verdict"] != "ask"
        ]
        self._unconfirmed.clear()
        self._unconfirmed_keys.clear()
        for data in resend:
            await ws.send(data)
            self._sent(data)
        # Re-send proposals still waiting for a decision: the hub de-duplicates
        # by action id and answers with the decision if one was already made.
        for propose, fut in list(self._waiters.values()):
            if not fut.done():
                await ws.send(encode(propose))
        self._connected.set()
        self._ever_connected = True
        writer = asyncio.create_task(self._writer(ws))
        try:
            lines = ws.subprotocol == LINES_SUBPROTOCOL
            async for frame in ws:
                for raw in frame_lines(frame, lines):
                    try:
                        msg = decode(HubToAgentAdapter, raw)
                    except ProtocolError as exc:
                        log.error("towerctl shim: ignoring bad hub message: %s", exc.message)
                        continue
                    self._dispatch(msg)
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await writer

    async def _writer(self, ws: ClientConnection) -> None:
        """Send the outbox in order; under LINES_SUBPROTOCOL everything queued
        at once (a report and the next proposal) goes in one frame. A message
        leaves the outbox only once its frame was handed to the socket."""
        lines = ws.subprotocol == LINES_SUBPROTOCOL
        while True:
            while self._outbox:
                n = lines_that_fit(self._outbox, MAX_MESSAGE_BYTES) if lines else 1
                batch = [self._outbox[i] for i in range(n)]
                await ws.send("\n".join(batch))
                for data in batch:
                    self._outbox.popleft()
                    self._sent(data)
            self._outbox_ready.clear()
            await self._outbox_ready.wait()

    # --------------------------------------------------------------- dispatch
    def _on_welcome(self, w: Welcome) -> None:
        self._learn_key(w.hub_key)
        self.session_id = w.session_id
        self.gate.set_policy(w.policy)
        if w.killed:
            self._apply_kill(SessionKilled("session was killed", by="hub"))
        elif w.paused:
            self._resumed.clear()
        else:
            self._resumed.set()

    def _dispatch(self, msg: object) -> None:
        if isinstance(msg, Decision | Ack):
            self._confirm(msg.action_id)
            entry = self._waiters.get(msg.action_id)
            final = isinstance(msg, Decision) or msg.state in ("denied", "cancelled")
            if entry is not None and not entry[1].done() and final:
                entry[1].set_result(msg)
            elif entry is None and isinstance(msg, Decision) and msg.action_id in self._gave_up:
                del self._gave_up[msg.action_id]
                if msg.verdict == "approved":
                    why = "arrived after the shim denied it at its timeout"
                    self._refuse(msg, msg.action_id, "expired", why)
        elif isinstance(msg, PolicyUpdate):
            if msg.env == self.env:
                self.gate.set_policy(msg.policy)
        elif isinstance(msg, Control):
            if msg.op == "pause":
                self._resumed.clear()
            elif msg.op == "resume":
                self.gate.reset_rate()
                self._resumed.set()
            else:
                self._apply_kill(SessionKilled(msg.reason or "session killed", by=msg.by))
        elif isinstance(msg, ErrorMsg):
            self.last_error = f"hub error {msg.code}: {msg.message}"
            log.warning("towerctl shim: %s", self.last_error)

    def _apply_kill(self, exc: SessionKilled) -> None:
        self._killed = exc
        self._resumed.set()  # wake anything blocked on pause so it sees the kill
        for _, fut in self._waiters.values():
            if not fut.done():
                fut.set_exception(SessionKilled(exc.reason, by=exc.by))
        if self._on_kill is not None:
            self._on_kill(exc)
