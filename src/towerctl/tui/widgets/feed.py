"""The selected session's live feed: proposals, verdicts, decisions, outcomes.

A log, not a table: an operator reads it top to bottom to understand what an
agent has been doing, and it only ever grows at the end, so a RichLog that
appends new lines is both the right shape and cheap. Switching sessions
rewrites it from the state's per-session history.
"""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual.widgets import RichLog

from towerctl.tui.render import Clock, Palette, agent_text, outcome_text
from towerctl.tui.state import FeedEntry, TowerState

_LABEL_WIDTH = 10


class SessionFeed(RichLog):
    """What one session did, newest at the bottom."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, max_lines=1000, wrap=False, markup=False, highlight=False, auto_scroll=True)
        self.session_id: str | None = None
        self._last_seq = 0

    def line(self, entry: FeedEntry, state: TowerState, palette: Palette, clock: Clock) -> Text:
        out = Text(no_wrap=True, overflow="ellipsis")
        out.append(clock.wall(entry.ts_ms), Style(dim=True))
        out.append(" ")
        if entry.kind == "session":
            out.append("session".ljust(_LABEL_WIDTH), Style(bold=True))
            out.append(entry.state, palette.status(entry.state))
            if entry.note:
                out.append(" ")
                out.append_text(agent_text(entry.note, limit=80))
            return out
        if entry.kind == "alert":
            out.append("alert".ljust(_LABEL_WIDTH), Style(color=palette.warning, bold=True))
            out.append_text(agent_text(entry.note, limit=200))
            return out
        info = state.actions.get(entry.action_id)
        out.append(entry.state.ljust(_LABEL_WIDTH), palette.state(entry.state))
        if info is None:
            out.append(entry.action_id, Style(dim=True))
            return out
        if entry.state == "pending" or (entry.state in ("allowed", "denied") and not info.decided_by):
            out.append(f"{info.risk} ", palette.risk(info.risk))
        out.append_text(agent_text(info.action.command, limit=120))
        if entry.state in ("approved", "denied", "expired", "cancelled") and info.decided_by:
            out.append(" — by ")
            out.append_text(agent_text(info.decided_by, limit=24, style=Style(bold=True)))
            if info.decision_reason:
                out.append(": ")
                out.append_text(agent_text(info.decision_reason, limit=80))
        elif entry.state in ("pending", "denied") and info.rule is not None and info.rule.reason:
            out.append(" — ")
            out.append_text(agent_text(info.rule.reason, limit=80, style=Style(italic=True)))
        elif entry.state in ("succeeded", "failed"):
            summary = outcome_text(info)
            if summary:
                out.append(f" — {summary}", Style(dim=True))
        return out

    def show(self, session_id: str | None, state: TowerState, palette: Palette, clock: Clock) -> None:
        """Rewrite the log for ``session_id`` (a different session, or a new theme)."""
        self.session_id = session_id
        self.clear()
        self._last_seq = 0
        self.append_new(state, palette, clock)

    def append_new(self, state: TowerState, palette: Palette, clock: Clock) -> None:
        """Write the entries that arrived since the last call."""
        if self.session_id is None:
            return
        for entry in state.feed(self.session_id, after_seq=self._last_seq):
            self.write(self.line(entry, state, palette, clock))
            self._last_seq = entry.seq
