"""Per-connection message loops of the hub's two websocket endpoints.

Split from the socket layer (``server.py``: binding, TLS, authentication before
the upgrade, health and metrics) because this is where a peer's frames meet
the service: strict decoding, strikes, error replies, and pipelined writes
whose failure must still reach the agent. Mixed into :class:`Hub`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import TYPE_CHECKING, Final, TypeVar

from pydantic import TypeAdapter
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from agent_shim.protocol import (
    PROTOCOL_VERSION,
    AgentHello,
    AgentMessageAdapter,
    Alert,
    Decide,
    DecisionRefused,
    ErrorMsg,
    Freeze,
    OperatorHello,
    OperatorMessageAdapter,
    OperatorsEvent,
    OperatorWelcome,
    Propose,
    ProtocolError,
    Report,
    Result,
    SelfPaused,
    SessionControl,
    SetPolicy,
    Started,
    decode,
    encode,
)
from agent_shim.wire import ACTIVITY_SUBPROTOCOL, LINES_SUBPROTOCOLS, frame_lines
from towerctl.auth import Principal
from towerctl.hub.fanout import OperatorConn
from towerctl.hub.service import HubService, Refused
from towerctl.store import InvalidTransition, NotFound, StoreError

if TYPE_CHECKING:
    from towerctl.hub.registry import LiveSession
    from towerctl.hub.self_check import AuditSelfCheck
    from towerctl.hub.server import HubConfig

log = logging.getLogger("towerctl.hub")

MAX_STRIKES: Final = 10
#: Decisions one operator connection may have waiting for their commit at once.
MAX_DECISIONS_IN_FLIGHT: Final = 64
HELLO_TIMEOUT_S: Final = 10.0

_T = TypeVar("_T")


class ConnectionLoops:
    """The agent and operator loops; the Hub provides the state declared here."""

    config: HubConfig
    service: HubService | None
    self_check: AuditSelfCheck | None
    _background: set[asyncio.Future[None]]

    async def _store_failed(self, conn: ServerConnection, exc: StoreError) -> None:
        # Fail closed: a store we cannot write to means no decisions at all.
        log.error("store failure, closing connection: %s", exc)
        with contextlib.suppress(ConnectionClosed):
            await conn.send(encode(ErrorMsg(code="store_unavailable", message=str(exc)[:4000], fatal=True)))
            await conn.close(1011, "store unavailable")

    def _watch(self, conn: ServerConnection, fut: asyncio.Future[None], raw: str | bytes) -> None:
        """A pipelined write (started/report): the agent's loop moved on, so
        its outcome is dealt with here once the batch commits."""

        def done(f: asyncio.Future[None]) -> None:
            exc = None if f.cancelled() else f.exception()
            if exc is None:
                return
            if isinstance(exc, (InvalidTransition, NotFound)):
                reply = encode(ErrorMsg(code="illegal_transition", message=str(exc)[:4000], ref=_ref(raw)))
                task = asyncio.ensure_future(_send_quietly(conn, reply))
            elif isinstance(exc, StoreError):
                task = asyncio.ensure_future(self._store_failed(conn, exc))
            else:  # pragma: no cover - the writer turns everything into StoreError
                log.error("pipelined write failed: %r", exc)
                return
            self._background.add(task)
            task.add_done_callback(self._background.discard)

        fut.add_done_callback(done)

    async def _reject(
        self, conn: ServerConnection, code: str, message: str, ref: str | None = None, fatal: bool = False
    ) -> None:
        await conn.send(encode(ErrorMsg(code=code, message=message[:4000], ref=ref, fatal=fatal)))
        if fatal:
            await conn.close(1008, message[:120])

    async def _first_message(self, conn: ServerConnection, adapter: TypeAdapter[_T]) -> _T | None:
        """The hello (or whatever came first), within the hello timeout; None after
        rejecting a peer that sent nothing in time or nothing decodable."""
        wait = self.config.hello_timeout_s
        try:
            return _decode_frame(adapter, await asyncio.wait_for(conn.recv(), wait))
        except TimeoutError:
            await self._reject(conn, "timeout", f"no hello within {wait:g}s", fatal=True)
        except ProtocolError as exc:
            await self._reject(conn, exc.code, exc.message, fatal=True)
        return None

    async def _agent(self, conn: ServerConnection, principal: Principal) -> None:
        assert self.service is not None
        first = await self._first_message(conn, AgentMessageAdapter)
        if first is None:
            return
        if not isinstance(first, AgentHello):
            await self._reject(
                conn, "expected_hello", f"first message must be hello, got {first.type}", fatal=True
            )
            return
        if first.protocol != PROTOCOL_VERSION:
            await self._reject(
                conn,
                "protocol_version",
                f"hub speaks protocol {PROTOCOL_VERSION}, not {first.protocol}",
                fatal=True,
            )
            return
        if not principal.may_use_env(first.env):
            await self._reject(
                conn,
                "forbidden",
                f"token {principal.name!r} is not valid for environment {first.env!r}",
                fatal=True,
            )
            return
        try:
            sess = await self.service.agent_hello(conn, principal, first)
        except Refused as exc:
            await self._reject(conn, exc.code, exc.message, fatal=True)
            return
        strikes = 0
        svc = self.service
        lines = conn.subprotocol in LINES_SUBPROTOCOLS
        try:
            async for frame in conn:
                svc.agent_frames += 1
                for raw in frame_lines(frame, lines):
                    svc.agent_messages += 1
                    try:
                        await self._agent_message(conn, sess, raw)
                    except (ProtocolError, Refused) as exc:
                        strikes += 1
                        await self._reject(conn, exc.code, exc.message, ref=_ref(raw))
                        if strikes >= self.config.max_strikes:
                            await self._reject(
                                conn, "too_many_errors", f"{strikes} rejected messages", fatal=True
                            )
                            return
        finally:
            await self.service.agent_gone(sess, conn)

    async def _agent_message(self, conn: ServerConnection, sess: LiveSession, raw: str | bytes) -> None:
        """One message from an agent; ProtocolError or Refused says why not."""
        assert self.service is not None
        msg = _decode_frame(AgentMessageAdapter, raw)
        if isinstance(msg, Propose):
            await self.service.propose(sess, msg)
        elif isinstance(msg, Started):
            queued = self.service.started_queued(sess, msg, lazy=True)
            if queued is None:
                await self.service.started(sess, msg)
            else:
                self._watch(conn, queued, raw)
        elif isinstance(msg, Report):
            queued = self.service.report_queued(sess, msg, lazy=True)
            if queued is None:
                await self.service.report(sess, msg)
            else:
                self._watch(conn, queued, raw)
        elif isinstance(msg, SelfPaused):
            await self.service.self_paused(sess, msg.reason)
        elif isinstance(msg, DecisionRefused):
            await self.service.decision_refused(sess, msg)
        else:
            raise ProtocolError("unexpected", "hello was already received")

    async def _operator(self, conn: ServerConnection, principal: Principal) -> None:
        assert self.service is not None
        svc = self.service
        first = await self._first_message(conn, OperatorMessageAdapter)
        if first is None:
            return
        if not isinstance(first, OperatorHello) or first.protocol != PROTOCOL_VERSION:
            await self._reject(
                conn,
                "expected_hello",
                f"first message must be hello for protocol {PROTOCOL_VERSION}",
                fatal=True,
            )
            return
        await conn.send(
            encode(
                OperatorWelcome(
                    protocol=PROTOCOL_VERSION,
                    operator=principal.name,
                    role=principal.role,  # type: ignore[arg-type]  # is_operator checked in process_request
                )
            )
        )
        lines = conn.subprotocol in LINES_SUBPROTOCOLS
        op = OperatorConn(
            conn, principal, svc.snapshot_json, batch=lines, activity=conn.subprotocol == ACTIVITY_SUBPROTOCOL
        )
        op.push(svc.snapshot_json())
        audit = self.self_check.status if self.self_check is not None else None
        if audit is not None and audit.state == "broken":
            # Alerts are not replayed, and this one stays true until someone looks.
            op.push(encode(Alert(level="critical", message=audit.alert()[:4000])))
        svc.fanout.add(op)
        svc.fanout.send(encode(OperatorsEvent(operators=svc.fanout.names())))
        strikes = 0
        deciding: set[asyncio.Task[None]] = set()
        try:
            async for frame in conn:
                for raw in frame_lines(frame, lines):
                    try:
                        msg = _decode_frame(OperatorMessageAdapter, raw)
                    except ProtocolError as exc:
                        strikes += 1
                        op.reply(encode(ErrorMsg(code=exc.code, message=exc.message[:4000], ref=_ref(raw))))
                        if strikes >= self.config.max_strikes:
                            await self._reject(
                                conn, "too_many_errors", f"{strikes} rejected messages", fatal=True
                            )
                            return
                        continue
                    if isinstance(msg, OperatorHello):
                        op.reply(encode(ErrorMsg(code="unexpected", message="hello was already received")))
                        continue
                    if isinstance(msg, Decide):
                        # A decision waits for its commit (durable before the agent
                        # hears of it). Taken one at a time, a burst of approvals
                        # waited for one commit after another: at 50 decisions/s on a
                        # busy hub the last of them waited seconds. Side by side they
                        # share group commits; each claims its action before its first
                        # await, so the first of two decisions on one action still wins.
                        if len(deciding) >= MAX_DECISIONS_IN_FLIGHT:
                            await asyncio.wait(deciding, return_when=asyncio.FIRST_COMPLETED)
                        task = asyncio.create_task(self._request(op, principal, msg))
                        deciding.add(task)
                        task.add_done_callback(deciding.discard)
                        continue
                    if deciding:  # any other request sees the decisions sent before it done
                        await asyncio.wait(set(deciding))
                    await self._request(op, principal, msg)
        finally:
            if deciding:  # let them be recorded and answered
                await asyncio.wait(set(deciding))
            await svc.fanout.remove(op)
            svc.fanout.send(encode(OperatorsEvent(operators=svc.fanout.names())))

    async def _request(
        self, op: OperatorConn, principal: Principal, msg: Decide | SessionControl | Freeze | SetPolicy
    ) -> None:
        """Carry out one operator request and queue its result."""
        assert self.service is not None
        svc = self.service
        try:
            message = ""
            if isinstance(msg, Decide):
                await svc.decide(principal, msg.action_id, msg.digest, msg.approve, msg.reason)
            elif isinstance(msg, SessionControl):
                message = await svc.control(principal, msg.session_id, msg.op, msg.reason)
            elif isinstance(msg, Freeze):
                await svc.freeze(principal, msg.env, msg.frozen, msg.reason)
            elif isinstance(msg, SetPolicy):
                message = f"version {await svc.set_policy(principal, msg.env, msg.policy)}"
            op.reply(encode(Result(req=msg.req, ok=True, message=message)))
        except Refused as exc:
            op.reply(encode(Result(req=msg.req, ok=False, code=exc.code, message=exc.message[:4000])))
        except StoreError as exc:
            # The request was not made durable, so it was not made at all (fail
            # closed). The operator is told why and stays connected: a locked or
            # full database must not also blind the console.
            code = "illegal_transition" if isinstance(exc, InvalidTransition) else "store_unavailable"
            log.error("operator %s request %s refused by the store: %s", principal.name, msg.type, exc)
            op.reply(encode(Result(req=msg.req, ok=False, code=code, message=str(exc)[:4000])))


def _decode_frame(adapter: TypeAdapter[_T], raw: str | bytes) -> _T:
    """The protocol is JSON in text frames: a binary frame is refused (after
    saying whether it was even UTF-8), never parsed."""
    if isinstance(raw, bytes):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("bad_encoding", f"frame is not UTF-8: {exc.reason}") from None
        raise ProtocolError("binary_frame", "binary frames are not accepted; send JSON in a text frame")
    return decode(adapter, raw)


async def _send_quietly(conn: ServerConnection, data: str) -> None:
    with contextlib.suppress(ConnectionClosed):
        await conn.send(data)


def _ref(raw: str | bytes) -> str | None:
    """Best-effort id of the offending message, to correlate the error."""
    try:
        obj = json.loads(raw)
    except (ValueError, TypeError, RecursionError):
        # A hostile frame (10,000 levels deep) must not turn the error
        # reply itself into a crash of the connection handler.
        return None
    if isinstance(obj, dict):
        for key in ("req", "action_id"):
            val = obj.get(key)
            if isinstance(val, str):
                return val[:80]
        action = obj.get("action")
        if isinstance(action, dict) and isinstance(action.get("action_id"), str):
            return str(action["action_id"])[:80]
    return None
