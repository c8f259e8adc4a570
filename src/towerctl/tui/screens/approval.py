"""One pending action, everything known about it, and ``y`` / ``n``.

The decision is bound to the digest of the action as shown here, so an
approval can never apply to a command the operator did not see. When another
operator decides first, this view says who and what and disables ``y``/``n``
(the hub would refuse a second decision anyway; the point is that the operator
is told, not left wondering why nothing happened).

The app keeps one instance and shows each approval in it (``show_action``):
building a screen (widgets, styles, footer) costs more than a hundred
milliseconds, which an operator's ``y`` right after ``enter`` would wait for.
"""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Static

from agent_shim.protocol import ActionInfo
from towerctl.tui.messages import ActionDecided, Decision, Request
from towerctl.tui.render import agent_text, countdown, is_production, same_text
from towerctl.tui.screens.base import TowerScreen
from towerctl.tui.screens.modals import ReasonScreen
from towerctl.tui.state import Delta
from towerctl.tui.widgets.action_detail import ActionDetail, banner_view
from towerctl.tui.widgets.footer import TowerFooter


class ApprovalScreen(TowerScreen):
    """The approval view for ``action_id``."""

    VIEW_NAME = "approval"
    AUTO_FOCUS = "#approval-body"
    DYNAMIC_ACTIONS = ("approve", "deny")

    # y and n are priority bindings: the app matches them when the key arrives,
    # instead of after it has travelled to the focused widget and bubbled back
    # up (four queue hops, each a turn of a busy event loop). Nothing on this
    # screen takes typed text; the deny reason is typed on a screen of its own.
    BINDINGS = [
        Binding("y", "approve", "Approve", tooltip="Approve exactly this command", priority=True),
        Binding("n", "deny", "Deny…", tooltip="Deny, with a reason sent to the agent", priority=True),
        Binding("escape", "back", "Back", tooltip="Back to the fleet"),
    ]

    def __init__(self, action_id: str = "") -> None:
        super().__init__()
        self.action_id = action_id
        self._sending = False
        self._shown: ActionInfo | None = None
        self._error = ""
        self._statics: dict[str, Text] = {}

    def show_action(self, action_id: str) -> None:
        """Show ``action_id`` from now on, as a freshly opened view would."""
        self.action_id = action_id
        self._sending, self._error, self._shown = False, "", None
        self._synced_generation = -1  # re-rendered when shown (or now, if it is)
        if self.is_mounted:
            self.query_one("#approval-body", VerticalScroll).scroll_home(animate=False)
            if self.is_visible:
                self._resync()
                self.update_bindings()

    def compose(self) -> ComposeResult:
        yield self.status_bar()
        with Horizontal(id="approval-top"):
            yield Static(id="approval-banner")
            yield Static(id="approval-clock")
        with VerticalScroll(id="approval-body"):
            yield ActionDetail(id="approval-detail")
        yield TowerFooter()

    @property
    def info(self) -> ActionInfo | None:
        return self.state.actions.get(self.action_id)

    # ------------------------------------------------------------ rendering

    def sync(self, delta: Delta | None) -> None:
        info = self.info
        if info is None:
            self._update_static(
                "#approval-banner",
                Text(f"Action {self.action_id} is no longer known to this console.", Style(bold=True)),
            )
            return
        if info != self._shown or delta is None or delta.full or delta.operators or delta.frozen:
            self._shown = info
            palette = self.host.palette
            self.query_one(ActionDetail).show(info, self.state, palette, self.host.syntax_theme())
            self.set_class(is_production(info.env), "-prod")
        self._show_banner(info)
        self.tick()

    def _show_banner(self, info: ActionInfo) -> None:
        banner = banner_view(info, self.state.name, self.host.palette)
        if self._sending:
            banner.append("  sending…", Style(italic=True))
        elif self._error:
            banner.append("  ")
            banner.append_text(agent_text(self._error, limit=200, style=Style(color=self.host.palette.error)))
        elif info.state == "pending" and not self.state.can_decide():
            banner.append(f"  (role {self.state.role or '?'}: view only)", Style(dim=True))
        self._update_static("#approval-banner", banner)

    def tick(self) -> None:
        info = self.info
        if info is None or info.state != "pending":
            self._update_static("#approval-clock", Text())
            return
        left = Text("time left ", Style(dim=True))
        left.append_text(countdown(info.expires_at, self.host.hub_now_ms(), self.host.palette))
        self._update_static("#approval-clock", left)

    def _update_static(self, selector: str, text: Text) -> None:
        """Update a Static only when its text changes (each update costs a layout pass)."""
        if same_text(self._statics.get(selector, Text("\0")), text):
            return
        self._statics[selector] = text
        self.query_one(selector, Static).update(text)

    @on(ActionDecided)
    def _decided(self, event: ActionDecided) -> None:
        info = event.info
        if info.action.action_id != self.action_id:
            return
        self.sync(None)
        self.update_bindings()
        if info.decided_by and info.decided_by != self.state.name and not self._sending:
            self.notify(
                f"{safe_name(info.decided_by)} {info.state} this action first.",
                severity="warning",
                markup=False,
            )

    # ------------------------------------------------------------ actions

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("approve", "deny"):
            info = self.info
            if info is None or info.state != "pending" or self._sending or not self.state.can_decide():
                return None  # visible but disabled: the reason is in the banner
        return True

    def _send(self, approve: bool, reason: str) -> None:
        info = self.info
        if info is None or info.state != "pending":
            return
        self._sending, self._error = True, ""
        # Send first: the footer and banner can be redrawn while it travels.
        self.submit(
            Decision(
                origin=self,
                action_id=info.action.action_id,
                digest=info.digest,
                approve=approve,
                reason=reason,
            )
        )
        self.update_bindings()
        self._show_banner(info)

    def action_approve(self) -> None:
        self._send(True, "")

    def action_deny(self) -> None:
        info = self.info
        if info is None:
            return
        body = Text("Deny ")
        body.append_text(agent_text(info.action.command, limit=200, style=Style(bold=True)))
        body.append("\nThe reason is sent to the agent as written.")

        def done(reason: str | None) -> None:
            if reason is not None:
                self._send(False, reason)

        self.app.push_screen(ReasonScreen("Deny this action", body), done)

    def action_back(self) -> None:
        self.dismiss()

    def request_finished(self, request: Request, ok: bool, message: str) -> None:
        if not isinstance(request, Decision) or request.action_id != self.action_id:
            return
        self._sending = False
        if ok:
            verb = "Approved" if request.approve else "Denied"
            self.notify(f"{verb} {request.action_id}.", timeout=3, markup=False)
            self.dismiss()
            return
        self._error = message
        info = self.info
        if info is not None:
            self._show_banner(info)
        self.update_bindings()


def safe_name(name: str) -> str:
    return agent_text(name, limit=40).plain
