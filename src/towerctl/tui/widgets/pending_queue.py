"""Actions waiting for a human, oldest first, each counting down to its expiry.

Oldest first because the oldest request expires first and has kept an agent
(and maybe the person behind it) waiting longest. A row leaves the queue the
moment any operator decides, so two operators never work the same item for
long.
"""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable

from agent_shim.protocol import ActionInfo
from towerctl.tui.messages import ApprovalOpened
from towerctl.tui.render import PROD_MARKER, Palette, agent_text, countdown, is_production
from towerctl.tui.state import Delta, TowerState
from towerctl.tui.widgets.keyed_table import Col, KeyedTable


class PendingQueue(KeyedTable):
    """Pending approvals by action id; enter opens the approval view."""

    BINDINGS = [Binding("enter", "select_cursor", "Review", tooltip="Open the approval view")]

    COLUMNS = (
        Col("left", "left", 7, 5),
        Col("env", "env", 12, 10),
        Col("risk", "risk", 11, 6),
        Col("agent", "agent", 16, 8),
        Col("command", "command", 40, 26, fill=True),
    )

    def cells(self, info: ActionInfo, palette: Palette, now_ms: int) -> dict[str, Text]:
        prod = is_production(info.env)
        env = Text(no_wrap=True, overflow="ellipsis")
        if prod:
            env.append(f"{PROD_MARKER} ", Style(color=palette.error, bold=True))
        env.append(info.env, Style(color=palette.error, bold=True) if prod else "")
        return {
            "left": countdown(info.expires_at, now_ms, palette),
            "env": env,
            "agent": agent_text(info.agent, limit=40),
            "risk": Text(info.risk, palette.risk(info.risk), no_wrap=True),
            "command": agent_text(info.action.command, limit=200),
        }

    def sync(self, state: TowerState, delta: Delta | None, palette: Palette, now_ms: int) -> None:
        """Rewrite the rows ``delta`` names (every row when None), oldest first."""
        full = delta is None or delta.full
        if full:
            self.drop_missing(state.pending)
            touched = set(state.pending)
        else:
            assert delta is not None
            for aid in delta.pending_removed:
                if aid not in state.pending:
                    self.drop(aid)
            touched = {aid for aid in delta.actions if aid in state.pending}
        if not touched:
            return
        ordered = state.pending_oldest_first()
        if full or any(not self.has_row(aid) for aid in touched):
            touched |= self._keep_order(ordered)
        for info in ordered:
            if info.action.action_id in touched:
                self.upsert(info.action.action_id, self.cells(info, palette, now_ms))

    def _keep_order(self, ordered: list[ActionInfo]) -> set[str]:
        """Make room for new rows in creation order; the rows taken out, to be re-added.

        New rows are appended, which is already oldest-first when the hub reports
        in order; only when a new or misplaced row belongs before a shown one are
        the shown rows from that point on taken out (and re-added in order).
        """
        want = [a.action.action_id for a in ordered]
        have = self.row_keys()
        for i, (a, b) in enumerate(zip(want, have, strict=False)):
            if a != b:
                for aid in have[i:]:
                    self.remove_row(aid)
                return set(have[i:])
        return set()

    def tick(self, state: TowerState, palette: Palette, now_ms: int) -> None:
        for aid in self.row_keys():
            info = state.pending.get(aid)
            if info is not None:
                self.upsert(aid, {"left": countdown(info.expires_at, now_ms, palette)})

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.post_message(ApprovalOpened(str(event.row_key.value)))
