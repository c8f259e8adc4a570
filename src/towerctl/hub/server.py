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
import gc
import http
import json
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import Protocol

from agent_shim.policy import PolicyDoc
from agent_shim.protocol import (
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
)
from agent_shim.wire import select_lines
from towerctl.auth import Principal, hash_token, parse_bearer, same_hash
from towerctl.config import public_key_file, write_public
from towerctl.hub.connections import HELLO_TIMEOUT_S, MAX_STRIKES, ConnectionLoops
from towerctl.hub.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from towerctl.hub.metrics import HubMetrics
from towerctl.hub.notify import ApprovalNotifier
from towerctl.hub.self_check import AuditSelfCheck
from towerctl.hub.service import DEFAULT_DECISION_TTL_S, HubService, now_ms
from towerctl.store import Store, StoreError

log = logging.getLogger("towerctl.hub")


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
    #: Verify the audit log and the tables against it at start and every this
    #: many seconds, in a child process (hub/self_check); 0: never (``serve``
    #: and ``up`` check hourly).
    audit_check_interval_s: float = 0.0


class Hub(ConnectionLoops):
    """Owns the store, the service and the listening socket."""

    def __init__(self, config: HubConfig) -> None:
        self.config = config
        self.store: Store | None = None
        self.service: HubService | None = None
        self._server: Server | None = None
        self._principals: dict[ServerConnection, Principal] = {}
        self._background: set[asyncio.Future[None]] = set()
        self._bound_port: int | None = None
        self.self_check: AuditSelfCheck | None = None
        #: ``GET /metrics``: one registry per hub, surviving stop/start of this object.
        self.metrics = HubMetrics(
            lambda: self.service, lambda: self.self_check.status if self.self_check else None
        )
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
            select_subprotocol=select_lines,
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
        self.metrics.gc_pauses.install()  # last: a start that failed leaves no hook behind
        if self.config.audit_check_interval_s > 0:
            svc = self.service
            self.self_check = AuditSelfCheck(
                self.config.db_path,
                self.config.key_path,
                self.config.audit_check_interval_s,
                lambda status: svc.alert("critical", status.alert()),
            )
            self.self_check.start()
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
        self.metrics.gc_pauses.remove()
        if self.self_check is not None:
            await self.self_check.stop()
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
            "audit": self.self_check.status.health() if self.self_check else "not checked by this hub",
        }
        resp = conn.respond(http.HTTPStatus.OK, json.dumps(body) + "\n")
        resp.headers["Content-Type"] = "application/json"
        return resp

    # ------------------------------------------------------------ websocket

    async def _handler(self, conn: ServerConnection) -> None:
        is_agent = conn.request is not None and conn.request.path.startswith("/agent")
        _release_handshake(conn)
        principal = self._principals.pop(conn, None)
        if principal is None:  # cannot happen: process_request let it through
            await conn.close(1008, "unauthenticated")
            return
        try:
            if is_agent:
                await self._agent(conn, principal)
            else:
                await self._operator(conn, principal)
        except ConnectionClosed:
            pass
        except StoreError as exc:
            await self._store_failed(conn, exc)


def _release_handshake(conn: ServerConnection) -> None:
    """Drop what only the handshake needed, which is over when the handler runs.

    The ``select_subprotocol`` closure: given one, websockets' ``serve`` binds
    a closure over each connection onto its protocol (connection -> protocol
    -> closure -> connection), so every connection outlived its close until a
    full collection: after 1,000 agents disconnected at once that collection
    stopped the hub for 62-339 ms (docs/performance.md). Dropping the instance
    attribute breaks the cycle (a no-op if a later websockets stores it
    elsewhere: tests/test_hub_gc.py notices).

    The headers of the handshake's request and response: a list per header
    name and a tuple per header, a fifth of the objects the collector tracks
    per connected agent, kept for the connection's life and read by nothing
    after this. A burst of agents connecting fills the young generation with
    such live objects, and the collection that finds them walks them all:
    10-25 ms for 1,000 agents, the latency phases' worst pauses
    (docs/performance.md, "the 14:55 session"). The request itself stays:
    websockets takes a connection without one to be still in its handshake,
    and the handler reads its path."""
    conn.protocol.__dict__.pop("select_subprotocol", None)
    if conn.request is not None:
        conn.request.headers.clear()
    if conn.response is not None:
        conn.response.headers.clear()
    conn.connection_lost_waiter.add_done_callback(_parser_closer(conn.protocol))


def _parser_closer(protocol: Protocol) -> Callable[[object], None]:
    """A callback for when the connection is lost: close the protocol's frame parser.

    websockets' sans-I/O protocol parses with a generator whose frame holds
    the protocol (protocol -> parser -> frame -> protocol), so a closed
    connection's protocol, its reader, the close frame and their lists (~12
    tracked objects) waited for the cycle collector: with 1,000 agents
    churning, 12,000 more objects for each young collection to walk, and
    none of it could ever be frozen out of the collector's sight. Closing the
    generator ends its frame; websockets parses nothing after the connection
    is lost (its ``receive_eof`` is idempotent, and ran first).
    tests/test_hub_gc.py holds the protocol freed without the collector.
    Not a closure over the connection: that would be one more cycle."""

    def close_parser(_done: object) -> None:
        protocol.parser.close()

    return close_parser


def _unauthorized(conn: ServerConnection, text: str) -> Response:
    resp = conn.respond(http.HTTPStatus.UNAUTHORIZED, text)
    resp.headers["WWW-Authenticate"] = 'Bearer realm="towerctl"'
    return resp


#: CPython collects its youngest generation every 700 net allocations of
#: container objects. A busy hub always holds a thousand connections'
#: in-flight frames, futures and messages, which each such collection walks
#: and promotes just before they die: at 1,000 agents that was ~20 % of the
#: serve process's CPU (docs/performance.md, "the 01:07 session"). At 50,000
#: nearly all of them die first. The older generations keep CPython's
#: ratios, so cycles that live longer are still collected.
YOUNG_GC_THRESHOLD: Final = 50_000


def tune_gc_for_serving() -> None:
    """For a process whose main job is the hub (``serve``, ``up``), called
    before the hub starts: the store's writer process, forked then, inherits it."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GC_THRESHOLD, older, oldest)


def freeze_startup_objects() -> None:
    """For ``serve``, once the hub has started: everything alive then (modules,
    classes, pydantic's validators, the store, the server) leaves the
    collector's sight for good. A full collection walks every tracked object,
    and these never become garbage; measured with ``bench/hub_probe.py
    --agents 1000``, the full collection after the agents disconnect took
    34-37 ms and 6-8 ms once they were frozen. Not in ``Hub.start``: a process
    that starts hubs again and again (the tests) would keep all it had."""
    gc.collect()
    gc.freeze()


__all__ = [
    "YOUNG_GC_THRESHOLD",
    "Headers",
    "Hub",
    "HubConfig",
    "freeze_startup_objects",
    "tune_gc_for_serving",
]
