"""The fleet: one row per agent session, updated in place as the hub reports.

Production rows carry the ``▲PROD`` marker in the theme's error colour and
frozen environments a ``❄frozen`` marker, so that what runs where is visible
without reading. Rows keep the order they arrived in (a table that reorders
itself under the cursor makes the operator act on the wrong agent); the first
full load is sorted production first.

With hundreds of sessions most rows are off screen, and a busy fleet changes
some row every millisecond. So only rows in view are rewritten as events
arrive; a changed row out of view is marked stale and rewritten when it
scrolls into view (cursor, mouse, resize). Every row exists from the start
(the count, the scrollbar and the cursor's range are right); only its cell
contents wait until someone can see them. Many new rows at once (the first
snapshot of a big fleet) are added ``ROWS_PER_FRAME`` at a time.
"""

from __future__ import annotations

from typing import Final

from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable

from agent_shim.protocol import SessionInfo
from towerctl.tui.messages import SessionHighlighted
from towerctl.tui.render import Palette, agent_text, duration, env_text, is_production, status_text
from towerctl.tui.state import Delta, TowerState
from towerctl.tui.widgets.keyed_table import Col, KeyedTable

#: New rows added per frame: a snapshot of 500 sessions goes in over a few frames, keys in between.
ROWS_PER_FRAME: Final = 100


def _order(session: SessionInfo) -> tuple[int, str, str, int]:
    return (0 if is_production(session.env) else 1, session.env, session.agent, session.started_at)


class FleetTable(KeyedTable):
    """Sessions by id: agent, environment, host, status, pending, rate, uptime, current action."""

    BINDINGS = [Binding("enter", "select_cursor", "Review", tooltip="Review this session's oldest approval")]

    COLUMNS = (
        Col("agent", "agent", 16, 12),
        Col("env", "env", 15, 10),
        Col("host", "host", 12, 6),
        Col("status", "status", 12, 7),
        Col("pending", "pend", 4),
        Col("rate", "/min", 4),
        Col("uptime", "up", 7, 6),
        Col("current", "current action", 30, 8, fill=True),
    )

    def cells(self, s: SessionInfo, state: TowerState, palette: Palette, now_ms: int) -> dict[str, Text]:
        pending = state.session_pending(s.session_id)
        end = now_ms if s.connected else max(s.last_seen, s.started_at)
        agent_style = Style(color=palette.error, bold=True) if is_production(s.env) else ""
        return {
            "agent": agent_text(s.agent, limit=40, style=agent_style),
            "env": env_text(s.env, s.env in state.frozen, palette),
            "host": agent_text(s.host or "—", limit=40),
            "status": status_text(s, palette),
            "pending": Text(
                str(pending) if pending else "·",
                Style(color=palette.warning, bold=True) if pending else Style(dim=True),
                justify="right",
            ),
            "rate": Text(str(s.rate), justify="right"),
            "uptime": Text(duration(end - s.started_at), justify="right"),
            "current": agent_text(s.current_action or "", limit=200),
        }

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        #: Rows whose cells match the state; any other row is rewritten before it is shown.
        self._fresh: set[str] = set()
        #: Sessions without a row yet, in the order their rows go in.
        self._to_add: list[str] = []
        self._adding = False
        self._source: tuple[TowerState, Palette] | None = None
        self._now_ms = 0

    def sync(self, state: TowerState, delta: Delta | None, palette: Palette, now_ms: int) -> None:
        """Apply ``delta`` (or everything when None): add and drop rows, rewrite the visible ones."""
        self._source, self._now_ms = (state, palette), now_ms
        queued = set(self._to_add)
        if delta is None or delta.full:
            self.drop_missing(state.sessions)
            self._fresh.clear()
            new = [s for s in state.sessions.values() if not self.has_row(s.session_id)]
            self._to_add = []
        else:
            for sid in delta.removed_sessions:
                if sid not in state.sessions:
                    self.drop(sid)
                    self._fresh.discard(sid)
            touched = set(delta.sessions)
            # Actions change a row only through its pending count.
            for aid in delta.pending_removed:
                info = state.actions.get(aid)
                if info is not None:
                    touched.add(info.session_id)
            for aid in delta.actions:
                pending = state.pending.get(aid)
                if pending is not None:
                    touched.add(pending.session_id)
            self._fresh -= touched
            new = [
                state.sessions[sid]
                for sid in touched
                if sid in state.sessions and sid not in queued and not self.has_row(sid)
            ]
        new.sort(key=_order)
        self._to_add.extend(s.session_id for s in new)
        self._add_rows()
        self.refresh_visible()

    def _add_rows(self) -> None:
        """Add up to ROWS_PER_FRAME queued rows; the rest after the next refresh."""
        if self._source is None or not self._to_add:
            return
        state, palette = self._source
        batch, self._to_add = self._to_add[:ROWS_PER_FRAME], self._to_add[ROWS_PER_FRAME:]
        for sid in batch:
            session = state.sessions.get(sid)
            if session is not None and not self.has_row(sid):
                self.upsert(sid, self.cells(session, state, palette, self._now_ms))
                self._fresh.add(sid)
        if self._to_add and not self._adding:
            self._adding = True
            self.call_after_refresh(self._add_more_rows)

    def _add_more_rows(self) -> None:
        self._adding = False
        self._add_rows()

    def refresh_visible(self) -> None:
        """Rewrite the stale rows that are on screen now."""
        if self._source is None:
            return
        state, palette = self._source
        for sid in self.visible_keys():
            if sid in self._fresh:
                continue
            session = state.sessions.get(sid)
            if session is not None:
                self.upsert(sid, self.cells(session, state, palette, self._now_ms))
                self._fresh.add(sid)

    def tick(self, state: TowerState, now_ms: int) -> None:
        """Advance the uptime column: rows on screen now, the others when they come into view."""
        self._now_ms = now_ms
        self._fresh.clear()
        self.refresh_visible()

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if round(old_value) != round(new_value):
            self.refresh_visible()

    def on_resize(self) -> None:
        # KeyedTable.on_resize runs too (Textual calls the handler of each class).
        self.refresh_visible()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        key = event.row_key.value
        self.post_message(SessionHighlighted(None if key is None else str(key)))
