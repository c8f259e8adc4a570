"""The two histories the audit view shows, filtered by the same words.

``ActionsTable`` is every action this console has seen (the hub's snapshot of
recent actions plus everything since): who decided, why, and how it ended.
``RecordsTable`` is the hub's audit log itself, read from the database file
when the console runs beside the hub (``towerctl up``); only that one has a
verifiable chain.

Both keep log order (actions by when they were proposed, records by sequence
number), newest at the bottom, and both are updated by key: a refresh or a
new filter adds, drops and rewrites rows, and never clears the table.
"""

from __future__ import annotations

from rich.style import Style
from rich.text import Text

from agent_shim.action_ids import short_id
from agent_shim.protocol import ActionInfo
from towerctl.tui.render import Clock, Palette, agent_text, env_text, outcome_text
from towerctl.tui.state import AuditRecord, Delta, TowerState
from towerctl.tui.widgets.keyed_table import Col, LogTable


def matches(words: list[str], *fields: str) -> bool:
    """Every word appears in some field (case-insensitive): ``alice prod`` narrows twice."""
    if not words:
        return True
    hay = " ".join(fields).lower()
    return all(w in hay for w in words)


def decider(info: ActionInfo) -> str:
    """Who decided: an operator, or policy when the shim refused it itself."""
    if info.decided_by:
        return info.decided_by
    return "policy" if info.state == "denied" and info.policy_verdict == "deny" else "—"


def filter_words(text: str) -> list[str]:
    return text.lower().split()


class ActionsTable(LogTable):
    """Actions by id, in the order they were proposed (``TowerState.action_rank``)."""

    COLUMNS = (
        Col("time", "time", 8),
        Col("state", "state", 9),
        Col("agent", "agent", 14, 8),
        Col("env", "env", 12, 6),
        Col("command", "command", 30, 16, fill=True),
        Col("by", "by", 10, 6),
        Col("reason", "reason", 22, 10),
        Col("outcome", "outcome", 10, 7),
        Col("action", "action", 10, 6),
        Col("session", "session", 12, 8),
        Col("risk", "risk", 11),
    )

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.words: list[str] = []

    def wanted(self, info: ActionInfo) -> bool:
        return matches(
            self.words,
            info.session_id,
            info.action.action_id,
            decider(info),
            info.agent,
            info.env,
            info.state,
        )

    def cells(self, info: ActionInfo, palette: Palette, clock: Clock) -> dict[str, Text]:
        return {
            "time": Text(clock.wall(info.created_at), Style(dim=True)),
            "session": Text(info.session_id, no_wrap=True, overflow="ellipsis"),
            "agent": agent_text(info.agent, limit=40),
            "env": env_text(info.env, False, palette),
            # An id's end: ids made in the same second share their start (agent_shim.action_ids).
            "action": Text(short_id(info.action.action_id), no_wrap=True, overflow="ellipsis"),
            "state": Text(info.state, palette.state(info.state)),
            "risk": Text(info.risk, palette.risk(info.risk)),
            "by": agent_text(decider(info), limit=40),
            "reason": agent_text(info.decision_reason or "", limit=60),
            "outcome": Text(outcome_text(info), no_wrap=True),
            "command": agent_text(info.action.command, limit=200),
        }

    def sync(self, state: TowerState, delta: Delta | None, palette: Palette, clock: Clock) -> None:
        tail, selected = self.at_end, self.selected_key
        self._sync(state, delta, palette, clock)
        self.settle(None if tail else selected)
        self.follow_tail(tail)

    def _sync(self, state: TowerState, delta: Delta | None, palette: Palette, clock: Clock) -> None:
        if delta is None or delta.full:
            ids: list[str] = list(state.actions)
            self.drop_missing(aid for aid in ids if self.wanted(state.actions[aid]))
        else:
            for aid in delta.removed_actions:
                if aid not in state.actions:
                    self.drop(aid)
            ids = [aid for aid in delta.actions if aid in state.actions]
        # New rows go in in log order, so that a batch appends at the bottom.
        ids.sort(key=state.action_rank)
        for aid in ids:
            info = state.actions[aid]
            if self.wanted(info):
                self.put(aid, state.action_rank(aid), self.cells(info, palette, clock))
            else:
                self.drop(aid)

    def refilter(self, words: list[str], state: TowerState, palette: Palette, clock: Clock) -> None:
        """A new filter: rows that no longer match go, rows that now match come back in place."""
        self.words = words
        self.sync(state, None, palette, clock)


class RecordsTable(LogTable):
    """Audit records by sequence number, as stored by the hub."""

    COLUMNS = (
        Col("seq", "seq", 6),
        Col("time", "time", 8),
        Col("event", "event", 18, 12),
        Col("actor", "actor", 12, 8),
        Col("session", "session", 14, 8),
        Col("action", "action", 14, 8),
        Col("detail", "detail", 40, 20, fill=True),
    )

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.words: list[str] = []

    def wanted(self, rec: AuditRecord) -> bool:
        return matches(self.words, rec.session_id, rec.action_id, rec.actor, rec.event)

    def sync(self, records: list[AuditRecord], clock: Clock) -> None:
        tail, selected = self.at_end, self.selected_key
        self._sync(records, clock)
        self.settle(None if tail else selected)
        self.follow_tail(tail)

    def _sync(self, records: list[AuditRecord], clock: Clock) -> None:
        shown = [rec for rec in records if self.wanted(rec)]
        self.drop_missing(str(rec.seq) for rec in shown)
        for rec in shown:
            self.put(
                str(rec.seq),
                (rec.seq, 0),
                {
                    "seq": Text(str(rec.seq), justify="right"),
                    "time": Text(clock.wall(rec.ts_ms), Style(dim=True)),
                    # A database may have been tampered with: every column is untrusted.
                    "event": agent_text(rec.event, limit=18),
                    "actor": agent_text(rec.actor, limit=12),
                    "session": agent_text(rec.session_id, limit=14),
                    "action": agent_text(short_id(rec.action_id or ""), limit=14),
                    "detail": agent_text(rec.detail, limit=300),
                },
            )

    def refilter(self, words: list[str], records: list[AuditRecord], clock: Clock) -> None:
        self.words = words
        self.sync(records, clock)
