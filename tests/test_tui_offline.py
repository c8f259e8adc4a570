"""The console driven from a fixed snapshot (no hub): display, keys, updates by key.

These cover what does not need a live hub: agent text shown literally, tables
updated in place, keys enabled only when they can work, the policy editor's
checks, the palette and themes. The hub-backed flows are in test_tui_live.py.
"""

from __future__ import annotations

import pytest
from rich.text import Text
from textual.geometry import Region
from textual.widget import Widget
from textual.widgets import DataTable, Input, Static, TextArea

from agent_shim.protocol import ActionEvent, SessionEvent
from towerctl.tui.app import TowerApp
from towerctl.tui.commands import TowerCommands
from towerctl.tui.render import FixedClock
from towerctl.tui.sample import SAMPLE_NOW, sample_action, sample_snapshot
from towerctl.tui.screens.approval import ApprovalScreen
from towerctl.tui.screens.modals import ReasonScreen
from towerctl.tui.screens.policy_edit import PolicyEditScreen
from towerctl.tui.widgets.action_detail import ActionDetail
from towerctl.tui.widgets.audit_tables import ActionsTable
from towerctl.tui.widgets.feed import SessionFeed
from towerctl.tui.widgets.fleet_table import FleetTable
from towerctl.tui.widgets.pending_queue import PendingQueue

EVIL_COMMAND = "echo [bold red]x[/] \x1b[2J\x1b]0;pwned\x07 done"
EVIL_AGENT = "[blink]evil[/blink]"


def offline_app(role: str = "admin", **snapshot_kw: object) -> TowerApp:
    return TowerApp(
        "ws://127.0.0.1:7340",
        "",
        initial_snapshot=sample_snapshot(**snapshot_kw),  # type: ignore[arg-type]
        operator=("alice", role),
        clock=FixedClock(SAMPLE_NOW),
    )


def shown_text(widget: Widget) -> str:
    """The characters a widget puts on the terminal, line by line."""
    lines = widget.render_lines(Region(0, 0, widget.size.width, widget.size.height))
    return "\n".join(strip.text for strip in lines)


def evil_pending() -> tuple[object, ...]:
    return (
        sample_action(
            "a-666",
            "s-dev-1",
            EVIL_AGENT,
            "dev",
            "shell",
            EVIL_COMMAND,
            "destructive",
            "pending",
            age_s=1,
            expires_s=100,
            reason="[link=http://x]click[/link] \x1b[31mred",
        ),
    )


async def test_markup_and_escapes_in_agent_text_are_shown_literally() -> None:
    app = offline_app(extra_pending=evil_pending())
    async with app.run_test(size=(160, 40)) as pilot:
        queue = app.screen.query_one(PendingQueue)
        cell = queue.get_cell("a-666", "command")
        assert isinstance(cell, Text)
        assert cell.plain == "echo [bold red]x[/] \\x1b[2J\\x1b]0;pwned\\x07 done"
        assert not cell.spans and cell.style == ""
        agent = queue.get_cell("a-666", "agent")
        assert agent.plain.startswith("[blink]evil")

        # The approval view: highlighted, but the text is the text.
        queue.focus()
        queue.move_cursor(row=queue.get_row_index("a-666"))
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, ApprovalScreen) and app.screen.action_id == "a-666"
        shown = shown_text(app.screen.query_one(ActionDetail))
        shown += shown_text(app.screen.query_one("#approval-banner"))
        assert "echo [bold red]x[/] \\x1b[2J\\x1b]0;pwned\\x07 done" in shown
        assert "[link=http://x]click[/link] \\x1b[31mred" in shown
        assert "[blink]evil[/blink]" in shown
        assert "\x1b" not in shown and "\x07" not in shown


async def test_hub_events_update_rows_in_place_without_clearing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kw: object) -> None:
        raise AssertionError("a live table was cleared")

    app = offline_app()
    async with app.run_test(size=(120, 40)) as pilot:
        fleet = app.screen.query_one(FleetTable)
        monkeypatch.setattr(FleetTable, "clear", refuse)
        monkeypatch.setattr(PendingQueue, "clear", refuse)
        fleet.focus()
        fleet.move_cursor(row=fleet.get_row_index("s-dev-1"))
        before = fleet.row_keys()
        old = app.state.sessions["s-dev-1"]
        # A burst of events for one session, coalesced into one batch.
        for rate in range(1, 200):
            app.receive(SessionEvent(session=old.model_copy(update={"rate": rate, "current_action": "make"})))
        new_pending = sample_action(
            "a-777", "s-dev-1", "claude-code", "dev", "shell", "rm -rf node_modules", "destructive",
            "pending", age_s=0, expires_s=600,
        )
        app.receive(ActionEvent(action=new_pending))
        app.flush()
        await pilot.pause()
        assert fleet.row_keys() == before  # same rows, same order
        assert fleet.selected_key == "s-dev-1"  # the cursor stayed on the operator's row
        assert fleet.get_cell("s-dev-1", "rate").plain == "199"
        assert fleet.get_cell("s-dev-1", "current").plain == "make"
        assert fleet.get_cell("s-dev-1", "pending").plain == "1"
        queue = app.screen.query_one(PendingQueue)
        assert queue.row_keys() == ["a-101", "a-102", "a-777"]  # oldest first

        # The approval is decided elsewhere: the row leaves the queue by key.
        decided = new_pending.model_copy(update={"state": "denied", "decided_by": "bob"})
        app.receive(ActionEvent(action=decided))
        app.flush()
        await pilot.pause()
        assert queue.row_keys() == ["a-101", "a-102"]
        feed = app.screen.query_one(SessionFeed)
        assert feed.session_id == "s-dev-1"
        assert any("rm -rf node_modules — by bob" in line.text for line in feed.lines)


async def test_a_new_approval_rings_the_bell_and_notifies(monkeypatch: pytest.MonkeyPatch) -> None:
    app = offline_app()
    rings: list[int] = []
    monkeypatch.setattr(app, "bell", lambda: rings.append(1))
    async with app.run_test(size=(120, 40)) as pilot:
        assert rings == []  # what the snapshot already held is not news
        info = sample_action("a-555", "s-prod-1", "deploy-bot", "prod", "shell", "rm -rf /srv/cache",
                             "destructive", "pending", age_s=0, expires_s=300)
        app.receive(ActionEvent(action=info))
        app.flush()
        await pilot.pause()
        assert rings == [1]
        messages = [n.message for n in app._notifications]
        assert any("rm -rf /srv/cache" in m and "▲PROD" in m for m in messages)


async def test_nothing_covers_an_open_approval(monkeypatch: pytest.MonkeyPatch) -> None:
    """At 80x24 (an SSH terminal) a toast hides half the approval view: opening
    one clears the toasts, and approvals arriving meanwhile ring without one.
    (run_test draws no toasts, so the app's notifications are what is checked.)"""
    app = offline_app()
    rings: list[int] = []
    monkeypatch.setattr(app, "bell", lambda: rings.append(1))
    async with app.run_test(size=(80, 24)) as pilot:
        news = sample_action("a-555", "s-prod-1", "deploy-bot", "prod", "shell", "rm -rf /srv/cache",
                             "destructive", "pending", age_s=0, expires_s=300)
        app.receive(ActionEvent(action=news))
        app.flush()
        await pilot.pause()
        assert rings == [1] and len(app._notifications) == 1
        await pilot.press("a", "enter")
        await pilot.pause()
        assert isinstance(app.screen, ApprovalScreen)
        assert not app._notifications
        later = sample_action("a-556", "s-prod-1", "deploy-bot", "prod", "shell", "rm -rf /srv/logs",
                              "destructive", "pending", age_s=0, expires_s=300)
        app.receive(ActionEvent(action=later))
        app.flush()
        await pilot.pause()
        assert rings == [1, 1]
        assert not app._notifications
        await pilot.press("n")  # the deny reason's question, over the approval
        await pilot.pause()
        assert isinstance(app.screen, ReasonScreen)
        during = sample_action("a-558", "s-prod-1", "deploy-bot", "prod", "shell", "rm -rf /srv/old",
                               "destructive", "pending", age_s=0, expires_s=300)
        app.receive(ActionEvent(action=during))
        app.flush()
        await pilot.pause()
        assert rings == [1, 1, 1] and not app._notifications
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, ApprovalScreen)
        assert "5 pending" in shown_text(app.screen.query_one("#status"))
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, ApprovalScreen)
        again = sample_action("a-557", "s-prod-1", "deploy-bot", "prod", "shell", "rm -rf /srv/tmp",
                              "destructive", "pending", age_s=0, expires_s=300)
        app.receive(ActionEvent(action=again))
        app.flush()
        await pilot.pause()
        assert rings == [1, 1, 1, 1]
        # Back on the fleet: toasts again.
        assert any("rm -rf /srv/tmp" in n.message for n in app._notifications)


async def test_viewer_sees_approval_keys_disabled() -> None:
    app = offline_app(role="viewer")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("a", "enter")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, ApprovalScreen)
        assert screen.check_action("approve", ()) is None
        assert screen.check_action("deny", ()) is None
        banner = screen.query_one("#approval-banner", Static).content
        assert "view only" in str(banner)
        await pilot.press("y")  # nothing happens, nothing is sent
        assert isinstance(app.screen, ApprovalScreen)
        await pilot.press("escape")
        assert app.screen.check_action("pause", ()) is None


async def test_offline_requests_fail_visibly_and_the_view_stays() -> None:
    app = offline_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("a", "enter", "y")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, ApprovalScreen)
        await pilot.pause()
        banner = str(screen.query_one("#approval-banner", Static).content)
        assert "offline" in banner
        assert screen.check_action("approve", ()) is True  # can try again


async def test_policy_editor_shows_parse_errors_inline() -> None:
    app = offline_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2")
        await pilot.pause()
        await pilot.press("e")
        await pilot.pause()
        editor_screen = app.screen
        assert isinstance(editor_screen, PolicyEditScreen) and editor_screen.env == "prod"
        editor = editor_screen.query_one(TextArea)
        assert editor.text.startswith("[environments.prod]")
        editor.text = editor.text.replace('destructive = "ask"', 'destructive = "maybe"')
        await pilot.press("ctrl+s")
        await pilot.pause()
        result = str(editor_screen.query_one("#editor-result", Static).content)
        assert "environments.prod, key 'destructive' (line 4)" in result
        assert '"allow", "ask", "deny"' in result
        assert editor.cursor_location == (3, 0)
        await pilot.press("escape")
        assert not isinstance(app.screen, PolicyEditScreen)


async def test_only_admins_can_edit_policy() -> None:
    app = offline_app(role="approver")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2")
        await pilot.pause()
        assert app.screen.check_action("edit", ()) is None
        await pilot.press("e")
        assert not isinstance(app.screen, PolicyEditScreen)


async def test_audit_filter_narrows_by_operator_and_session() -> None:
    app = offline_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("3")
        await pilot.pause()
        table = app.screen.query_one("#audit-actions", DataTable)
        assert table.row_count == 6
        await pilot.press("slash", *"bob")
        await pilot.pause()
        assert app.screen.query_one(Input).value == "bob"
        assert table.row_keys() == ["a-093"]  # type: ignore[attr-defined]
        app.screen.query_one(Input).value = "s-prod-1"
        await pilot.pause()
        assert set(table.row_keys()) == {"a-090", "a-091", "a-101"}  # type: ignore[attr-defined]


async def test_audit_rows_keep_log_order_and_the_cursor_through_filters_and_updates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*_args: object, **_kw: object) -> None:
        raise AssertionError("the audit table was cleared and refilled")

    app = offline_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("3")
        await pilot.pause()
        table = app.screen.query_one(ActionsTable)
        monkeypatch.setattr(ActionsTable, "clear", refuse)
        in_order = ["a-090", "a-091", "a-092", "a-093", "a-101", "a-102"]
        assert table.row_keys() == in_order

        # An old action changes (the state now lists it last): its row stays put.
        old = app.state.actions["a-090"]
        app.receive(ActionEvent(action=old.model_copy(update={"state": "failed", "exit_code": 1})))
        app.flush()
        await pilot.pause()
        assert list(app.state.actions)[-1] == "a-090"
        assert table.row_keys() == in_order
        assert table.get_cell("a-090", "state").plain == "failed"

        # Narrow, put the cursor on a row, widen: rows come back above it, in
        # their places, and the cursor is still on the same row.
        await pilot.press("slash", *"prod")
        await pilot.pause()
        assert table.row_keys() == ["a-090", "a-091", "a-101", "a-102"]
        table.move_cursor(row=table.get_row_index("a-101"))
        await pilot.press(*["backspace"] * 4)
        await pilot.pause()
        assert table.row_keys() == in_order
        assert table.selected_key == "a-101"


async def test_palette_lists_the_views_keys_and_themes() -> None:
    app = offline_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("a", "enter")
        await pilot.pause()
        names = {c.name for c in TowerCommands(app.screen).gather()}
        assert {"Approve", "Deny", "Back", "Fleet", "Policy", "Audit", "Help", "Theme"} <= names
        assert "Cursor up" not in names  # widget plumbing is not a console command
        assert {"Theme: tower-light", "Theme: tower-contrast"} <= names


async def test_t_cycles_the_shipped_themes() -> None:
    app = offline_app()
    async with app.run_test(size=(120, 40)) as pilot:
        assert app.theme == "tower-dark"
        await pilot.press("t")
        assert app.theme == "tower-light"
        await pilot.press("t")
        assert app.theme == "tower-contrast"
        await pilot.pause()
        # Cells are re-rendered in the new theme's colours (production in its error colour).
        assert app.palette.error.lower() in ("#ff3b3b", "#fe3b3b")
        env = app.screen.query_one(FleetTable).get_cell("s-prod-1", "env")
        assert any(app.palette.error.lower() in str(span.style).lower() for span in env.spans)
