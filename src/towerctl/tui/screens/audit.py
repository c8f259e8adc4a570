"""The audit view: what was proposed, who decided, what ran; filterable.

Over the wire the hub streams actions, not audit records, so this view always
shows the action history this console has seen. When the console runs next
to the hub's database (``towerctl up``), it also reads the audit log itself,
read-only and in a thread, and shows the hash chain's verification result;
otherwise it says where to get one (``towerctl audit verify``) rather than
pretend to know.
"""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import ContentSwitcher, Input, Static

from towerctl.tui.render import set_border_title
from towerctl.tui.screens.base import TowerScreen
from towerctl.tui.state import Delta
from towerctl.tui.widgets.audit_tables import ActionsTable, RecordsTable, filter_words
from towerctl.tui.widgets.footer import TowerFooter


class AuditScreen(TowerScreen):
    """Actions seen (always) and the audit log records (when the database is local)."""

    VIEW_NAME = "audit"
    AUTO_FOCUS = "#audit-actions"
    DYNAMIC_ACTIONS = ("switch_source", "reverify")

    BINDINGS = [
        Binding("slash", "focus_filter", "Filter", tooltip="Filter by session, action, operator, agent"),
        Binding("s", "switch_source", "Actions/Log", tooltip="Switch between actions seen and the audit log"),
        Binding("r", "reverify", "Verify", tooltip="Re-read the audit log and verify its chain"),
        Binding("escape", "leave_filter", "Table", show=False, tooltip="Back from the filter to the table"),
    ]

    def compose(self) -> ComposeResult:
        yield self.status_bar()
        with Vertical(id="audit-body"):
            yield Static(id="audit-chain")
            yield Input(
                placeholder="filter: session, action, operator, agent, env, state (words narrow)",
                id="audit-filter",
            )
            with ContentSwitcher(initial="audit-actions", id="audit-switcher"):
                yield ActionsTable(id="audit-actions")
                yield RecordsTable(id="audit-records")
        yield TowerFooter()

    def on_mount(self) -> None:
        super().on_mount()
        if self.host.db_path is not None:
            self.host.request_audit_refresh()

    def sync(self, delta: Delta | None) -> None:
        palette, clock = self.host.palette, self.host.clock
        if delta is not None and delta.actions and self.is_current:
            self.host.request_audit_refresh()  # new actions mean new records (throttled)
        actions = self.query_one(ActionsTable)
        actions.sync(self.state, delta, palette, clock)
        shown = f"{actions.row_count}/{len(self.state.actions)}"
        set_border_title(actions, f"Actions seen by this console ({shown})")
        if delta is None or delta.full or delta.audit:
            records = self.query_one(RecordsTable)
            records.sync(self.state.audit_records, clock)
            shown = f"{records.row_count}/{len(self.state.audit_records)}"
            set_border_title(records, f"Audit log records ({shown})")
            self._show_chain()

    def _show_chain(self) -> None:
        palette = self.host.palette
        out = Text("audit chain: ", Style(bold=True))
        if self.host.db_path is None:
            out.append(
                "the records are in the hub's database; run `towerctl audit verify` on its host",
                Style(dim=True),
            )
        elif not self.state.audit_status:
            out.append("verifying…", Style(italic=True))
        else:
            colour = palette.success if self.state.audit_ok else palette.error
            out.append(self.state.audit_status, Style(color=colour, bold=True))
            behind = self.state.audit_unverified()
            if behind:
                out.append(
                    f" · {behind} newer record{'s' if behind != 1 else ''} being verified",
                    Style(color=palette.muted),
                )
        self.query_one("#audit-chain", Static).update(out)

    @on(Input.Changed, "#audit-filter")
    def _filter(self, event: Input.Changed) -> None:
        words = filter_words(event.value)
        palette, clock = self.host.palette, self.host.clock
        self.query_one(ActionsTable).refilter(words, self.state, palette, clock)
        self.query_one(RecordsTable).refilter(words, self.state.audit_records, clock)
        self.sync(Delta(audit=True))

    @on(Input.Submitted, "#audit-filter")
    def _filter_done(self, event: Input.Submitted) -> None:
        self.action_leave_filter()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("switch_source", "reverify") and self.host.db_path is None:
            return None
        return True

    def action_focus_filter(self) -> None:
        self.query_one("#audit-filter", Input).focus()

    def action_leave_filter(self) -> None:
        switcher = self.query_one(ContentSwitcher)
        target = switcher.current or "audit-actions"
        self.query_one(f"#{target}").focus()

    def action_switch_source(self) -> None:
        switcher = self.query_one(ContentSwitcher)
        switcher.current = "audit-records" if switcher.current == "audit-actions" else "audit-actions"
        self.action_leave_filter()

    def action_reverify(self) -> None:
        self.host.request_audit_refresh()
        self.notify("Reading and verifying the audit log…", timeout=2)
