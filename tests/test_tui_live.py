"""The console against a real hub, real SQLite and real shims, driven by key presses.

Nothing is mocked: the hub runs on 127.0.0.1:0 (the ``tower`` fixture), each
agent is an ``agent_shim.Shim`` proposing real actions, and the console is
``TowerApp`` run headless by Textual's Pilot. Each test waits on conditions,
never on fixed sleeps.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from textual.widgets import Static

from agent_shim import Action, ActionDenied, SessionKilled, Shim, new_action_id
from agent_shim.wire import ACTIVITY_SUBPROTOCOL
from towerctl.tui.app import TowerApp
from towerctl.tui.screens.approval import ApprovalScreen
from towerctl.tui.screens.modals import ConfirmScreen, ReasonScreen
from towerctl.tui.widgets.fleet_table import FleetTable
from towerctl.tui.widgets.pending_queue import PendingQueue

from .conftest import Tower, wait_for

SIZE = (120, 40)


def shell(command: str, **kw: str) -> Action:
    return Action(action_id=new_action_id(), kind="shell", command=command, **kw)


def keys_for(text: str) -> list[str]:
    return ["space" if ch == " " else ch for ch in text]


async def connected(app: TowerApp) -> None:
    await wait_for(lambda: app.state.link.status == "connected" and bool(app.state.name))


async def queued(app: TowerApp, count: int = 1) -> str:
    """Wait until the pending queue shows ``count`` rows; the oldest row's action id."""
    queue = app.screen.query_one(PendingQueue)
    await wait_for(lambda: queue.row_count == count)
    return queue.row_keys()[0]


async def test_y_on_a_destructive_prod_action_lets_the_shim_run_it(tower: Tower, tmp_path: Path) -> None:
    victim = tmp_path / "data"
    victim.mkdir()
    app = TowerApp(tower.url, tower.tokens["alice"])
    rings: list[int] = []
    app.bell = lambda: rings.append(1)  # type: ignore[method-assign]
    async with app.run_test(size=SIZE) as pilot, Shim(
        tower.url, tower.tokens["agent"], agent="deploy-bot", env="prod"
    ) as shim:
        await connected(app)
        task = asyncio.create_task(shim.run_shell(f"rm -rf {victim}", reason="cleanup"))
        aid = await queued(app)
        info = app.state.pending[aid]
        assert info.risk == "destructive" and info.env == "prod"
        assert rings, "a new approval rings the bell"
        assert not task.done() and victim.exists()

        await pilot.press("a", "enter")
        await wait_for(lambda: isinstance(app.screen, ApprovalScreen))
        await pilot.press("y")
        approved = await asyncio.wait_for(task, 5)
        assert approved.decision is not None and approved.decision.operator == "alice"
        assert not victim.exists()
        # Back on the fleet, the queue is empty and the feed tells the story.
        await wait_for(lambda: not isinstance(app.screen, ApprovalScreen))
        await wait_for(lambda: app.state.actions[aid].state == "succeeded")
        await wait_for(lambda: app.screen.query_one(PendingQueue).row_count == 0)


async def test_n_with_a_reason_makes_the_shim_raise_action_denied(tower: Tower, tmp_path: Path) -> None:
    victim = tmp_path / "keep"
    victim.mkdir()
    app = TowerApp(tower.url, tower.tokens["bob"])
    async with app.run_test(size=SIZE) as pilot, Shim(
        tower.url, tower.tokens["agent"], agent="deploy-bot", env="prod"
    ) as shim:
        await connected(app)
        task = asyncio.create_task(shim.run_shell(f"rm -rf {victim}"))
        await queued(app)
        await pilot.press("a", "enter")
        await wait_for(lambda: isinstance(app.screen, ApprovalScreen))
        await pilot.press("n")
        await wait_for(lambda: isinstance(app.screen, ReasonScreen))
        await pilot.press(*keys_for("use the runbook"), "enter")
        with pytest.raises(ActionDenied) as err:
            await asyncio.wait_for(task, 5)
    assert err.value.reason == "use the runbook"
    assert err.value.by == "bob"
    assert victim.exists()


async def test_p_pauses_and_resumes_and_k_kills_a_session(tower: Tower) -> None:
    app = TowerApp(tower.url, tower.tokens["alice"])
    async with app.run_test(size=SIZE) as pilot, Shim(
        tower.url, tower.tokens["agent"], agent="refactor-agent", env="dev"
    ) as shim:
        await connected(app)
        fleet = app.screen.query_one(FleetTable)
        await wait_for(lambda: fleet.selected_key == shim.session_id)

        await pilot.press("p")
        await wait_for(lambda: shim.paused)
        await wait_for(lambda: app.state.sessions[shim.session_id].status == "paused")
        blocked = asyncio.create_task(shim.admit(shell("ls -la")))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(blocked), 0.3)

        await pilot.press("p")  # the same key resumes a paused session
        approved = await asyncio.wait_for(blocked, 5)
        assert approved.action.command == "ls -la"
        shim.report(approved)
        await wait_for(lambda: app.state.sessions[shim.session_id].status == "active")

        waiting = asyncio.create_task(shim.admit(shell("rm -rf ./build")))  # dev asks for destructive
        await queued(app)
        await pilot.press("k")
        await wait_for(lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        with pytest.raises(SessionKilled) as err:
            await asyncio.wait_for(waiting, 5)
        assert err.value.by == "alice"
        with pytest.raises(SessionKilled):
            await shim.admit(shell("ls"))
        await wait_for(lambda: fleet.get_cell(shim.session_id, "status").plain.startswith("killed"))


async def test_the_fleet_table_shows_what_each_agent_is_running_now(tower: Tower) -> None:
    """Activity arrives in ``activity`` messages (``towerctl.lines.v2``): the
    current action and rate appear while a command runs and the command clears
    when it is reported, with no status change in between."""
    app = TowerApp(tower.url, tower.tokens["viewer"])
    agent = Shim(tower.url, tower.tokens["agent"], agent="builder", env="dev")
    async with app.run_test(size=SIZE), agent as shim:
        await connected(app)
        client = app._link.client
        assert client is not None and client._ws is not None
        assert client._ws.subprotocol == ACTIVITY_SUBPROTOCOL
        fleet = app.screen.query_one(FleetTable)
        await wait_for(lambda: shim.session_id in app.state.sessions)
        for k in range(2):
            shim.report(await shim.admit(shell(f"make -j8 target-{k}")))
        running = await shim.admit(shell("make -j8 install"))  # admitted, not yet reported
        await wait_for(lambda: fleet.get_cell(shim.session_id, "current").plain == "make -j8 install", 10)
        await wait_for(lambda: fleet.get_cell(shim.session_id, "rate").plain == "3", 10)
        shim.report(running)
        await wait_for(lambda: fleet.get_cell(shim.session_id, "current").plain == "", 10)
        assert fleet.get_cell(shim.session_id, "status").plain.startswith("active")


async def test_kill_is_not_sent_when_the_confirmation_is_declined(tower: Tower) -> None:
    app = TowerApp(tower.url, tower.tokens["alice"])
    async with app.run_test(size=SIZE) as pilot, Shim(
        tower.url, tower.tokens["agent"], agent="careful", env="dev"
    ) as shim:
        await connected(app)
        fleet = app.screen.query_one(FleetTable)
        await wait_for(lambda: fleet.selected_key == shim.session_id)
        await pilot.press("k")
        await wait_for(lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("n")
        await wait_for(lambda: not isinstance(app.screen, ConfirmScreen))
        approved = await asyncio.wait_for(shim.admit(shell("echo still alive")), 5)
        shim.report(approved)
        assert app.state.sessions[shim.session_id].status == "active"


async def test_two_consoles_see_each_others_decisions_by_name(tower: Tower) -> None:
    alice = TowerApp(tower.url, tower.tokens["alice"])
    bob = TowerApp(tower.url, tower.tokens["bob"])
    async with (
        alice.run_test(size=SIZE) as pa,
        bob.run_test(size=SIZE) as pb,
        Shim(tower.url, tower.tokens["agent"], agent="deploy-bot", env="prod") as shim,
    ):
        await connected(alice)
        await connected(bob)
        await wait_for(lambda: "bob" in alice.state.others_online() and "alice" in bob.state.others_online())
        task = asyncio.create_task(shim.admit(shell("kubectl delete deployment web")))
        aid = await queued(alice)
        assert await queued(bob) == aid

        # Both look at the same approval; alice decides first.
        await pb.press("a", "enter")
        await wait_for(lambda: isinstance(bob.screen, ApprovalScreen))
        await pa.press("a", "enter")
        await wait_for(lambda: isinstance(alice.screen, ApprovalScreen))
        await pa.press("y")
        await asyncio.wait_for(task, 5)

        bob_view = bob.screen
        assert isinstance(bob_view, ApprovalScreen)
        banner = bob_view.query_one("#approval-banner", Static)
        await wait_for(lambda: "APPROVED by alice" in str(banner.content))
        assert bob_view.check_action("approve", ()) is None  # y/n are disabled for bob
        assert bob_view.check_action("deny", ()) is None
        await pb.press("y")  # does nothing
        assert bob.state.actions[aid].decided_by == "alice"
        assert any("alice" in n.message and "approved" in n.message for n in bob._notifications)


async def test_the_console_reconnects_when_the_hub_restarts(tower: Tower) -> None:
    app = TowerApp(tower.url, tower.tokens["alice"])
    async with app.run_test(size=SIZE):
        await connected(app)
        port = tower.hub.port
        await tower.hub.stop()
        await wait_for(lambda: app.state.link.status == "reconnecting")
        tower.hub.config.port = port  # the console keeps its URL; the hub comes back on it
        await tower.hub.start()
        await wait_for(lambda: app.state.link.status == "connected", timeout=15)


async def test_the_embedded_console_verifies_and_shows_the_audit_log(tower: Tower) -> None:
    app = TowerApp(tower.url, tower.tokens["admin"], db_path=tower.db, key_path=tower.key)
    async with app.run_test(size=SIZE) as pilot, Shim(
        tower.url, tower.tokens["agent"], agent="reader", env="dev"
    ) as shim:
        await connected(app)
        approved = await shim.run_shell("true")
        await wait_for(lambda: approved.action.action_id in app.state.actions)
        await pilot.press("3")
        await wait_for(lambda: any(r.action_id == approved.action.action_id for r in app.state.audit_records))
        assert app.state.audit_ok is True
        assert app.state.audit_status.startswith("intact")
        chain = app.screen.query_one("#audit-chain", Static)
        await wait_for(lambda: "intact" in str(chain.content))
        await pilot.press("s")
        records = app.screen.query_one("#audit-records")
        await wait_for(lambda: records.row_count > 0)  # type: ignore[attr-defined]


async def test_a_refused_token_is_shown_and_not_retried(tower: Tower) -> None:
    app = TowerApp(tower.url, "not-a-real-token")
    async with app.run_test(size=SIZE):
        await wait_for(lambda: app.state.link.status == "refused")
        assert "401" in app.state.link.detail
        assert not app.state.sessions  # nothing is shown that the hub did not send
