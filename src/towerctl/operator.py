"""The operator client: the CLI and the TUI talk to the hub through this.

It keeps a live copy of the hub's state (snapshot, then deltas), matches
requests to results by ``req`` id, and hands every event to whoever
consumes ``events()``. It has no opinion about display.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from ssl import SSLContext
from typing import Final

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from agent_shim.action_ids import id_matches
from agent_shim.client import client_ssl_context
from agent_shim.policy import EnvPolicy
from agent_shim.protocol import (
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    ActionEvent,
    ActionInfo,
    ActivityEvent,
    Decide,
    ErrorMsg,
    Freeze,
    FreezeEvent,
    HubToOperator,
    HubToOperatorAdapter,
    OperatorHello,
    OperatorsEvent,
    OperatorWelcome,
    PolicyEvent,
    PolicyInfo,
    Result,
    SessionActivity,
    SessionControl,
    SessionEvent,
    SessionInfo,
    SetPolicy,
    Snapshot,
    apply_activity,
    decode,
    encode,
)
from agent_shim.wire import LINES_SUBPROTOCOLS, frame_lines

REQUEST_TIMEOUT_S: Final = 30.0
#: Recent actions kept for lookups; a busy fleet sends thousands a minute.
MAX_ACTIONS_KEPT: Final = 5000


class OperatorError(Exception):
    """The hub refused a request or could not be reached."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


def operator_url(url: str) -> str:
    base = url.rstrip("/")
    return base if base.endswith("/operator") else base + "/operator"


class OperatorClient:
    """``async with OperatorClient(url, token) as op:`` — connected and synced."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        client: str = "towerctl",
        timeout: float = 10.0,
        ssl: SSLContext | None = None,
    ) -> None:
        """``ssl`` is the TLS context for ``wss://`` (default: the system CAs,
        or the PEM file named by ``TOWER_CA``)."""
        self.url = operator_url(url)
        self._ssl = client_ssl_context(self.url, ssl)
        self._token = token
        self._client = client
        self._timeout = timeout
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._results: dict[str, asyncio.Future[Result]] = {}
        self._ids = itertools.count(1)
        self._events: asyncio.Queue[HubToOperator | None] = asyncio.Queue()
        self._synced = asyncio.Event()
        self.closed = asyncio.Event()
        self.name = ""
        self.role = ""
        self._sessions: dict[str, SessionInfo] = {}
        #: Activity received and not yet folded into ``sessions`` (see there).
        self._activity: dict[str, SessionActivity] = {}
        self.pending: dict[str, ActionInfo] = {}
        self.actions: dict[str, ActionInfo] = {}
        self.policies: dict[str, PolicyInfo] = {}
        self.frozen: set[str] = set()
        self.operators: tuple[str, ...] = ()
        self.hub_time_offset_ms = 0

    async def __aenter__(self) -> OperatorClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        try:
            self._ws = await connect(
                self.url,
                additional_headers={"Authorization": f"Bearer {self._token}"},
                compression=None,
                proxy=None,
                max_size=16 * MAX_MESSAGE_BYTES,
                # Several events a frame when the hub speaks it (agent_shim.wire).
                subprotocols=[Subprotocol(name) for name in LINES_SUBPROTOCOLS],
                open_timeout=self._timeout,
                ssl=self._ssl,
            )
        except InvalidStatus as exc:
            body = exc.response.body.decode("utf-8", "replace").strip() if exc.response.body else ""
            raise OperatorError(f"hub refused: HTTP {exc.response.status_code} {body}", "http") from None
        except (OSError, TimeoutError) as exc:
            raise OperatorError(f"cannot reach the hub at {self.url}: {exc}", "unreachable") from None
        await self._ws.send(encode(OperatorHello(protocol=PROTOCOL_VERSION, client=self._client)))
        welcome = decode(HubToOperatorAdapter, await asyncio.wait_for(self._ws.recv(), self._timeout))
        if isinstance(welcome, ErrorMsg):
            raise OperatorError(welcome.message, welcome.code)
        if not isinstance(welcome, OperatorWelcome):
            raise OperatorError(f"unexpected first message {welcome.type}")
        self.name, self.role = welcome.operator, welcome.role
        self._reader = asyncio.create_task(self._read(self._ws))
        try:
            await asyncio.wait_for(self._synced.wait(), self._timeout)
        except TimeoutError:
            raise OperatorError("hub sent no snapshot") from None

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def _read(self, ws: ClientConnection) -> None:
        try:
            lines = ws.subprotocol in LINES_SUBPROTOCOLS
            async for frame in ws:
                # One message a frame, or one a line under LINES_SUBPROTOCOLS;
                # each is handled as if it came alone, in order. A bad one ends
                # the reader as a bad frame always did, after the messages
                # before it and before those after it.
                for part in frame_lines(frame, lines):
                    msg = decode(HubToOperatorAdapter, part)
                    self._apply(msg)
                    if isinstance(msg, Result):
                        fut = self._results.pop(msg.req, None)
                        if fut is not None and not fut.done():
                            fut.set_result(msg)
                    self._events.put_nowait(msg)
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()
            for fut in self._results.values():
                if not fut.done():
                    fut.set_exception(OperatorError("connection to the hub closed", "closed"))
            self._events.put_nowait(None)

    def _apply(self, msg: HubToOperator) -> None:
        if isinstance(msg, Snapshot):
            self._sessions = {s.session_id: s for s in msg.sessions}
            self._activity.clear()
            self.pending = {a.action.action_id: a for a in msg.pending}
            self.actions = {a.action.action_id: a for a in msg.recent}
            self.actions.update(self.pending)
            self.policies = dict(msg.policies)
            self.frozen = set(msg.frozen)
            self.operators = msg.operators
            self._synced.set()
        elif isinstance(msg, SessionEvent):
            self._sessions[msg.session.session_id] = msg.session
            self._activity.pop(msg.session.session_id, None)  # older than this
        elif isinstance(msg, ActivityEvent):
            for entry in msg.sessions:
                self._activity[entry.session_id] = entry
        elif isinstance(msg, ActionEvent):
            info = msg.action
            aid = info.action.action_id
            self.actions.pop(aid, None)  # re-insert: the dict stays in order of last change
            self.actions[aid] = info
            while len(self.actions) > MAX_ACTIONS_KEPT:
                # Oldest first; pending actions stay reachable through self.pending.
                del self.actions[next(iter(self.actions))]
            if info.state == "pending":
                self.pending[aid] = info
            else:
                self.pending.pop(aid, None)
        elif isinstance(msg, PolicyEvent):
            self.policies[msg.env] = msg.info
        elif isinstance(msg, FreezeEvent):
            (self.frozen.add if msg.frozen else self.frozen.discard)(msg.env)
        elif isinstance(msg, OperatorsEvent):
            self.operators = msg.operators

    @property
    def sessions(self) -> dict[str, SessionInfo]:
        """Every session as the hub last reported it. Activity is folded in
        when this is read, not as it arrives: a console reads its own state,
        not this, and copying a frozen SessionInfo per session per activity
        message was a fifth of an automated operator's CPU at fleet load."""
        if self._activity:
            pending, self._activity = self._activity, {}
            self._sessions.update(apply_activity(self._sessions, pending.values()))
        return self._sessions

    async def events(self) -> AsyncIterator[HubToOperator]:
        """Every message from the hub, in order, until the connection closes."""
        while True:
            msg = await self._events.get()
            if msg is None:
                return
            yield msg

    # ------------------------------------------------------------ requests

    async def _request(
        self, build: type[Decide | SessionControl | Freeze | SetPolicy], **fields: object
    ) -> Result:
        if self._ws is None:
            raise OperatorError("not connected")
        req = f"r{next(self._ids)}"
        fut: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._results[req] = fut
        await self._ws.send(encode(build.model_validate({"req": req, **fields})))
        try:
            result = await asyncio.wait_for(fut, REQUEST_TIMEOUT_S)
        except TimeoutError:
            self._results.pop(req, None)
            raise OperatorError("hub did not answer in time", "timeout") from None
        if not result.ok:
            raise OperatorError(result.message, result.code)
        return result

    def resolve_action(self, typed: str) -> ActionInfo:
        """An action by id, or by a unique start or end of one (``towerctl
        pending`` shows ids' ends: see agent_shim.action_ids), pending first."""
        for pool in (self.pending, self.actions):
            if typed in pool:
                return pool[typed]
            hits = [a for aid, a in pool.items() if id_matches(aid, typed)]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                raise OperatorError(f"{typed!r} matches {len(hits)} actions: type more of it", "ambiguous")
        raise OperatorError(f"no pending action {typed!r}", "not_found")

    async def decide(
        self, action_id: str, approve: bool, reason: str = "", digest: str | None = None
    ) -> Result:
        info = self.resolve_action(action_id)
        return await self._request(
            Decide,
            action_id=info.action.action_id,
            digest=digest or info.digest,
            approve=approve,
            reason=reason,
        )

    async def control(self, session_id: str, op: str, reason: str = "") -> Result:
        return await self._request(SessionControl, session_id=session_id, op=op, reason=reason)

    async def freeze(self, env: str, frozen: bool, reason: str = "") -> Result:
        return await self._request(Freeze, env=env, frozen=frozen, reason=reason)

    async def set_policy(self, env: str, policy: EnvPolicy) -> Result:
        return await self._request(SetPolicy, env=env, policy=policy)
