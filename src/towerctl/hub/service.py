"""What the hub does with each message, independent of the socket plumbing.

Every state change goes to the store first (with its audit record, in one
transaction) and only then to agents and operators: nothing is announced
that is not durable. Decisions are claimed synchronously in memory before the
first await, so of two operators deciding at once exactly one wins and the
other is told who did.

This module assembles :class:`HubService` from one mixin per concern, each in
its own module (agents, outcomes, decisions, session control), and keeps what
they all use: construction, start-up, the snapshot and the announcements to
operators and agents. Callers see one object, as before the split.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import TYPE_CHECKING, Literal

from websockets.asyncio.server import broadcast
from websockets.exceptions import ConnectionClosed

from agent_shim.operator_messages import MAX_ACTIVITY_ENTRIES
from agent_shim.policy import EnvPolicy
from agent_shim.protocol import (
    ActionEvent,
    ActivityEvent,
    Alert,
    SessionEvent,
    Snapshot,
    encode,
)
from towerctl.hub.agents import _STATE_FOR, AgentSide
from towerctl.hub.control import SessionControl
from towerctl.hub.decisions import EXPIRY_RETRY_MS, Decisions
from towerctl.hub.fanout import Fanout
from towerctl.hub.outcomes import ActionOutcomes
from towerctl.hub.registry import (
    LIVE_LIMIT,
    Announced,
    LiveSession,
    PendingAction,
    Registry,
    announced_id,
    as_info,
)
from towerctl.hub.service_base import Refused, _row_to_info, log, now_ms
from towerctl.store import Store

if TYPE_CHECKING:
    from towerctl.hub.metrics import HubMetrics

#: Names other modules import from here (some now defined next door).
__all__ = [
    "AGENT_WRITE_BUFFER_LIMIT",
    "DEFAULT_DECISION_TTL_S",
    "EXPIRY_RETRY_MS",
    "SESSION_COALESCE_S",
    "_STATE_FOR",
    "HubService",
    "Refused",
    "_row_to_info",
    "log",
    "now_ms",
]

#: How long a signed decision stays valid for the shim (from when it was made).
DEFAULT_DECISION_TTL_S = 120.0
#: Bytes waiting in an agent's socket buffer above which a reply waits for the
#: agent to read (see HubService.send_agent).
AGENT_WRITE_BUFFER_LIMIT = 64 * 1024
#: Operators see a busy session's activity, and routine action steps (an
#: allowed action running, an action finishing), at most this often and only
#: their latest state; whatever an operator may have to act on goes at once.
SESSION_COALESCE_S = 0.05


class HubService(AgentSide, ActionOutcomes, Decisions, SessionControl):
    """The hub's behaviour, one method per message; the server only routes."""

    def __init__(self, store: Store, *, decision_ttl_s: float = DEFAULT_DECISION_TTL_S) -> None:
        self.store = store
        self.reg = Registry()
        self.fanout = Fanout()
        self.decision_ttl_ms = int(decision_ttl_s * 1000)
        #: Told of each new proposal and decision (``/metrics``); set by the Hub.
        self.metrics: HubMetrics | None = None
        #: Frames and messages received from agents (``/metrics``): their
        #: ratio shows how much LINES_SUBPROTOCOL coalesces.
        self.agent_frames = 0
        self.agent_messages = 0
        self._dirty_sessions: set[str] = set()
        #: Routine action events not yet sent, by action id (latest state only).
        self._held_actions: dict[str, Announced] = {}
        self._flush_handle: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------ start-up

    async def load(self) -> None:
        """Rebuild the working set from the store (after a restart too)."""
        for env, (version, doc) in (await self.store.latest_policies()).items():
            self.reg.policies[env] = (version, EnvPolicy.model_validate_json(json.dumps(doc)))
        self.reg.frozen = set(await self.store.frozen_envs())
        for srow in await self.store.sessions(statuses={"active", "paused", "disconnected"}):
            sess = LiveSession(
                session_id=srow.session_id,
                agent=srow.agent,
                env=srow.env,
                host=srow.host,
                pid=srow.pid,
                status="disconnected" if srow.status == "active" else srow.status,  # type: ignore[arg-type]
                started_at=srow.started_at,
                last_seen=srow.last_seen,
            )
            if srow.status == "paused":
                sess.pause_reasons.add("operator")
            self.reg.sessions[sess.session_id] = sess
        # Actions that may still start or finish, for sessions that may come
        # back (a late report for any other is checked against the store).
        for arow in await self.store.actions(states={"allowed", "approved", "running"}, limit=20_000):
            owner = self.reg.sessions.get(arow.session_id)
            if owner is not None:
                self.reg.track(_row_to_info(arow, owner), arow.state)
        for arow in await self.store.actions(states={"pending"}, limit=LIVE_LIMIT):
            owner = self.reg.sessions.get(arow.session_id)
            info = _row_to_info(arow, owner)
            self.reg.track(info, "pending")
            self.reg.pending[arow.action_id] = PendingAction(info)
            if owner is not None:
                owner.pending.add(arow.action_id)
            self._schedule_expiry(arow.action_id, arow.expires_at or now_ms())

    def snapshot(self) -> Snapshot:
        now = time.monotonic()
        return Snapshot(
            sessions=tuple(s.info(s.rate.rate(now)) for s in self.reg.sessions.values()),
            pending=tuple(sorted((p.info for p in self.reg.pending.values()), key=lambda i: i.created_at)),
            recent=self.reg.recent_infos(200),
            policies=self.reg.policy_infos(),
            frozen=tuple(sorted(self.reg.frozen)),
            operators=self.fanout.names(),
            hub_time=now_ms(),
        )

    def snapshot_json(self) -> str:
        return encode(self.snapshot())

    # -------------------------------------------------------------- helpers

    def _announce_session(self, sess: LiveSession) -> None:
        self._dirty_sessions.discard(sess.session_id)
        if self.fanout.operators:
            self.fanout.send(_session_event(sess, time.monotonic()))

    def _touch_session(self, sess: LiveSession) -> None:
        """A session's activity changed (current action, rate): operators hear
        of it within SESSION_COALESCE_S, once, however many actions it ran,
        with every other session that acted meanwhile in one ``activity``
        message (a ``session`` message each for older consoles). Status
        changes go out at once through _announce_session."""
        if not self.fanout.operators:
            return
        self._dirty_sessions.add(sess.session_id)
        self._arm_flush()

    def _arm_flush(self) -> None:
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(SESSION_COALESCE_S, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        held, self._held_actions = self._held_actions, {}
        for entry in held.values():
            self.fanout.send(encode(ActionEvent(action=as_info(entry))))
        dirty, self._dirty_sessions = self._dirty_sessions, set()
        live = [s for sid in dirty if (s := self.reg.sessions.get(sid)) is not None]
        if live:
            now = time.monotonic()
            self.fanout.send_activity(lambda: _activity(live, now), lambda: _session_events(live, now))

    def _announce_action(self, entry: Announced, *, routine: bool = False) -> None:
        """``routine``: held for the next flush, replaced by a later state of the
        same action, so a command that runs and finishes within
        SESSION_COALESCE_S costs operators one event, not two (measured at
        1,000 actions/s: a third of the events, and of the console's CPU for
        them). An event that is not routine goes out at once, and drops a held
        one for its action: operators never get an older state after a newer."""
        self.reg.remember(entry)
        action_id = announced_id(entry)
        if routine and self.fanout.operators:
            self._held_actions[action_id] = entry
            self._arm_flush()
            return
        # Dropped even with nobody connected: an operator who connects before
        # the flush gets the newer state in its snapshot, never the older after.
        self._held_actions.pop(action_id, None)
        if self.fanout.operators:
            self.fanout.send(encode(ActionEvent(action=as_info(entry))))

    def alert(
        self, level: Literal["info", "warning", "critical"], message: str, session_id: str | None = None
    ) -> None:
        self.fanout.send(encode(Alert(level=level, message=message[:4000], session_id=session_id)))

    @staticmethod
    async def send_agent(sess: LiveSession, data: str) -> None:
        """A reply to one agent. While its socket's buffer is below
        AGENT_WRITE_BUFFER_LIMIT the frame is written at once with websockets'
        ``broadcast`` (no send context and no drain to await: about half the CPU
        per frame, ``bench/ws_send.py``); above it ``send`` waits for the agent to read,
        so one that never reads cannot grow the hub's memory. Both write in
        call order, and neither raises for a closed connection."""
        conn = sess.conn
        if conn is None:
            return
        if conn.transport.get_write_buffer_size() < AGENT_WRITE_BUFFER_LIMIT:
            broadcast((conn,), data)
            return
        with contextlib.suppress(ConnectionClosed):
            await conn.send(data)


def _activity(sessions: list[LiveSession], now: float) -> list[str]:
    """``activity`` messages for operators on ``towerctl.lines.v2``."""
    entries = [s.activity(s.rate.rate(now)) for s in sessions]
    return [
        encode(ActivityEvent(sessions=tuple(entries[i : i + MAX_ACTIVITY_ENTRIES])))
        for i in range(0, len(entries), MAX_ACTIVITY_ENTRIES)
    ]


def _session_event(sess: LiveSession, now: float) -> str:
    return encode(SessionEvent(session=sess.info(sess.rate.rate(now))))


def _session_events(sessions: list[LiveSession], now: float) -> list[str]:
    """A whole ``session`` message per session, for older consoles."""
    return [_session_event(s, now) for s in sessions]
