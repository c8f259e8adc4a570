"""The shim's async client: the enforcement point inside the agent.

The shim decides locally (classifier + the last policy the hub pushed) so
that it keeps enforcing while the hub is unreachable, and it fails closed:
an action that needs a human is denied when no decision can arrive before
its timeout. The connection is a background task that reconnects with
jittered backoff; everything the hub must hear about goes through a bounded
outbox so that reports written while disconnected are delivered, in order,
after reconnecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import socket
import ssl as ssl_module
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Final

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from agent_shim import ed25519
from agent_shim.approved import Approved
from agent_shim.errors import ActionDenied, SessionKilled
from agent_shim.gate import Gate, Ruling
from agent_shim.policy import EnvPolicy
from agent_shim.protocol import (
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    Ack,
    Action,
    AgentHello,
    Control,
    Decision,
    DecisionRefused,
    ErrorMsg,
    HubToAgentAdapter,
    PolicyUpdate,
    Propose,
    ProtocolError,
    Report,
    SelfPaused,
    Started,
    Welcome,
    decode,
    encode,
)

log = logging.getLogger("agent_shim")

SHIM_VERSION: Final = "0.1.0"
#: Extra time the shim waits past the approval timeout, so that the hub's own
#: expiry (which is audited) normally arrives first.
DECISION_GRACE_S: Final = 2.0


#: Close code of a shim that leaves its session to be resumed by a later process.
CLOSE_SESSION_CONTINUES: Final = 4000


def agent_url(url: str) -> str:
    """``ws://host:port`` → ``ws://host:port/agent`` (an explicit path is kept)."""
    base = url.rstrip("/")
    if base.endswith("/agent"):
        return base
    return base + "/agent"


def client_ssl_context(url: str, ssl: ssl_module.SSLContext | None) -> ssl_module.SSLContext | None:
    """The TLS context for ``url``: the one given, else for ``wss://`` one that
    trusts ``TOWER_CA`` (a PEM file) when set, else the system's CAs."""
    if ssl is not None or not url.startswith("wss://"):
        return ssl
    ca = os.environ.get("TOWER_CA")
    ctx = ssl_module.create_default_context(cafile=ca or None)
    return ctx


def new_action_id() -> str:
    return uuid.uuid4().hex


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Shim:
    """Async client. Use as ``async with Shim(...) as shim:``."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        agent: str,
        env: str,
        host: str | None = None,
        session_id: str | None = None,
        connect_timeout: float = 5.0,
        outbox_limit: int = 10_000,
        reconnect_max_s: float = 5.0,
        on_kill: Callable[[SessionKilled], None] | None = None,
        hub_key: str | bytes | None = None,
        ssl: ssl_module.SSLContext | None = None,
        end_session_on_close: bool = True,
    ) -> None:
        """``hub_key`` pins the hub's Ed25519 public key (raw 32 bytes, or hex /
        base64 of them; default ``TOWER_HUB_KEY``): approvals must be signed by
        it. Without a pin the key the hub announces on first connect is trusted
        (TOFU, logged as a warning). ``ssl`` is the TLS context for ``wss://``
        (default: the system CAs, or ``TOWER_CA``). ``end_session_on_close=False``
        is for a process that is one step of a longer session (a hook run once
        per tool call): closing then leaves the session to be resumed."""
        self.url = agent_url(url)
        self._ssl = client_ssl_context(self.url, ssl)
        if hub_key is None:
            hub_key = os.environ.get("TOWER_HUB_KEY") or None
        if isinstance(hub_key, str):
            hub_key = ed25519.parse_public_key(hub_key)
        elif hub_key is not None and len(hub_key) != 32:
            raise ValueError("hub_key must be 32 raw bytes")
        self._pinned_key: bytes | None = hub_key
        self._tofu_key: bytes | None = None
        self.agent = agent
        self.env = env
        self.host = host if host is not None else socket.gethostname()
        self.session_id = session_id or f"s-{uuid.uuid4().hex[:16]}"
        self._token = token
        self._connect_timeout = connect_timeout
        self._close_code = 1000 if end_session_on_close else CLOSE_SESSION_CONTINUES
        self._reconnect_max = reconnect_max_s
        self._on_kill = on_kill
        self.gate = Gate(env)
        self._outbox: deque[str] = deque()
        # Sent but not yet known to be processed: the hub handles one agent's
        # messages in order and answers every proposal, so an answer to
        # proposal P confirms everything sent up to P. The rest is re-sent
        # after a reconnect (the hub ignores duplicates), so a hub that dies
        # with frames in its socket buffer loses nothing.
        self._unconfirmed: deque[tuple[str | None, str]] = deque()
        self._unconfirmed_keys: set[str] = set()
        self._ever_connected = False
        self._outbox_limit = outbox_limit
        self._outbox_ready = asyncio.Event()
        self._connected = asyncio.Event()
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._killed: SessionKilled | None = None
        self._waiters: dict[str, tuple[Propose, asyncio.Future[Decision | Ack]]] = {}
        self._used_decisions: set[str] = set()
        #: Actions this shim denied at its own timeout. An approval that turns up
        #: for one later (it was lost in a partition) is refused and reported,
        #: so the hub's record does not say "approved" for something never run.
        self._gave_up: dict[str, None] = {}
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.last_error = ""

    # ------------------------------------------------------------------ state

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def paused(self) -> bool:
        return not self._resumed.is_set()

    @property
    def policy(self) -> EnvPolicy:
        return self.gate.policy

    @property
    def pending_reports(self) -> int:
        return len(self._outbox)

    async def wait_connected(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # -------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Shim:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Start connecting; wait up to ``connect_timeout`` for the first welcome.

        Not reaching the hub is not an error here: the shim then enforces the
        built-in policy for its environment and denies what needs a human.
        """
        self._task = asyncio.create_task(self._run(), name=f"shim-{self.session_id}")
        await self.wait_connected(self._connect_timeout)

    async def close(self, drain_timeout: float = 3.0) -> None:
        """Deliver queued reports (bounded wait), then disconnect.

        A shim that has reached the hub before and is reconnecting (the hub
        restarted) waits for the reconnect too, within the same bound, so that
        the report of what just ran is not dropped at exit.
        """
        if self._outbox and (self.connected or self._ever_connected):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained(), drain_timeout)
        self._closing = True
        ws = self._ws
        if ws is not None:
            # 1000 tells the hub the session is over, not lost.
            with contextlib.suppress(ConnectionClosed, OSError, TimeoutError):
                await asyncio.wait_for(ws.close(self._close_code, "shim closed"), 3.0)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for _, fut in self._waiters.values():
            if not fut.done():
                fut.cancel()

    async def _drained(self) -> None:
        while self._outbox:
            self._outbox_ready.set()
            await asyncio.sleep(0.005)

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
            async for raw in ws:
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
        while True:
            while self._outbox:
                data = self._outbox[0]
                await ws.send(data)
                self._outbox.popleft()
                self._sent(data)
            self._outbox_ready.clear()
            await self._outbox_ready.wait()

    def _sent(self, data: str) -> None:
        if data.startswith('{"type":"propose"'):
            key: str | None = str(json.loads(data)["action"]["action_id"])
        elif data.startswith(('{"type":"started"', '{"type":"report"')):
            key = None
        else:
            return  # self_paused / decision_refused: not worth a duplicate record
        self._unconfirmed.append((key, data))
        if key is not None:
            self._unconfirmed_keys.add(key)
        while len(self._unconfirmed) > self._outbox_limit:
            old_key, _ = self._unconfirmed.popleft()
            self._unconfirmed_keys.discard(old_key or "")

    def _confirm(self, action_id: str) -> None:
        """The hub answered the proposal of ``action_id``: it has processed
        everything sent before it."""
        if action_id not in self._unconfirmed_keys:
            return
        while self._unconfirmed:
            key, _ = self._unconfirmed.popleft()
            if key is not None:
                self._unconfirmed_keys.discard(key)
            if key == action_id:
                return

    def _enqueue(self, data: str) -> None:
        if len(data) > MAX_MESSAGE_BYTES // 4 and len(data.encode("utf-8")) > MAX_MESSAGE_BYTES:
            raise ActionDenied(
                f"refused: the message would exceed the hub's {MAX_MESSAGE_BYTES // 1024} KiB frame limit "
                "(shorten dry_run or reason)"
            )
        if len(self._outbox) >= self._outbox_limit:
            # Fail closed: we will not run what we cannot report.
            raise ActionDenied(
                f"report queue full ({self._outbox_limit}); the tower has been unreachable "
                "too long for more actions to run unrecorded"
            )
        self._outbox.append(data)
        self._outbox_ready.set()

    # --------------------------------------------------------------- dispatch

    @property
    def hub_key(self) -> bytes | None:
        """The key approvals are checked against: the pin, else the TOFU key."""
        return self._pinned_key if self._pinned_key is not None else self._tofu_key

    def _learn_key(self, announced: str) -> None:
        if not announced:
            if self.hub_key is None:
                log.warning("towerctl shim: the hub announced no signing key; approvals will be refused")
            return
        key = bytes.fromhex(announced)
        if self._pinned_key is not None:
            if key != self._pinned_key:
                self.last_error = (
                    f"hub announced key {ed25519.key_id(key)} but key {ed25519.key_id(self._pinned_key)} "
                    "is pinned; its approvals will be refused"
                )
                log.error("towerctl shim: %s", self.last_error)
            return
        if self._tofu_key is None:
            self._tofu_key = key
            log.warning(
                "towerctl shim: no hub key pinned (TOWER_HUB_KEY); trusting key %s announced by the hub "
                "on first use",
                ed25519.key_id(key),
            )
        elif key != self._tofu_key:
            self.last_error = (
                f"hub key changed from {ed25519.key_id(self._tofu_key)} to {ed25519.key_id(key)}; "
                "keeping the first one, approvals signed by the new key will be refused"
            )
            log.error("towerctl shim: %s", self.last_error)

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

    # ---------------------------------------------------------------- actions

    async def _wait_runnable(self) -> None:
        if self._killed is not None:
            raise SessionKilled(self._killed.reason, by=self._killed.by)
        await self._resumed.wait()
        if self._killed is not None:
            raise SessionKilled(self._killed.reason, by=self._killed.by)

    async def admit(self, action: Action) -> Approved:
        """Wait for the verdict on ``action``; return the ticket to run it or raise."""
        await self._wait_runnable()
        if self.gate.rate_exceeded(time.monotonic()):
            reason = f"more than {self.gate.policy.max_actions_per_minute} actions per minute"
            self._resumed.clear()
            self._enqueue(encode(SelfPaused(reason=reason)))
            log.warning("towerctl shim: paused: %s; waiting for an operator to resume", reason)
            await self._wait_runnable()
        ruling = self.gate.judge(action)
        propose = ruling.propose(_now_ms())
        if ruling.verdict == "deny":
            self._enqueue(encode(propose))
            raise ActionDenied(ruling.explanation, action_id=action.action_id, by="policy")
        if ruling.verdict == "allow":
            self._enqueue(encode(propose))
            return self._start(action, ruling.digest, None)
        decision = await self._await_decision(propose, ruling)
        return self._start(action, ruling.digest, decision)

    async def _await_decision(self, propose: Propose, ruling: Ruling) -> Decision:
        action = propose.action
        deadline = time.monotonic() + ruling.timeout_s + DECISION_GRACE_S
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Decision | Ack] = loop.create_future()
        self._waiters[action.action_id] = (propose, fut)
        try:
            if not self.connected:
                ok = await self.wait_connected(max(0.0, deadline - time.monotonic()))
                if not ok:
                    self._record_local_denial(propose, "tower unreachable")
                    raise ActionDenied(
                        f"needs approval but no decision could arrive before the "
                        f"{ruling.timeout_s}s timeout ({self.last_error or 'tower unreachable'})",
                        action_id=action.action_id,
                        by="shim",
                    )
                # _session() re-sent every waiting proposal on (re)connect.
            else:
                self._enqueue(encode(propose))
            try:
                answer = await asyncio.wait_for(asyncio.shield(fut), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                # The proposal or its answer may have been lost on a link that
                # looked alive: record the denial, which reaches the hub once back.
                self._record_local_denial(propose, "timed out")
                raise ActionDenied(
                    f"no decision within {ruling.timeout_s}s",
                    action_id=action.action_id,
                    by="shim",
                ) from None
        finally:
            self._waiters.pop(action.action_id, None)
        if isinstance(answer, Ack):
            raise ActionDenied(answer.reason or f"hub: {answer.state}", action_id=action.action_id, by="hub")
        if answer.verdict != "approved":
            raise ActionDenied(
                answer.reason or answer.verdict, action_id=action.action_id, by=answer.operator
            )
        return answer

    def _record_local_denial(self, propose: Propose, why: str) -> None:
        self._gave_up[propose.action.action_id] = None
        while len(self._gave_up) > self._outbox_limit:
            del self._gave_up[next(iter(self._gave_up))]
        denied = propose.model_copy(
            update={"verdict": "deny", "explanation": f"{why}: no decision before timeout"}
        )
        with contextlib.suppress(ActionDenied):
            self._enqueue(encode(denied))

    def _start(self, action: Action, digest: str, decision: Decision | None) -> Approved:
        # The binding check: what we are about to run must be what was judged and approved.
        actual = action.digest()
        if actual != digest:
            if decision is not None:
                raise self._refuse(
                    decision, action.action_id, "wrong_digest", "the action changed after it was judged"
                )
            raise ActionDenied(
                "refused: the action's digest differs from the judged one",
                action_id=action.action_id,
                by="shim",
            )
        if decision is not None:
            self._accept_decision(decision, action.action_id, actual)
        if self._killed is not None:
            raise SessionKilled(self._killed.reason, by=self._killed.by)
        if decision is not None:
            # An allowed action needs no `started`: proposing it with verdict
            # allow says it runs now, and the hub records it running at once.
            self._enqueue(encode(Started(action_id=action.action_id, digest=actual, started_at=_now_ms())))
        return Approved(action=action, digest=actual, decision=decision)

    def _refuse(self, decision: Decision, action_id: str, code: str, message: str) -> ActionDenied:
        """Report a refused decision to the hub (which audits it); return the error to raise."""
        with contextlib.suppress(ActionDenied, ValueError):
            self._enqueue(
                encode(
                    DecisionRefused(
                        action_id=action_id,
                        decision_id=decision.decision_id,
                        code=code,  # type: ignore[arg-type]
                        message=message[:4000],
                    )
                )
            )
        log.error("towerctl shim: refused decision %s for %s: %s", decision.decision_id, action_id, message)
        return ActionDenied(f"refused: {message}", action_id=action_id, by="shim")

    def _accept_decision(self, decision: Decision, action_id: str, digest: str) -> None:
        """An approval is used only if the pinned hub key signed it, for this
        session's action and digest, before its expiry, and only once."""
        if decision.digest != digest:
            raise self._refuse(
                decision, action_id, "wrong_digest", "the approval is for another digest than the action's"
            )
        key = self.hub_key
        if not decision.signature or key is None:
            raise self._refuse(
                decision, action_id, "unsigned", "the approval is not signed by a known hub key"
            )
        if not ed25519.verify(key, decision.signing_bytes(), bytes.fromhex(decision.signature)):
            raise self._refuse(decision, action_id, "bad_signature", "the approval's signature is invalid")
        if decision.session_id != self.session_id or decision.action_id != action_id:
            raise self._refuse(
                decision, action_id, "wrong_session", "the approval is for another session's action"
            )
        if decision.expires_at is None or decision.expires_at <= _now_ms():
            raise self._refuse(decision, action_id, "expired", "the approval has expired")
        if decision.decision_id in self._used_decisions:
            raise self._refuse(decision, action_id, "replayed", "the approval was already used")
        self._used_decisions.add(decision.decision_id)

    def report(self, approved: Approved, *, error: str = "") -> None:
        """Queue the outcome report for an action that was admitted."""
        msg: Report = approved.to_report(error=error, finished_at=_now_ms())
        with contextlib.suppress(ActionDenied):  # a full queue must not hide the real error
            self._enqueue(encode(msg))

    @contextlib.asynccontextmanager
    async def guard(self, action: Action) -> AsyncIterator[Approved]:
        """Wait for the verdict, yield the ticket, report the outcome on exit (errors too)."""
        approved = await self.admit(action)
        try:
            yield approved
        except BaseException as exc:
            approved.mark_failed()
            self.report(approved, error=f"{type(exc).__name__}: {exc}"[:4000])
            raise
        self.report(approved)

    # ----------------------------------------------------------------- helpers

    async def run_shell(
        self,
        command: str,
        *,
        target: str = "",
        reason: str = "",
        rollback: str = "",
        dry_run: str = "",
        cwd: str = "",
        capture: bool = True,
    ) -> Approved:
        """Propose, wait, and run a shell command; return the finished ticket.

        The command run is ``approved.action.command``, the exact text the
        digest covers, never the caller's variable.
        """
        action = Action(
            action_id=new_action_id(),
            kind="shell",
            command=command,
            target=target,
            cwd=cwd,
            reason=reason,
            rollback=rollback,
            dry_run=dry_run,
        )
        async with self.guard(action) as approved:
            approved.verify()
            pipe = asyncio.subprocess.PIPE if capture else None
            proc = await asyncio.create_subprocess_shell(
                approved.action.command,
                stdout=pipe,
                stderr=asyncio.subprocess.STDOUT if capture else None,
                cwd=approved.action.cwd or None,
            )
            out, _ = await proc.communicate()
            approved.set_result(proc.returncode if proc.returncode is not None else -1, out or b"")
        return approved
