"""The home view: every session, the pending queue, and the selected session's feed.

Session control lives here because this is where an operator sees an agent
misbehave: ``p`` pauses or resumes, ``k`` kills (after a confirmation), ``f``
freezes or unfreezes the session's whole environment (production asks first).
Keys act on the session under the cursor of the focused table, so ``p`` on a
pending approval pauses the agent that asked for it.
"""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable

from agent_shim.protocol import SessionInfo
from towerctl.tui.messages import ApprovalOpened, ControlOp, FreezeOp, SessionHighlighted, SessionOp
from towerctl.tui.render import PROD_MARKER, agent_text, is_production, set_border_title
from towerctl.tui.screens.base import TowerScreen
from towerctl.tui.screens.modals import ConfirmScreen
from towerctl.tui.state import Delta
from towerctl.tui.widgets.feed import SessionFeed
from towerctl.tui.widgets.fleet_table import FleetTable
from towerctl.tui.widgets.footer import TowerFooter
from towerctl.tui.widgets.pending_queue import PendingQueue

KILL_REASON = "killed from the operator console"


class FleetScreen(TowerScreen):
    """Sessions, pending approvals and the live feed of the highlighted session."""

    VIEW_NAME = "fleet"
    AUTO_FOCUS = "#fleet"
    DYNAMIC_ACTIONS = ("pause", "kill", "freeze")

    BINDINGS = [
        Binding("a", "focus_queue", "Queue", tooltip="Jump to the pending approvals, oldest first"),
        Binding("s", "focus_fleet", "Sessions", show=False, tooltip="Jump to the session table"),
        Binding("p", "pause", "Pause", tooltip="Pause or resume the selected session"),
        Binding("k", "kill", "Kill", tooltip="Kill the selected session (asks first)"),
        Binding("f", "freeze", "Freeze", tooltip="Freeze or unfreeze the selected session's environment"),
    ]

    def __init__(self) -> None:
        super().__init__()
        # Kept, not queried: sync runs on every batch of hub events.
        self._fleet = FleetTable(id="fleet")
        self._queue = PendingQueue(id="pending")
        self._feed = SessionFeed(id="feed")
        self._feed_shown = False

    def compose(self) -> ComposeResult:
        yield self.status_bar()
        with Vertical(id="fleet-body"):
            yield self._fleet
            yield self._queue
            yield self._feed
        yield TowerFooter()

    # ------------------------------------------------------------ rendering

    def sync(self, delta: Delta | None) -> None:
        state, palette, now = self.state, self.host.palette, self.host.hub_now_ms()
        fleet, queue, feed = self._fleet, self._queue, self._feed
        fleet.sync(state, delta, palette, now)
        queue.sync(state, delta, palette, now)
        set_border_title(fleet, f"Sessions ({len(state.sessions)})")
        count = len(state.pending)
        set_border_title(queue, f"Pending approvals ({count})" + (" · oldest first" if count > 1 else ""))
        queue.set_class(count > 0, "-waiting")
        selected = self._feed_session()
        if not self._feed_shown or feed.session_id != selected or (delta is not None and delta.full):
            self._show_feed(selected)
        elif delta is None or selected in delta.feed_sessions:
            # The feed only grows at the end: catching up is appending what is new.
            feed.append_new(state, palette, self.host.clock)

    def _show_feed(self, session_id: str | None) -> None:
        self._feed_shown = True
        feed = self._feed
        feed.show(session_id, self.state, self.host.palette, self.host.clock)
        session = self.state.sessions.get(session_id or "")
        if session is None:
            set_border_title(feed, "Feed")
            return
        # A Text, not a str: a str title is parsed as markup, and the agent chose its name.
        title = Text("Feed: ")
        title.append_text(agent_text(session.agent, limit=40))
        title.append(f" · {session.env}")
        if is_production(session.env):
            title.append(f" {PROD_MARKER}")
        set_border_title(feed, title)
        feed.set_class(is_production(session.env), "-prod")

    def tick(self) -> None:
        now = self.host.hub_now_ms()
        self._fleet.tick(self.state, now)
        self._queue.tick(self.state, self.host.palette, now)

    @on(SessionHighlighted)
    def _highlighted(self, event: SessionHighlighted) -> None:
        event.stop()
        self._follow_focus()

    @on(DataTable.RowSelected, "#fleet")
    def _session_selected(self, event: DataTable.RowSelected) -> None:
        """Enter on a session opens its oldest approval, if it has one."""
        event.stop()
        sid = str(event.row_key.value)
        waiting = [a for a in self.state.pending_oldest_first() if a.session_id == sid]
        if waiting:
            self.post_message(ApprovalOpened(waiting[0].action.action_id))
        else:
            self.notify("No approvals waiting for this session.", timeout=3)

    @on(DataTable.RowHighlighted, "#pending")
    def _pending_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._follow_focus()

    def on_descendant_focus(self) -> None:
        self._follow_focus()

    def _follow_focus(self) -> None:
        """The feed shows the session the keys would act on."""
        session = self._feed_session()
        if self._feed.session_id != session:
            self._show_feed(session)
        self.update_bindings()

    def _feed_session(self) -> str | None:
        session = self.selected_session()
        return None if session is None else session.session_id

    # ------------------------------------------------------------ selection

    def selected_session(self) -> SessionInfo | None:
        """The session the keys act on: the focused table's row decides."""
        queue = self._queue
        if self.focused is queue and queue.selected_key is not None:
            info = self.state.pending.get(queue.selected_key)
            if info is not None:
                return self.state.sessions.get(info.session_id)
        key = self._fleet.selected_key
        return None if key is None else self.state.sessions.get(key)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("pause", "kill", "freeze"):
            session = self.selected_session()
            if session is None or not self.state.can_decide():
                return None  # shown, but greyed out: nothing to act on, or a viewer
            if action != "freeze" and session.status in ("killed", "ended"):
                return None
        return True

    # ------------------------------------------------------------ actions

    # Focus moves at once (Widget.focus() would defer it to a later turn of the
    # event loop): "a" then "enter" typed fast, or arriving in one SSH packet,
    # must open the queue's approval, not act on the session table.
    def action_focus_queue(self) -> None:
        self.set_focus(self._queue)

    def action_focus_fleet(self) -> None:
        self.set_focus(self._fleet)

    def action_pause(self) -> None:
        session = self.selected_session()
        if session is None:
            return
        op: ControlOp = "resume" if session.status == "paused" else "pause"
        self.submit(SessionOp(origin=self, session_id=session.session_id, op=op))

    def action_kill(self) -> None:
        session = self.selected_session()
        if session is None:
            return
        body = Text()
        body.append("Session ")
        body.append(session.session_id, Style(bold=True))
        body.append(" (")
        body.append_text(agent_text(session.agent, limit=40))
        body.append(f" in {session.env}")
        body.append(f" {PROD_MARKER}" if is_production(session.env) else "")
        body.append(")\n\nIts pending and later actions fail with SessionKilled; ")
        body.append("this cannot be undone.")
        sid = session.session_id

        def done(yes: bool | None) -> None:
            if yes:
                self.submit(SessionOp(origin=self, session_id=sid, op="kill", reason=KILL_REASON))

        self.app.push_screen(ConfirmScreen("Kill this session?", body), done)

    def action_freeze(self) -> None:
        session = self.selected_session()
        if session is None:
            return
        env = session.env
        if env in self.state.frozen:
            self.submit(FreezeOp(origin=self, env=env, frozen=False))
            return
        if not is_production(env):
            self.submit(FreezeOp(origin=self, env=env, frozen=True))
            return
        running = sum(1 for s in self.state.sessions.values() if s.env == env and s.connected)
        body = Text(
            f"Every session in {env} ({running} connected) is paused, and new sessions start paused, "
            "until someone unfreezes it."
        )

        def done(yes: bool | None) -> None:
            if yes:
                self.submit(FreezeOp(origin=self, env=env, frozen=True))

        self.app.push_screen(ConfirmScreen(f"Freeze production environment {env}?", body), done)
