"""The shim's async client: the enforcement point inside the agent.

The shim decides locally (classifier + the last policy the hub pushed) so
that it keeps enforcing while the hub is unreachable, and it fails closed:
an action that needs a human is denied when no decision can arrive before
its timeout. The connection is a background task that reconnects with
jittered backoff; everything the hub must hear about goes through a bounded
outbox so that reports written while disconnected are delivered, in order,
after reconnecting.

:class:`Shim` keeps what an agent calls (admit, guard, report, run_shell) and
the lifecycle; it is layered over the outbox (``outbox``), decision acceptance
(``decision_check``) and the connection loop (``transport``), each in its own
module. ``DECISION_GRACE_S`` stays here, read at call time, so tests patch it
as ``agent_shim.client.DECISION_GRACE_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl as ssl_module
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Final

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from agent_shim import ed25519
from agent_shim.action_ids import new_action_id
from agent_shim.approved import Approved
from agent_shim.errors import ActionDenied, SessionKilled
from agent_shim.gate import Gate, Ruling
from agent_shim.policy import EnvPolicy
from agent_shim.protocol import (
    Ack,
    Action,
    Decision,
    Propose,
    Report,
    SelfPaused,
    encode,
)
from agent_shim.shim_base import _now_ms, log
from agent_shim.transport import SHIM_VERSION, ShimTransport

#: Names other modules import from here (some now defined next door).
__all__ = [
    "CLOSE_SESSION_CONTINUES",
    "DECISION_GRACE_S",
    "SHIM_VERSION",
    "Shim",
    "_now_ms",
    "agent_url",
    "client_ssl_context",
    "log",
    "new_action_id",
]

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


class Shim(ShimTransport):
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
