"""What keeps the console responsive under a busy fleet (bench/tui_bench.py measures it).

Each test pins one mechanism: rows repainted one at a time, off-screen rows
rewritten when they come into view, one queued update per session, a flush
that leaves what it cannot fold in time to a follow-up, covered views that
catch up when shown again, a footer that is not rebuilt to show the same
keys. No timings here (those belong in the benchmark), only behaviour.
"""

from __future__ import annotations

import gc

import pytest
from rich.text import Text
from textual import events
from textual.geometry import Region
from textual.widget import Widget
from textual.widgets import Static
from textual.widgets._footer import FooterKey

import towerctl.tui.app as app_module
from agent_shim.protocol import (
    ActionEvent,
    ActivityEvent,
    HubToOperator,
    SessionActivity,
    SessionEvent,
    SessionInfo,
    Snapshot,
)
from towerctl.tui.app import TowerApp
from towerctl.tui.hub_link import ConsoleClient
from towerctl.tui.inbox import Inbox
from towerctl.tui.quiet_gc import QuietGC
from towerctl.tui.render import FixedClock, set_border_title
from towerctl.tui.sample import SAMPLE_NOW, _session, sample_action, sample_snapshot
from towerctl.tui.screens.approval import ApprovalScreen
from towerctl.tui.widgets.action_detail import ActionDetail
from towerctl.tui.widgets.fleet_table import FleetTable, _order
from towerctl.tui.widgets.footer import TowerFooter
from towerctl.tui.widgets.pending_queue import PendingQueue


def big_fleet(count: int = 200) -> Snapshot:
    """The sample snapshot plus ``count`` dev sessions, so most rows are off screen."""
    base = sample_snapshot()
    extra = tuple(
        _session(f"s-load-{i:03d}", f"load-{i:03d}", "dev", "runner", age_s=60) for i in range(count)
    )
    return base.model_copy(update={"sessions": base.sessions + extra})


def offline_app(snapshot: Snapshot | None = None) -> TowerApp:
    return TowerApp(
        "ws://127.0.0.1:7340",
        "",
        initial_snapshot=snapshot or sample_snapshot(),
        operator=("alice", "admin"),
        clock=FixedClock(SAMPLE_NOW),
    )


def row_text(table: FleetTable, key: str) -> str:
    """The characters the table paints for ``key``'s row (it must be on screen)."""
    y = table.styles.gutter.top + table.header_height + table.get_row_index(key) - int(table.scroll_y)
    line = table.render_lines(Region(0, y, table.size.width, 1))[0]
    return line.text


def moved(session: SessionInfo, **changes: object) -> SessionEvent:
    return SessionEvent(session=session.model_copy(update=changes))


async def test_a_changed_cell_repaints_its_row_not_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    app = offline_app()
    async with app.run_test(size=(120, 40)) as pilot:
        fleet = app.screen.query_one(FleetTable)
        whole: list[int] = []
        rows: list[Region] = []
        original = fleet.refresh

        def spy(*regions: Region, **kw: bool) -> object:
            (rows.extend(regions) if regions else whole.append(1))
            return original(*regions, **kw)

        monkeypatch.setattr(fleet, "refresh", spy)
        app.receive(moved(app.state.sessions["s-dev-1"], current_action="make -j8"))
        app.flush()
        await pilot.pause()
        assert whole == []  # DataTable.update_cell would have refreshed the whole widget
        y = fleet.get_row_index("s-dev-1") + fleet.header_height
        assert [r.y for r in rows] == [y] and rows[0].height == 1
        assert "make -j8" in row_text(fleet, "s-dev-1")  # and nothing stale came from a cache


async def test_an_activity_message_updates_the_rows_it_names() -> None:
    app = offline_app()
    async with app.run_test(size=(120, 40)) as pilot:
        fleet = app.screen.query_one(FleetTable)
        before = row_text(fleet, "s-dev-1")
        entry = SessionActivity(session_id="s-dev-1", last_seen=1, current_action="helm upgrade web", rate=17)
        gone = SessionActivity(session_id="s-never-seen", last_seen=1, current_action="x", rate=1)
        app.receive(ActivityEvent(sessions=(entry, gone)))
        app.flush()
        await pilot.pause()
        assert fleet.get_cell("s-dev-1", "current").plain == "helm upgrade web"
        assert fleet.get_cell("s-dev-1", "rate").plain == "17"
        assert "helm upgrade web" in row_text(fleet, "s-dev-1") and row_text(fleet, "s-dev-1") != before
        assert "s-never-seen" not in app.state.sessions  # activity never creates a session


async def test_off_screen_rows_are_rewritten_when_they_scroll_into_view() -> None:
    app = offline_app(big_fleet())
    async with app.run_test(size=(120, 40)) as pilot:
        fleet = app.screen.query_one(FleetTable)
        await pilot.pause()
        last = "s-load-199"
        assert fleet.row_count == len(app.state.sessions)  # every row exists from the start
        assert last not in fleet.visible_keys()
        app.receive(moved(app.state.sessions[last], current_action="terraform plan", rate=42))
        app.flush()
        await pilot.pause()
        assert fleet.get_cell(last, "current").plain == ""  # not rewritten while nobody can see it

        fleet.focus()
        fleet.move_cursor(row=fleet.get_row_index(last), animate=False)
        await pilot.pause()
        assert last in fleet.visible_keys()
        assert fleet.get_cell(last, "current").plain == "terraform plan"
        assert fleet.get_cell(last, "rate").plain == "42"
        assert "terraform plan" in row_text(fleet, last)


async def test_a_big_snapshot_is_added_a_few_rows_per_frame() -> None:
    app = offline_app(big_fleet(450))
    async with app.run_test(size=(120, 40)) as pilot:
        fleet = app.screen.query_one(FleetTable)
        for _ in range(50):
            if fleet.row_count == len(app.state.sessions):
                break
            await pilot.pause()
        assert fleet.row_count == len(app.state.sessions)
        # The same order as one big batch: production first, then by environment and agent.
        assert fleet.row_keys() == [s.session_id for s in sorted(app.state.sessions.values(), key=_order)]


def test_the_inbox_keeps_one_update_per_session_unless_its_status_changes() -> None:
    s = _session("s-1", "agent", "dev", "h")
    other = _session("s-2", "agent", "dev", "h")
    inbox = Inbox()
    inbox.put(moved(s, rate=1))
    inbox.put(moved(other, rate=1))
    inbox.put(moved(s, rate=2))  # replaces the first, in its place
    inbox.put(moved(s, rate=3, status="paused"))  # a status change is news: queued after
    inbox.put(moved(s, rate=4, status="paused"))  # replaces the paused one
    got: list[HubToOperator] = list(inbox.drain(1.0))
    assert [(m.session.session_id, m.session.rate) for m in got if isinstance(m, SessionEvent)] == [
        ("s-1", 2),
        ("s-2", 1),
        ("s-1", 4),
    ]
    assert len(inbox) == 0


def test_the_inbox_never_folds_an_update_into_one_queued_before_a_snapshot() -> None:
    s = _session("s-1", "agent", "dev", "h")
    inbox = Inbox()
    inbox.put(moved(s, rate=1))
    inbox.put(sample_snapshot())
    inbox.put(moved(s, rate=2))
    kinds = [type(m).__name__ for m in inbox.drain(1.0)]
    assert kinds == ["SessionEvent", "Snapshot", "SessionEvent"]


def test_the_inbox_folds_actions_only_when_it_falls_behind() -> None:
    def event(state: str) -> ActionEvent:
        return ActionEvent(action=sample_action("a-1", "s-1", "agent", "dev", "shell", "ls", "read", state))

    calm = Inbox(coalesce_actions_at=10)
    for state in ("allowed", "running", "succeeded"):
        calm.put(event(state))
    assert len(calm) == 3  # every state reaches the feed

    behind = Inbox(coalesce_actions_at=0)
    for state in ("allowed", "running", "succeeded"):
        behind.put(event(state))
    assert [m.action.state for m in behind.drain(1.0) if isinstance(m, ActionEvent)] == ["succeeded"]


def test_a_partly_drained_inbox_still_folds_into_the_right_slot() -> None:
    sessions = [_session(f"s-{i}", "agent", "dev", "h") for i in range(40)]
    inbox = Inbox()
    for s in sessions:
        inbox.put(moved(s, rate=1))
    taken = list(inbox.drain(0.0))  # the budget is spent at once: one check interval is taken
    assert 0 < len(taken) < 40
    inbox.put(moved(sessions[-1], rate=9))
    rest = [m for m in inbox.drain(1.0) if isinstance(m, SessionEvent)]
    assert len(taken) + len(rest) == 40
    assert rest[-1].session.session_id == "s-39" and rest[-1].session.rate == 9


async def test_a_flush_leaves_what_it_cannot_fold_in_time_to_a_follow_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(app_module, "APPLY_BUDGET_S", 0.0)
    app = offline_app(big_fleet())
    async with app.run_test(size=(120, 40)) as pilot:
        for i in range(200):
            session = app.state.sessions[f"s-load-{i:03d}"]
            app.receive(moved(session, rate=7))
        app.flush()
        assert 0 < app.backlog < 200  # part of it, then the loop is free again
        for _ in range(100):
            if not app.backlog:
                break
            await pilot.pause()
        assert app.backlog == 0  # the rest followed without waiting for the next tick
        assert all(app.state.sessions[f"s-load-{i:03d}"].rate == 7 for i in range(200))


async def test_a_covered_view_catches_up_when_it_is_shown_again() -> None:
    app = offline_app()
    async with app.run_test(size=(120, 40)) as pilot:
        fleet = app.screen.query_one(FleetTable)
        await pilot.press("a", "enter")
        await pilot.pause()
        assert isinstance(app.screen, ApprovalScreen)
        app.receive(moved(app.state.sessions["s-dev-1"], current_action="pytest -x"))
        app.flush()
        await pilot.press("t")  # a new theme while the fleet is covered
        await pilot.pause()
        assert fleet.get_cell("s-dev-1", "current").plain == "git status"  # covered: not synced

        await pilot.press("escape")
        await pilot.pause()
        assert fleet.get_cell("s-dev-1", "current").plain == "pytest -x"
        env = fleet.get_cell("s-prod-1", "env")
        assert any(app.palette.error.lower() in str(span.style).lower() for span in env.spans)


async def test_theme_colours_reach_cells_styled_as_a_whole() -> None:
    """A cell whose colour is its base style (not a span) changes with the theme too."""
    app = offline_app()
    async with app.run_test(size=(120, 40)) as pilot:
        queue = app.screen.query_one(PendingQueue)
        before = queue.get_cell("a-101", "risk").style
        await pilot.press("t")
        await pilot.pause()
        after = queue.get_cell("a-101", "risk").style
        assert after != before
        assert after == app.palette.risk("destructive")


async def test_a_new_approval_older_than_a_shown_one_takes_its_place_at_once() -> None:
    app = offline_app()
    async with app.run_test(size=(120, 40)) as pilot:
        queue = app.screen.query_one(PendingQueue)
        assert queue.row_keys() == ["a-101", "a-102"]
        between = sample_action(
            "a-150", "s-dev-1", "claude-code", "dev", "shell", "rm -rf dist", "destructive", "pending",
            age_s=60, expires_s=240,
        )
        app.receive(ActionEvent(action=between))
        app.flush()
        await pilot.pause()
        assert queue.row_keys() == ["a-101", "a-150", "a-102"]  # oldest first, in one batch


async def test_the_footer_is_rebuilt_only_when_its_keys_change(monkeypatch: pytest.MonkeyPatch) -> None:
    app = offline_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        footer = app.screen.query_one(TowerFooter)
        rebuilds: list[int] = []
        original = footer.recompose

        async def counting() -> None:
            rebuilds.append(1)
            await original()

        monkeypatch.setattr(footer, "recompose", counting)
        for _ in range(3):
            app.screen.refresh_bindings()  # what Textual does on every focus or stack change
        await pilot.pause()
        assert rebuilds == []

        fleet = app.screen.query_one(FleetTable)
        fleet.move_cursor(row=fleet.get_row_index("s-dev-2"))  # a killed session: no pause, no kill
        await pilot.pause()
        await pilot.pause()
        assert rebuilds == [1]
        pause = next(key for key in footer.query(FooterKey) if key.action == "pause")
        assert pause.has_class("-disabled")


async def test_an_unchanged_border_title_does_not_repaint(monkeypatch: pytest.MonkeyPatch) -> None:
    app = offline_app()
    async with app.run_test(size=(120, 40)):
        fleet = app.screen.query_one(FleetTable)
        calls: list[int] = []
        original = fleet.refresh
        monkeypatch.setattr(fleet, "refresh", lambda *a, **k: (calls.append(1), original(*a, **k))[1])
        set_border_title(fleet, "Sessions (5)")  # what the view already shows
        set_border_title(fleet, "Sessions (5)")
        assert calls == []
        set_border_title(fleet, Text("Sessions (6)"))
        assert calls == [1]


async def test_cached_row_lines_follow_the_cursor() -> None:
    app = offline_app()
    async with app.run_test(size=(120, 40)) as pilot:
        fleet = app.screen.query_one(FleetTable)
        fleet.focus()
        await pilot.pause()

        def strip(key: str) -> object:
            y = fleet.styles.gutter.top + fleet.header_height + fleet.get_row_index(key) - int(fleet.scroll_y)
            return fleet.render_lines(Region(0, y, fleet.size.width, 1))[0]

        fleet.move_cursor(row=fleet.get_row_index("s-dev-1"), animate=False)
        await pilot.pause()
        plain, lit = strip("s-stg-1"), strip("s-dev-1")
        fleet.move_cursor(row=fleet.get_row_index("s-stg-1"), animate=False)
        await pilot.pause()
        assert strip("s-stg-1") != plain  # the cursor moved onto it: drawn highlighted
        assert strip("s-dev-1") != lit  # and off this one
        fleet.move_cursor(row=fleet.get_row_index("s-dev-1"), animate=False)
        await pilot.pause()
        assert strip("s-stg-1") == plain and strip("s-dev-1") == lit


async def test_the_approval_view_is_reused_and_forgets_the_previous_action() -> None:
    app = offline_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("a", "enter")
        await pilot.pause()
        first = app.screen
        assert isinstance(first, ApprovalScreen) and first.action_id == "a-101"
        await pilot.press("y")  # offline: the request fails and the banner says so
        await pilot.pause()
        banner = first.query_one("#approval-banner", Static)
        assert "offline" in str(banner.content)
        await pilot.press("escape")
        await pilot.pause()

        queue = app.screen.query_one(PendingQueue)
        queue.focus()
        queue.move_cursor(row=queue.get_row_index("a-102"))
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen is first and first.action_id == "a-102"  # the same view, built once
        assert "offline" not in str(banner.content)
        assert first.check_action("approve", ()) is True
        detail = shown(first.query_one(ActionDetail))
        assert "ALTER TABLE orders DROP COLUMN legacy_ref;" in detail
        assert "kubectl delete deployment web" not in detail


def shown(widget: Widget) -> str:
    lines = widget.render_lines(Region(0, 0, widget.size.width, widget.size.height))
    return "\n".join(strip.text for strip in lines)


def test_the_console_client_keeps_a_bounded_copy_of_finished_actions() -> None:
    client = ConsoleClient("ws://127.0.0.1:1", "token")
    client.keep_actions = 50
    waiting = sample_action("a-wait", "s-1", "agent", "prod", "shell", "rm -rf /x", "destructive", "pending")
    client._apply(ActionEvent(action=waiting))
    for i in range(3000):
        done = sample_action(f"a-{i}", "s-1", "agent", "dev", "shell", "ls", "read", "succeeded")
        client._apply(ActionEvent(action=done))
    assert len(client.actions) <= 50 + 1000 + 1
    assert "a-wait" in client.actions and "a-wait" in client.pending  # pending ones are never dropped
    assert "a-2999" in client.actions and "a-0" not in client.actions  # the newest are kept


def test_the_gc_settings_are_undone_when_the_last_console_exits() -> None:
    before = gc.get_threshold()
    QuietGC.hold()
    QuietGC.hold()  # two consoles in one process
    assert gc.get_threshold() == QuietGC.THRESHOLDS and gc.get_freeze_count() > 0
    QuietGC.release()
    assert gc.get_threshold() == QuietGC.THRESHOLDS  # one is still running
    QuietGC.release()
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


async def test_keys_typed_ahead_act_where_the_previous_key_moved_focus() -> None:
    """`a` then `enter` arriving together (fast typing, one SSH packet) open the queue's approval."""
    app = offline_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert app.focused is app.screen.query_one(FleetTable)
        app.post_message(events.Key("a", "a"))
        app.post_message(events.Key("enter", None))
        await pilot.pause()
        await pilot.pause()
        assert isinstance(app.screen, ApprovalScreen) and app.screen.action_id == "a-101"
