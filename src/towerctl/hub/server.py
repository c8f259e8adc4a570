"""The hub's socket layer: one port, two websocket endpoints, a health check.

Authentication happens in ``process_request``, before the upgrade: a bad or
missing token gets a plain 401 and never a websocket. Every frame is parsed
strictly; a bad one gets an ``error`` reply with the reason and a strike, and
a peer that keeps sending them is disconnected. Nothing a peer sends can take
down the hub or another session.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

from pydantic import TypeAdapter
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from agent_shim.policy import PolicyDoc
from agent_shim.protocol import (
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    AgentHello,
    AgentMessageAdapter,
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
from towerctl.auth import Principal, hash_token, parse_bearer, same_hash
from towerctl.config import public_key_file, write_public
from towerctl.hub.fanout import OperatorConn
from towerctl.hub.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from towerctl.hub.metrics import HubMetrics
from towerctl.hub.notify import ApprovalNotifier
from towerctl.hub.service import DEFAULT_DECISION_TTL_S, HubService, Refused, now_ms
from towerctl.store import InvalidTransition, NotFound, Store, StoreError

log = logging.getLogger("towerctl.hub")

MAX_STRIKES: Final = 10
HELLO_TIMEOUT_S: Final = 10.0

_T = TypeVar("_T")


@dataclass(slots=True)
class HubConfig:
    host: str = "127.0.0.1"
    port: int = 0
    db_path: Path = Path("tower.db")
    key_path: Path = Path("audit-signing.key")
    synchronous: str = "NORMAL"
    ssl_context: ssl.SSLContext | None = None
    #: How long a signed approval stays usable by the shim.
    decision_ttl_s: float = DEFAULT_DECISION_TTL_S
    #: POST a Slack-compatible ``{"text": …}`` here when an approval waits longer than ``webhook_after_s``.
    webhook_url: str | None = None
    webhook_after_s: float = 60.0
    #: A TCP connection must complete its websocket handshake (TLS included)
    #: within this many seconds or it is dropped: slowloris-style peers that
    #: send nothing, or half a request line, cannot hold sockets for long.
    open_timeout_s: float = 10.0
    #: After the upgrade, the first message (hello) must arrive within this.
    hello_timeout_s: float = HELLO_TIMEOUT_S
    #: Rejected frames on one connection before it is closed (1008).
    max_strikes: int = MAX_STRIKES
    #: How long a store write waits for a lock held by another process before
    #: failing (the hub then refuses: fail closed).
    store_busy_timeout_ms: int = 5000
    #: Commit in a forked writer process instead of a thread (``towerctl serve`` and
    #: ``up`` do): the event loop then has the interpreter to itself.
    writer_process: bool = False


class Hub:
    """Owns the store, the service and the listening socket."""

    def __init__(self, config: HubConfig) -> None:
        self.config = config
        self.store: Store | None = None
        self.service: HubService | None = None
        self._server: Server | None = None
        self._principals: dict[ServerConnection, Principal] = {}
        self._background: set[asyncio.Future[None]] = set()
        self._bound_port: int | None = None
        #: ``GET /metrics``: one registry per hub, surviving stop/start of this object.
        self.metrics = HubMetrics(lambda: self.service)
        self.notifier: ApprovalNotifier | None = None

    @property
    def port(self) -> int:
        """The bound port; still answers after ``stop()`` (for restarts on the same port)."""
        if self._server is not None:
            for sock in self._server.sockets:
                self._bound_port = int(sock.getsockname()[1])
        if self._bound_port is None:
            raise RuntimeError("hub not started")
        return self._bound_port

    @property
    def url(self) -> str:
        scheme = "wss" if self.config.ssl_context else "ws"
        return f"{scheme}://{self.config.host}:{self.port}"

    async def start(self, policy: PolicyDoc | None = None) -> None:
        self.store = await Store.open(
            self.config.db_path,
            key_path=self.config.key_path,
            synchronous=self.config.synchronous,
            busy_timeout_ms=self.config.store_busy_timeout_ms,
            writer_process=self.config.writer_process,
        )
        self.service = HubService(self.store, decision_ttl_s=self.config.decision_ttl_s)
        self.service.metrics = self.metrics
        await self.service.load()
        self._write_public_key()
        if policy is not None:
            for env, pol in policy.environments.items():
                current = self.service.reg.policies.get(env)
                if current is None or current[1] != pol:
                    await self.service.apply_policy(env, pol, actor="serve --policy")
        await self.store.audit_note(
            "hub.started", actor="hub", data={"pid": __import__("os").getpid()}, ts_ms=now_ms()
        )
        self._server = await serve(
            self._handler,
            self.config.host,
            self.config.port,
            process_request=self._process_request,
            compression=None,
            max_size=MAX_MESSAGE_BYTES,
            max_queue=16,
            ping_interval=20,
            ping_timeout=20,
            open_timeout=self.config.open_timeout_s,
            # A peer that stops reading must not hold up shutdown for websockets' 10 s default.
            close_timeout=2,
            ssl=self.config.ssl_context,
            server_header="towerctl",
        )
        _ = self.port  # remember it: restarts on the same port ask after stop()
        if self.config.webhook_url:
            self.notifier = ApprovalNotifier(
                self.config.webhook_url, self.config.webhook_after_s, lambda: self.service
            )
            self.notifier.start()

    @property
    def public_key_file(self) -> Path:
        return public_key_file(self.config.key_path)

    @property
    def public_key_hex(self) -> str:
        assert self.store is not None
        return self.store.public_key_raw.hex()

    def _write_public_key(self) -> None:
        """Publish the decision/checkpoint public key beside the private key
        (mode 0644: it is public) for shims to pin. Best effort: a read-only
        directory must not stop the hub."""
        try:
            write_public(self.public_key_file, self.public_key_hex + "\n")
        except OSError as exc:
            log.warning("cannot write %s: %s", self.public_key_file, exc)

    async def stop(self) -> None:
        if self.notifier is not None:
            await self.notifier.stop()
            self.notifier = None
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self.store is not None:
            with contextlib.suppress(StoreError):
                await self.store.audit_note("hub.stopped", actor="hub", data={}, ts_ms=now_ms())
            await self.store.close()

    async def __aenter__(self) -> Hub:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ----------------------------------------------------------------- HTTP

    async def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/healthz":
            return self._health(conn)
        if path == "/metrics":
            return self._metrics(conn)
        if path not in ("/agent", "/operator"):
            return conn.respond(
                http.HTTPStatus.NOT_FOUND, "not found: use /agent, /operator, /healthz or /metrics\n"
            )
        token = parse_bearer(request.headers.get("Authorization"))
        if token is None:
            return _unauthorized(conn, "missing bearer token\n")
        assert self.store is not None
        presented = hash_token(token)
        try:
            row = await self.store.token_by_hash(presented)
        except StoreError:
            return conn.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "store unavailable\n")
        # The lookup is by SHA-256 of the token (timing reveals nothing usable
        # about the token itself); the final comparison is constant-time anyway.
        if row is None or not same_hash(row.hash, presented):
            return _unauthorized(conn, "invalid or revoked token\n")
        principal = Principal(token_id=row.token_id, name=row.name, role=row.role, envs=tuple(row.envs))  # type: ignore[arg-type]
        if path == "/agent" and principal.role != "agent":
            return conn.respond(http.HTTPStatus.FORBIDDEN, "this endpoint needs an agent token\n")
        if path == "/operator" and not principal.is_operator:
            return conn.respond(http.HTTPStatus.FORBIDDEN, "this endpoint needs an operator token\n")
        self._principals[conn] = principal
        return None

    def _metrics(self, conn: ServerConnection) -> Response:
        resp = conn.respond(http.HTTPStatus.OK, self.metrics.exposition().decode("utf-8"))
        resp.headers["Content-Type"] = METRICS_CONTENT_TYPE
        return resp

    def _health(self, conn: ServerConnection) -> Response:
        svc = self.service
        body = {
            "status": "ok",
            "protocol": PROTOCOL_VERSION,
            "sessions": len(svc.reg.sessions) if svc else 0,
            "pending": len(svc.reg.pending) if svc else 0,
            "operators": len(svc.fanout.operators) if svc else 0,
        }
        resp = conn.respond(http.HTTPStatus.OK, json.dumps(body) + "\n")
        resp.headers["Content-Type"] = "application/json"
        return resp

    # ------------------------------------------------------------ websocket

    async def _handler(self, conn: ServerConnection) -> None:
        principal = self._principals.pop(conn, None)
        if principal is None:  # cannot happen: process_request let it through
            await conn.close(1008, "unauthenticated")
            return
        try:
            if conn.request is not None and conn.request.path.startswith("/agent"):
                await self._agent(conn, principal)
            else:
                await self._operator(conn, principal)
        except ConnectionClosed:
            pass
        except StoreError as exc:
            await self._store_failed(conn, exc)

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

    async def _agent(self, conn: ServerConnection, principal: Principal) -> None:
        assert self.service is not None
        try:
            first = _decode_frame(
                AgentMessageAdapter, await asyncio.wait_for(conn.recv(), self.config.hello_timeout_s)
            )
        except TimeoutError:
            await self._reject(
                conn, "timeout", f"no hello within {self.config.hello_timeout_s:g}s", fatal=True
            )
            return
        except ProtocolError as exc:
            await self._reject(conn, exc.code, exc.message, fatal=True)
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
        try:
            async for raw in conn:
                try:
                    msg = _decode_frame(AgentMessageAdapter, raw)
                    if isinstance(msg, Propose):
                        await self.service.propose(sess, msg)
                    elif isinstance(msg, Started):
                        queued = self.service.started_queued(sess, msg)
                        if queued is None:
                            await self.service.started(sess, msg)
                        else:
                            self._watch(conn, queued, raw)
                    elif isinstance(msg, Report):
                        queued = self.service.report_queued(sess, msg)
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

    async def _operator(self, conn: ServerConnection, principal: Principal) -> None:
        assert self.service is not None
        svc = self.service
        try:
            first = _decode_frame(
                OperatorMessageAdapter, await asyncio.wait_for(conn.recv(), self.config.hello_timeout_s)
            )
        except TimeoutError:
            await self._reject(
                conn, "timeout", f"no hello within {self.config.hello_timeout_s:g}s", fatal=True
            )
            return
        except ProtocolError as exc:
            await self._reject(conn, exc.code, exc.message, fatal=True)
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
        op = OperatorConn(conn, principal, svc.snapshot_json)
        op.push(svc.snapshot_json())
        svc.fanout.add(op)
        svc.fanout.send(encode(OperatorsEvent(operators=svc.fanout.names())))
        strikes = 0
        try:
            async for raw in conn:
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
                    # The request was not made durable, so it was not made at all
                    # (fail closed). The operator is told why and stays connected:
                    # a locked or full database must not also blind the console.
                    code = "illegal_transition" if isinstance(exc, InvalidTransition) else "store_unavailable"
                    log.error(
                        "operator %s request %s refused by the store: %s", principal.name, msg.type, exc
                    )
                    op.reply(encode(Result(req=msg.req, ok=False, code=code, message=str(exc)[:4000])))
        finally:
            await svc.fanout.remove(op)
            svc.fanout.send(encode(OperatorsEvent(operators=svc.fanout.names())))


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


def _unauthorized(conn: ServerConnection, text: str) -> Response:
    resp = conn.respond(http.HTTPStatus.UNAUTHORIZED, text)
    resp.headers["WWW-Authenticate"] = 'Bearer realm="towerctl"'
    return resp


__all__ = ["Headers", "Hub", "HubConfig"]
