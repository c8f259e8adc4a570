"""The fleet: one row per agent session, updated in place as the hub reports.

Production rows carry the ``▲PROD`` marker in the theme's error colour and
frozen environments a ``❄frozen`` marker, so that what runs where is visible
without reading. Rows keep the order they arrived in (a table that reorders
itself under the cursor makes the operator act on the wrong agent); the first
full load is sorted production first.
"""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable

from agent_shim.protocol import SessionInfo
from towerctl.tui.messages import SessionHighlighted
from towerctl.tui.render import Palette, agent_text, duration, env_text, is_production, status_text
from towerctl.tui.state import Delta, TowerState
from towerctl.tui.widgets.keyed_table import Col, KeyedTable


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

    def sync(self, state: TowerState, delta: Delta | None, palette: Palette, now_ms: int) -> None:
        """Apply ``delta`` (or everything when None) to the rows."""
        if delta is None or delta.full:
            self.drop_missing(state.sessions)
            ids = [s.session_id for s in sorted(state.sessions.values(), key=_order)]
        else:
            for sid in delta.removed_sessions:
                if sid not in state.sessions:
                    self.drop(sid)
            touched = set(delta.sessions)
            for aid in (*delta.actions, *delta.pending_removed):
                info = state.actions.get(aid)
                if info is not None:
                    touched.add(info.session_id)
            ids = [sid for sid in touched if sid in state.sessions]
            ids.sort(key=lambda sid: _order(state.sessions[sid]))
        for sid in ids:
            self.upsert(sid, self.cells(state.sessions[sid], state, palette, now_ms))

    def tick(self, state: TowerState, now_ms: int) -> None:
        """Advance the uptime column; only cells whose text changes are touched."""
        for sid in self.row_keys():
            s = state.sessions.get(sid)
            if s is not None and s.connected:
                self.upsert(sid, {"uptime": Text(duration(now_ms - s.started_at), justify="right")})

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        key = event.row_key.value
        self.post_message(SessionHighlighted(None if key is None else str(key)))
