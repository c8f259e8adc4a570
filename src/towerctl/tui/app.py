"""TowerApp: the operator console, an operator client of the hub like any other.

One async worker owns the hub connection (reconnecting with backoff) and only
appends events to an :class:`Inbox`; a 10 Hz timer folds the inbox into the
state and pushes one :class:`StateUpdated` per batch to the views on screen,
which update their tables by key. So a burst of a thousand events costs one
small repaint, and the event loop stays free for keys: a decision is sent the
moment ``y`` is pressed, from a worker, without waiting for anything else.

No step may hold the loop for long, because a key waits for whatever runs
when it arrives: the inbox keeps one update per session (only the latest state
of a session matters), a flush applies at most ``APPLY_BUDGET_S`` of events and
leaves the rest for a follow-up that queues behind any keys pressed meanwhile,
views rewrite only the rows on screen, and garbage collections are kept short
(:class:`~towerctl.tui.quiet_gc.QuietGC`). ``bench/tui_bench.py`` measures it.

Requests to the hub go out through :class:`~towerctl.tui.hub_requests.RequestSender`
and the audit log is followed by :class:`~towerctl.tui.audit_watch.AuditWatch`;
this module wires them to the state and the views.

For tests and screenshots the app also runs from a fixed
:class:`~agent_shim.protocol.Snapshot` with a fixed clock and no hub.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Final

from textual import on, work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.notifications import SeverityLevel
from textual.screen import ModalScreen

from agent_shim.protocol import PROTOCOL_VERSION, HubToOperator, OperatorWelcome, Snapshot
from towerctl.tui.audit_watch import AuditWatch, writes_audit
from towerctl.tui.commands import TowerCommands
from towerctl.tui.hub_link import ClientFactory, HubLink, default_client_factory
from towerctl.tui.hub_requests import RequestSender
from towerctl.tui.inbox import Inbox
from towerctl.tui.messages import ActionDecided, ApprovalOpened, Request, StateUpdated
from towerctl.tui.quiet_gc import QuietGC
from towerctl.tui.render import Clock, Palette, SystemClock, agent_text, is_production
from towerctl.tui.screens.approval import ApprovalScreen
from towerctl.tui.screens.audit import AuditScreen
from towerctl.tui.screens.base import TowerScreen, visible_screens
from towerctl.tui.screens.fleet import FleetScreen
from towerctl.tui.screens.help import HelpScreen
from towerctl.tui.screens.policy import PolicyScreen
from towerctl.tui.state import Delta, LinkStatus, TowerState
from towerctl.tui.themes import SHIPPED_THEMES, ThemeError, choose_theme, load_themes

#: How often hub events reach the views. 10 Hz: a new approval shows within
#: 100 ms (faster than an operator notices), and each flush carries ~100 events
#: at 1,000 events/s, touching only rows on screen, i.e. a few milliseconds of
#: work. Faster costs a fixed overhead per flush (a message per view, status bar,
#: footer check) for nothing a person can see; slower makes batches, and the
#: frames that paint them, bigger.
FLUSH_INTERVAL_S: Final = 1 / 10
#: At most this much of a flush goes into folding events into the state; the
#: rest waits for a follow-up flush queued behind any key pressed meanwhile.
APPLY_BUDGET_S: Final = 0.008
_VIEWS = Binding.Group("Views", compact=True)
_ALERT_SEVERITY: Final[dict[str, SeverityLevel]] = {
    "info": "information",
    "warning": "warning",
    "critical": "error",
}


class TowerApp(App[int]):
    """The console. ``url``/``token`` name the hub; everything else is for embedding and tests."""

    CSS_PATH = "tower.tcss"
    TITLE = "towerctl"
    MODES: ClassVar = {
        "fleet": FleetScreen,
        "policy": PolicyScreen,
        "audit": AuditScreen,
        "help": HelpScreen,
    }
    DEFAULT_MODE = "fleet"
    COMMANDS = App.COMMANDS | {TowerCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("1", "switch_view('fleet')", "Fleet", group=_VIEWS, tooltip="Sessions, queue and feed"),
        Binding("2", "switch_view('policy')", "Policy", group=_VIEWS, tooltip="Policies per environment"),
        Binding("3", "switch_view('audit')", "Audit", group=_VIEWS, tooltip="Actions, decisions, audit log"),
        Binding("4", "switch_view('help')", "Help", show=False, tooltip="Every key"),
        Binding("question_mark", "switch_view('help')", "Help", tooltip="Every key"),
        # Not in the footer (80 columns are precious); in help and the palette.
        Binding("t", "cycle_theme", "Theme", show=False, tooltip="Next theme: tower-dark, -light, -contrast"),
        Binding("q", "quit", "Quit", tooltip="Leave the console (agents keep running)"),
    ]

    def __init__(
        self,
        url: str,
        token: str,
        *,
        theme: str | None = None,
        operator_client_factory: ClientFactory | None = None,
        initial_snapshot: Snapshot | None = None,
        operator: tuple[str, str] = ("", "viewer"),
        clock: Clock | None = None,
        db_path: Path | None = None,
        key_path: Path | None = None,
    ) -> None:
        """``initial_snapshot`` runs the app offline from that state, as ``operator`` (name, role)."""
        super().__init__()
        self.url = url
        self._token = token
        self.clock: Clock = clock or SystemClock()
        self.db_path = db_path
        self.key_path = key_path
        self.state = TowerState()
        self._inbox = Inbox()
        self._more_queued = False
        self._offline = initial_snapshot is not None
        self._link = HubLink(
            url,
            token,
            factory=operator_client_factory or default_client_factory,
            on_message=self.receive,
            on_status=self._link_status,
        )
        self._requests = RequestSender(self, self._link, self.state, offline=self._offline)
        self._audit = None if db_path is None else AuditWatch(self, self.state, db_path, key_path)
        themes, self.theme_errors = load_themes()
        for item in themes.values():
            self.register_theme(item)
        self._start_theme = choose_theme(theme, self.available_themes)
        # Set before the first screen exists: a theme change later re-parses all CSS.
        self.theme = self._start_theme
        self.palette = Palette(self.available_themes[self._start_theme].to_color_system().generate())
        self.state.link.url = url
        if initial_snapshot is not None:
            name, role = operator
            welcome = {"protocol": PROTOCOL_VERSION, "operator": name or "offline", "role": role}
            self.state.apply(OperatorWelcome.model_validate(welcome), self.clock.now_ms())
            self.state.apply(initial_snapshot, self.clock.now_ms())
            self.state.set_link("offline", detail="snapshot, not connected")
            self.state.take_delta()

    # ------------------------------------------------------------ lifecycle

    def on_mount(self) -> None:
        QuietGC.hold()
        self.theme_changed_signal.subscribe(self, self._theme_changed)
        for error in self.theme_errors:
            self.notify(error, title="theme file ignored", severity="warning", markup=False, timeout=10)
        self.set_interval(FLUSH_INTERVAL_S, self.flush, name="flush")
        if not self._offline:
            self._run_link()
        if self._audit is not None:
            self._audit.start()

    def on_unmount(self) -> None:
        QuietGC.release()

    @work(exclusive=True, group="hub", exit_on_error=False)
    async def _run_link(self) -> None:
        await self._link.run()

    def _link_status(self, status: LinkStatus, detail: str) -> None:
        was = self.state.link.status
        self.state.set_link(status, self.url, detail)
        if was == "connected" and status != "connected":
            self.notify("Lost the hub; reconnecting. What you see may be stale.", severity="error")
        elif status == "connected" and was == "reconnecting":
            self.notify("Reconnected to the hub.", timeout=3)
        elif status == "refused":
            self.notify(detail, title="the hub refused this token", severity="error", markup=False)

    def hub_now_ms(self) -> int:
        """Now on the hub's clock, which is what expiry times are measured in."""
        return self.clock.now_ms() + self.state.hub_offset_ms

    # ------------------------------------------------------------ state flow

    def receive(self, msg: HubToOperator) -> None:
        """Queue one hub event; it is applied with the rest of its batch at the next flush."""
        self._inbox.put(msg)

    @property
    def backlog(self) -> int:
        """Hub events received but not yet applied to the state."""
        return len(self._inbox)

    def flush(self) -> None:
        """Fold queued hub events into the state and push one update to the views on screen.

        At most ``APPLY_BUDGET_S`` of events are folded; what is left is folded
        by a follow-up flush posted to the app's queue, i.e. after keys that
        arrived in the meantime.
        """
        if self._inbox:
            now = self.clock.now_ms()
            for msg in self._inbox.drain(APPLY_BUDGET_S):
                self.state.apply(msg, now)
            if self._inbox and not self._more_queued:
                self._more_queued = True
                self.call_later(self._flush_more)
        delta = self.state.take_delta()
        if not delta:
            return
        if self.db_path is not None and writes_audit(delta):
            self.request_audit_count()
        generation = self.state.generation
        visible = visible_screens(self.screen_stack)
        for screen in self.screen_stack:
            # A view covered by another one catches up when it is shown again.
            if isinstance(screen, TowerScreen) and screen in visible:
                screen.post_message(StateUpdated(delta, generation))
            if isinstance(screen, ApprovalScreen) and screen.action_id in delta.pending_removed:
                info = self.state.actions.get(screen.action_id)
                if info is not None:
                    screen.post_message(ActionDecided(info))
        self._announce(delta)

    def _flush_more(self) -> None:
        self._more_queued = False
        self.flush()

    def _announce(self, delta: Delta) -> None:
        """Bell and toast for new approvals; toasts for hub alerts.

        No approval toast while an approval is open (or the question over it):
        on an 80-column SSH terminal a toast covers half the view (the policy's
        reason, the agent's reason, the rollback plan) that the operator is
        reading to decide. The bell still rings and the status bar's pending
        count still moves."""
        fresh = [self.state.pending[a] for a in delta.pending_added if a in self.state.pending]
        if fresh:
            self.bell()
        deciding = any(isinstance(screen, ApprovalScreen) for screen in self.screen_stack)
        if fresh and not deciding:  # also under the deny reason's question
            if len(fresh) == 1:
                info = fresh[0]
                where = f"▲PROD {info.env}" if is_production(info.env) else info.env
                text = f"{agent_text(info.agent, limit=30).plain} ({where}): "
                text += agent_text(info.action.command, limit=80).plain
                self.notify(text, title=f"approval needed · {info.risk}", severity="warning", markup=False)
            else:
                self.notify(f"{len(fresh)} new approvals waiting", title="approvals", severity="warning")
        for alert in delta.alerts:
            severity: SeverityLevel = _ALERT_SEVERITY[alert.level]
            message = agent_text(alert.message, limit=200).plain
            self.notify(message, title="hub alert", severity=severity, markup=False)

    def _theme_changed(self, _theme: object) -> None:
        self.palette = Palette(self.get_css_variables())
        # Colours live in the cells' Text objects, so every view re-renders once.
        self.state.mark_full()
        self.flush()

    def syntax_theme(self) -> str:
        return "ansi_dark" if self.current_theme.dark else "ansi_light"

    # ------------------------------------------------------------ requests

    def send_request(self, request: Request) -> None:
        """Send ``request`` to the hub from a worker; the view hears back through RequestFinished.

        Called directly by the view (no message hops), so a decision leaves on
        the next turn of the event loop after its key.
        """
        self._requests.send(request)

    @on(ApprovalOpened)
    def _open_approval(self, event: ApprovalOpened) -> None:
        event.stop()
        if self.current_mode != "fleet":
            self.switch_mode("fleet")
        # One approval view, built once and reused: building a screen takes
        # longer than an operator takes to press y (see ApprovalScreen).
        if not self.is_screen_installed("approval"):
            self.install_screen(ApprovalScreen(), name="approval")
        screen = self.get_screen("approval")
        assert isinstance(screen, ApprovalScreen)
        # Nothing may cover what is about to be approved (see _announce). The
        # toasts were news the operator has now acted on; every alert among
        # them is also in its session's feed.
        self.clear_notifications()
        screen.show_action(event.action_id)
        if screen not in self.screen_stack:
            self.push_screen(screen)

    # ------------------------------------------------------------ audit log

    def request_audit_refresh(self) -> None:
        """Re-read and re-verify the audit log soon, throttled (see :class:`AuditWatch`)."""
        if self._audit is not None:
            self._audit.request_refresh()

    def request_audit_count(self) -> None:
        """Re-count the audit log's records soon, throttled (see :class:`AuditWatch`)."""
        if self._audit is not None:
            self._audit.request_count()

    # ------------------------------------------------------------ actions

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Views and themes do not change under an open question (confirm, reason).
        return not (action in ("switch_view", "cycle_theme") and isinstance(self.screen, ModalScreen))

    def action_switch_view(self, view: str) -> None:
        if self.current_mode != view:
            self.switch_mode(view)

    def action_cycle_theme(self) -> None:
        names = [t for t in SHIPPED_THEMES if t in self.available_themes]
        if not names:
            return
        nxt = names[(names.index(self.theme) + 1) % len(names)] if self.theme in names else names[0]
        self.action_set_theme(nxt)

    def action_set_theme(self, name: str) -> None:
        self.theme = name
        self.notify(f"Theme: {name}", timeout=2)


def run_tui(
    url: str,
    token: str,
    theme: str | None = None,
    *,
    db_path: Path | None = None,
    key_path: Path | None = None,
) -> int:
    """Run the console until the operator quits; the exit status for the CLI."""
    try:
        app = TowerApp(url, token, theme=theme, db_path=db_path, key_path=key_path)
    except ThemeError as exc:
        raise SystemExit(f"towerctl: {exc}") from None
    result = app.run()
    return 0 if result is None else int(result)
