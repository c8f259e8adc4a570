"""The audit log as the console shows it, against a real hub and its real SQLite file.

The header's record count must follow the log while the operator is on any
view (the hub's events say when something happened; records that no event
announces, such as a token created from the CLI, are picked up by a slow
poll), and the reads happen in a worker thread, never on the UI thread. The
audit view's tables stay in log order as they refresh and filter: rows are
updated by key and never cleared and refilled.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import threading
from contextlib import closing
from pathlib import Path

import pytest

import towerctl.tui.audit_watch as audit_watch
from agent_shim import Action, ActionDenied, Shim, new_action_id
from towerctl.tokens import create_token
from towerctl.tui.app import TowerApp
from towerctl.tui.screens.audit import AuditScreen
from towerctl.tui.widgets.audit_tables import ActionsTable, RecordsTable
from towerctl.tui.widgets.status_bar import StatusBar

from .conftest import Tower, wait_for

SIZE = (120, 40)
#: "✓ intact (135)", or while the newest records wait for verification "✓ intact to #120 of 135".
_COUNT = re.compile(r"audit: ✓ intact (?:\((?P<all>\d+)\)|to #(?P<verified>\d+) of (?P<count>\d+))")


def records_in(db: Path) -> int:
    """What the log holds now, read the way `towerctl audit verify` would (read-only)."""
    with closing(sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True)) as conn:
        (count,) = conn.execute("SELECT count(*) FROM audit").fetchone()
    return int(count)


def header(app: TowerApp) -> str:
    shown = app.screen.query_one(StatusBar).content
    return str(getattr(shown, "plain", shown))


def header_count(app: TowerApp) -> int | None:
    """The record count the header shows (verified or not yet)."""
    match = _COUNT.search(header(app))
    return int(match["all"] or match["count"]) if match else None


async def header_follows(app: TowerApp, db: Path, at_least: int, timeout: float = 10.0) -> int:
    """Wait until the header shows what the log holds, and the log holds ``at_least`` records."""

    def caught_up() -> bool:
        shown = header_count(app)
        return shown is not None and shown >= at_least and shown == records_in(db)

    await wait_for(caught_up, timeout)
    shown = header_count(app)
    assert shown is not None
    return shown


async def connected(app: TowerApp) -> None:
    await wait_for(lambda: app.state.link.status == "connected" and bool(app.state.name))


def shell(command: str) -> Action:
    return Action(action_id=new_action_id(), kind="shell", command=command)


async def test_the_header_audit_count_follows_the_log_on_every_view(
    tower: Tower, monkeypatch: pytest.MonkeyPatch
) -> None:
    readers: list[str] = []
    real_count = audit_watch.read_audit_count

    def counting(db_path: Path) -> int | None:
        readers.append(threading.current_thread().name)
        return real_count(db_path)

    monkeypatch.setattr(audit_watch, "read_audit_count", counting)
    # Records that no hub event announces are found by the poll; short here, seconds in real life.
    monkeypatch.setattr(audit_watch, "AUDIT_POLL_S", 0.2)
    app = TowerApp(tower.url, tower.tokens["admin"], db_path=tower.db, key_path=tower.key)
    async with app.run_test(size=SIZE), Shim(
        tower.url, tower.tokens["agent"], agent="reader", env="dev"
    ) as shim:
        await connected(app)
        assert app.current_mode == "fleet"  # not the audit view: the header alone must keep up
        shown = await header_follows(app, tower.db, at_least=1)

        for round_ in range(3):
            approved = await shim.run_shell(f"echo {round_}")  # allowed in dev: proposed (and ran), reported
            await wait_for(lambda a=approved: app.state.actions.get(a.action.action_id) is not None)
            shown = await header_follows(app, tower.db, at_least=shown + 2)

        # A token created outside the hub's event stream (as `towerctl token create` does).
        assert tower.hub.store is not None
        before = records_in(tower.db)
        await create_token(tower.hub.store, role="viewer", name="carol", envs=(), actor="test")
        await wait_for(lambda: records_in(tower.db) > before)
        await header_follows(app, tower.db, at_least=before + 1)
        # Verification catches up behind the count (throttled by its own cost).
        await wait_for(lambda: f"audit: ✓ intact ({records_in(tower.db)})" in header(app), timeout=10)

    assert readers, "the count was read"
    assert threading.main_thread().name not in readers, "the count must be read in a worker thread"


async def test_the_audit_view_keeps_log_order_as_it_refreshes_and_filters(
    tower: Tower, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_args: object, **_kw: object) -> None:
        raise AssertionError("an audit table was cleared and refilled")

    monkeypatch.setattr(ActionsTable, "clear", refuse)
    monkeypatch.setattr(RecordsTable, "clear", refuse)
    app = TowerApp(tower.url, tower.tokens["alice"], db_path=tower.db, key_path=tower.key)
    async with (
        app.run_test(size=SIZE) as pilot,
        Shim(tower.url, tower.tokens["agent"], agent="deploy-bot", env="prod") as shim,
        tower.operator("bob") as bob,
        tower.operator("admin") as admin,
    ):
        await connected(app)
        # Two approvals, the first proposed first; then the first is decided, so
        # it is also the most recently updated (the order the state keeps).
        first = asyncio.create_task(shim.admit(shell("rm -rf /srv/a")))
        await wait_for(lambda: len(app.state.pending) == 1)
        (first_id,) = app.state.pending
        second = asyncio.create_task(shim.admit(shell("rm -rf /srv/b")))
        await wait_for(lambda: len(app.state.pending) == 2)
        (second_id,) = set(app.state.pending) - {first_id}
        await wait_for(lambda: first_id in bob.pending)
        await bob.decide(first_id, True, "ok")
        shim.report(await asyncio.wait_for(first, 5))
        await wait_for(lambda: app.state.actions[first_id].state == "succeeded")

        await pilot.press("3")
        await wait_for(lambda: isinstance(app.screen, AuditScreen))
        actions = app.screen.query_one(ActionsTable)
        await wait_for(lambda: actions.row_count == 2)
        assert actions.row_keys() == [first_id, second_id], "proposal order, not last-update order"

        # Live updates change rows in place; a new action goes below the others.
        await wait_for(lambda: second_id in admin.pending)
        await admin.decide(second_id, False, "not now")
        with pytest.raises(ActionDenied):
            await asyncio.wait_for(second, 5)
        third = asyncio.create_task(shim.admit(shell("rm -rf /srv/c")))
        await wait_for(lambda: actions.row_count == 3)
        third_id = actions.row_keys()[2]
        assert actions.row_keys()[:2] == [first_id, second_id]
        await wait_for(lambda: actions.get_cell(second_id, "state").plain == "denied")
        await wait_for(lambda: third_id in bob.pending)
        await bob.decide(third_id, True, "fine")
        shim.report(await asyncio.wait_for(third, 5))
        await wait_for(lambda: actions.get_cell(third_id, "state").plain == "succeeded")
        assert actions.row_keys() == [first_id, second_id, third_id]

        # Filtering narrows; widening brings rows back where they were, and the
        # cursor stays on the operator's row.
        await pilot.press("slash", *"succeeded")  # the first and the third ran; the second was denied
        await wait_for(lambda: actions.row_keys() == [first_id, third_id])
        actions.move_cursor(row=0)
        await pilot.press(*["backspace"] * len("succeeded"))
        await wait_for(lambda: actions.row_count == 3)
        assert actions.row_keys() == [first_id, second_id, third_id]
        assert actions.selected_key == first_id

        # Leave the view while things change, come back: caught up, still in order.
        await pilot.press("escape", "1")
        fourth = asyncio.create_task(shim.admit(shell("rm -rf /srv/d")))
        await wait_for(lambda: len(app.state.pending) == 1)
        (fourth_id,) = app.state.pending
        await pilot.press("3")
        await wait_for(lambda: actions.row_count == 4)
        assert actions.row_keys() == [first_id, second_id, third_id, fourth_id]
        await wait_for(lambda: fourth_id in bob.pending)
        await bob.decide(fourth_id, False, "enough")
        with pytest.raises(ActionDenied):
            await asyncio.wait_for(fourth, 5)

        # The log itself: by sequence number, growing at the bottom, filtered in place.
        await pilot.press("s")
        records = app.screen.query_one(RecordsTable)
        await wait_for(lambda: records.row_count > 0 and records.row_count == len(app.state.audit_records))
        seqs = [int(k) for k in records.row_keys()]
        assert seqs == sorted(seqs)
        await pilot.press("slash", *second_id[-8:])  # the end the table shows
        await wait_for(lambda: 0 < records.row_count < len(seqs))
        await pilot.press(*["backspace"] * 8)
        await wait_for(lambda: records.row_count >= len(seqs))
        again = [int(k) for k in records.row_keys()]
        assert again == sorted(again) and again[: len(seqs)] == seqs
