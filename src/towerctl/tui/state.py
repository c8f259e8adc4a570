"""The console's copy of the hub's state, fed by hub events, read by every view.

Events arrive far faster than a terminal can repaint (a busy fleet sends
hundreds a second), so the app does not touch widgets per event: it applies a
batch of events here and then hands each view a :class:`Delta` naming what
changed, and views update only those rows and cells. The state is plain data
with no Textual in it, which is what lets the app run from a static
:class:`~agent_shim.protocol.Snapshot` (tests, screenshots) exactly as from a
live hub.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Final, Literal

from agent_shim.protocol import (
    ActionEvent,
    ActionInfo,
    ActivityEvent,
    Alert,
    FreezeEvent,
    HubToOperator,
    OperatorsEvent,
    OperatorWelcome,
    PolicyEvent,
    PolicyInfo,
    SessionEvent,
    SessionInfo,
    Snapshot,
    apply_activity,
)

#: Finished actions kept for the feeds and the audit view; pending ones are always kept.
MAX_ACTIONS: Final = 5000
FEED_LENGTH: Final = 300

LinkStatus = Literal["connecting", "connected", "reconnecting", "refused", "offline"]


FeedKind = Literal["action", "session", "alert"]


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """One line of a session's live feed; ``seq`` orders entries across sessions."""

    seq: int
    ts_ms: int
    session_id: str
    kind: FeedKind
    state: str
    action_id: str = ""
    note: str = ""


#: How a feed entry is stored: (seq, ts_ms, kind, state, action_id, note). A plain
#: tuple of ints and strings, because the garbage collector stops tracking those
#: after one pass, and 500 sessions keep up to 150,000 entries that a full
#: collection would otherwise walk every time (a pause the operator feels).
FeedRow = tuple[int, int, FeedKind, str, str, str]


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One row of the hub's audit log, as read from its database file."""

    seq: int
    ts_ms: int
    event: str
    actor: str
    session_id: str
    action_id: str
    detail: str


@dataclass(slots=True)
class Delta:
    """What one batch of events changed; views update only this."""

    full: bool = False
    sessions: set[str] = field(default_factory=set)
    removed_sessions: set[str] = field(default_factory=set)
    actions: set[str] = field(default_factory=set)
    removed_actions: set[str] = field(default_factory=set)
    pending_added: list[str] = field(default_factory=list)
    pending_removed: set[str] = field(default_factory=set)
    feed_sessions: set[str] = field(default_factory=set)
    policies: set[str] = field(default_factory=set)
    frozen: bool = False
    operators: bool = False
    link: bool = False
    identity: bool = False
    audit: bool = False
    alerts: list[Alert] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.full
            or self.sessions
            or self.removed_sessions
            or self.actions
            or self.removed_actions
            or self.pending_added
            or self.pending_removed
            or self.feed_sessions
            or self.policies
            or self.frozen
            or self.operators
            or self.link
            or self.identity
            or self.audit
            or self.alerts
        )


@dataclass(slots=True)
class Link:
    """The hub connection as the header shows it."""

    status: LinkStatus = "connecting"
    url: str = ""
    detail: str = ""


class TowerState:
    """Sessions, actions, policies and who is online, as last reported by the hub."""

    def __init__(self, now_ms: int = 0) -> None:
        self.name = ""
        self.role = ""
        self.sessions: dict[str, SessionInfo] = {}
        self.pending: dict[str, ActionInfo] = {}
        self.actions: OrderedDict[str, ActionInfo] = OrderedDict()
        self.policies: dict[str, PolicyInfo] = {}
        self.frozen: set[str] = set()
        self.operators: tuple[str, ...] = ()
        self.feeds: dict[str, deque[FeedRow]] = {}
        self.link = Link()
        #: hub clock minus local clock, so countdowns agree with the hub's expiry.
        self.hub_offset_ms = 0
        #: The audit chain's status line, when the console can know it (see AuditStatus).
        self.audit_status = ""
        #: The same in a few words, for the header.
        self.audit_short = ""
        self.audit_ok: bool | None = None
        #: How many records the last verification covered (``audit_ok`` speaks for those).
        self.audit_verified = 0
        #: How many records the log holds, as last counted (None: not counted yet).
        #: Counting is cheap and follows the log; verifying catches up behind it.
        self.audit_count: int | None = None
        self.audit_records: list[AuditRecord] = []
        #: When each action was first seen, in arrival order: with the hub's
        #: ``created_at`` this is the order actions are listed in (see action_rank).
        self.action_seen: dict[str, int] = {}
        self._seen_seq = itertools.count(1)
        self.generation = 0
        #: The generation of the last full delta (a view that missed it re-renders everything).
        self.full_generation = 0
        self._local_now = now_ms
        self._seq = itertools.count(1)
        self._delta = Delta()

    # ----------------------------------------------------------- reading

    def others_online(self) -> list[str]:
        """Operators online other than me (the hub lists each connection's operator)."""
        seen = [o for o in self.operators if o != self.name]
        return sorted(set(seen))

    def feed(self, session_id: str, after_seq: int = 0) -> list[FeedEntry]:
        """``session_id``'s feed entries newer than ``after_seq``, oldest first."""
        rows = self.feeds.get(session_id)
        if not rows:
            return []
        newer: list[FeedRow] = []
        for row in reversed(rows):  # new entries are at the end: stop at the first seen one
            if row[0] <= after_seq:
                break
            newer.append(row)
        return [
            FeedEntry(seq, ts, session_id, kind, state, aid, note)
            for seq, ts, kind, state, aid, note in reversed(newer)
        ]

    def action_rank(self, action_id: str) -> tuple[int, int]:
        """Where an action goes in a list in log order: proposal time, then arrival.

        ``actions`` itself is kept in last-update order (trimming drops what has
        been quiet longest), which is not an order to show: an action decided
        just now would jump below everything proposed after it.
        """
        info = self.actions.get(action_id)
        created = info.created_at if info is not None else 0
        return (created, self.action_seen.get(action_id, 0))

    def audit_unverified(self) -> int:
        """Records counted in the log that the last verification did not cover yet."""
        if self.audit_count is None or self.audit_ok is None:
            return 0
        return max(0, self.audit_count - self.audit_verified)

    def pending_oldest_first(self) -> list[ActionInfo]:
        return sorted(self.pending.values(), key=lambda a: (a.created_at, a.action.action_id))

    def session_pending(self, session_id: str) -> int:
        return sum(1 for a in self.pending.values() if a.session_id == session_id)

    def env_policy(self, env: str) -> PolicyInfo | None:
        return self.policies.get(env)

    def can_decide(self) -> bool:
        return self.role in ("approver", "admin")

    # ----------------------------------------------------------- writing

    def set_link(self, status: LinkStatus, url: str = "", detail: str = "") -> None:
        self.link = Link(status=status, url=url or self.link.url, detail=detail)
        self._delta.link = True

    def set_audit(
        self,
        ok: bool | None,
        line: str,
        short: str,
        records: list[AuditRecord] | None = None,
        verified: int = 0,
    ) -> None:
        """A verification's result: ``verified`` records checked, ``ok`` says how it went."""
        self.audit_ok, self.audit_status, self.audit_short = ok, line, short
        self.audit_verified = verified
        if self.audit_count is None or verified > self.audit_count:
            self.audit_count = verified  # the log has at least the records just walked
        if records is not None:
            self.audit_records = records
        self._delta.audit = True

    def set_audit_count(self, count: int | None) -> None:
        """The log's record count, read on its own (cheaply) between verifications."""
        if count is None or count == self.audit_count:
            return
        self.audit_count = count
        self._delta.audit = True

    def mark_full(self) -> None:
        """Make the next delta a full one (every view re-renders, e.g. for a new theme)."""
        self._delta.full = True

    def take_delta(self) -> Delta:
        """What changed since the last call; the caller pushes it to the views."""
        delta, self._delta = self._delta, Delta()
        if delta:
            self.generation += 1
            if delta.full:
                self.full_generation = self.generation
        return delta

    def apply(self, msg: HubToOperator, now_ms: int) -> None:
        """Fold one hub event into the state; ``now_ms`` is the local clock."""
        self._local_now = now_ms
        if isinstance(msg, Snapshot):
            self._apply_snapshot(msg, now_ms)
        elif isinstance(msg, SessionEvent):
            self._apply_session(msg.session)
        elif isinstance(msg, ActivityEvent):
            # Rate, current action, last seen: nothing the feed notes.
            updated = apply_activity(self.sessions, msg.sessions)
            self.sessions.update(updated)
            self._delta.sessions.update(updated)
        elif isinstance(msg, ActionEvent):
            self._apply_action(msg.action, announce=True)
        elif isinstance(msg, PolicyEvent):
            self.policies[msg.env] = msg.info
            self._delta.policies.add(msg.env)
        elif isinstance(msg, FreezeEvent):
            (self.frozen.add if msg.frozen else self.frozen.discard)(msg.env)
            self._delta.frozen = True
            self._delta.sessions.update(s.session_id for s in self.sessions.values() if s.env == msg.env)
        elif isinstance(msg, OperatorsEvent):
            self.operators = msg.operators
            self._delta.operators = True
        elif isinstance(msg, Alert):
            self._delta.alerts.append(msg)
            if msg.session_id is not None:
                self._feed(msg.session_id, "alert", msg.level, note=msg.message)
        elif isinstance(msg, OperatorWelcome):
            self.name, self.role = msg.operator, msg.role
            self._delta.identity = True

    def _apply_snapshot(self, snap: Snapshot, now_ms: int) -> None:
        old_sessions = set(self.sessions)
        self.hub_offset_ms = snap.hub_time - now_ms
        self.sessions = {s.session_id: s for s in snap.sessions}
        self.policies = dict(snap.policies)
        self.frozen = set(snap.frozen)
        self.operators = snap.operators
        self._delta.removed_actions |= set(self.actions)
        self.pending = {}
        self.actions = OrderedDict()
        self.action_seen = {}
        self.feeds = {}
        # A snapshot replaces everything: nothing in it is "new" enough to ring the bell.
        for info in sorted((*snap.recent, *snap.pending), key=lambda a: a.created_at):
            self._apply_action(info, announce=False)
        d = self._delta
        d.full = True
        d.removed_sessions |= old_sessions - set(self.sessions)
        d.sessions |= set(self.sessions)
        d.pending_added.clear()
        d.policies |= set(self.policies)
        d.frozen = d.operators = True

    def _apply_session(self, info: SessionInfo) -> None:
        old = self.sessions.get(info.session_id)
        self.sessions[info.session_id] = info
        self._delta.sessions.add(info.session_id)
        if old is None:
            self._feed(info.session_id, "session", "connected", note=f"{info.agent} on {info.host or '?'}")
        elif old.status != info.status:
            self._feed(info.session_id, "session", info.status)
        elif old.connected != info.connected:
            self._feed(info.session_id, "session", "connected" if info.connected else "disconnected")

    def _apply_action(self, info: ActionInfo, *, announce: bool) -> None:
        aid = info.action.action_id
        old = self.actions.get(aid)
        self.actions[aid] = info
        self.actions.move_to_end(aid)
        if old is None and aid not in self.action_seen:
            self.action_seen[aid] = next(self._seen_seq)
        d = self._delta
        d.actions.add(aid)
        if info.state == "pending":
            if aid not in self.pending:
                self.pending[aid] = info
                if announce:
                    d.pending_added.append(aid)
            else:
                self.pending[aid] = info
        elif aid in self.pending:
            del self.pending[aid]
            d.pending_removed.add(aid)
        if old is None or old.state != info.state:
            # Replayed history keeps its own time; live events are stamped on arrival.
            when = None if announce else info.created_at
            self._feed(info.session_id, "action", info.state, action_id=aid, ts_ms=when)
        self._trim()

    def _feed(
        self,
        session_id: str,
        kind: FeedKind,
        state: str,
        *,
        action_id: str = "",
        note: str = "",
        ts_ms: int | None = None,
    ) -> None:
        when = ts_ms if ts_ms is not None else self._local_now + self.hub_offset_ms
        feed = self.feeds.get(session_id)
        if feed is None:
            feed = self.feeds[session_id] = deque(maxlen=FEED_LENGTH)
        feed.append((next(self._seq), when, kind, state, action_id, note))
        self._delta.feed_sessions.add(session_id)

    def _trim(self) -> None:
        excess = len(self.actions) - MAX_ACTIONS
        if excess <= 0:
            return
        for aid in list(itertools.islice(self.actions, excess * 2)):
            if excess <= 0:
                break
            if aid not in self.pending:
                del self.actions[aid]
                self.action_seen.pop(aid, None)
                self._delta.actions.discard(aid)
                self._delta.removed_actions.add(aid)
                excess -= 1
