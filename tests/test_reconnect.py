"""The hub goes away and comes back: shims reconnect, nothing is lost or run twice."""

from __future__ import annotations

import asyncio
import sqlite3

from agent_shim import Action, Shim, SyncShim, new_action_id
from towerctl.audit.verify import verify_database

from .conftest import Tower, wait_for


async def restart(tower: Tower) -> None:
    port = tower.hub.port
    await tower.hub.stop()
    tower.hub.config.port = port
    await tower.hub.start()


async def test_reports_queued_while_down_are_delivered(tower: Tower) -> None:
    async with Shim(tower.url, tower.tokens["agent"], agent="a1", env="dev", reconnect_max_s=0.2) as shim:
        port = tower.hub.port
        await tower.hub.stop()
        await wait_for(lambda: not shim.connected)
        ran = [await shim.run_shell(f"echo {i}") for i in range(3)]
        assert shim.pending_reports >= 6  # propose + report each (an allowed action sends no started)
        tower.hub.config.port = port
        await tower.hub.start()
        await wait_for(lambda: shim.connected and shim.pending_reports == 0, 10)
    await tower.hub.stop()
    con = sqlite3.connect(tower.db)
    try:
        for approved in ran:
            (state,) = con.execute(
                "SELECT state FROM actions WHERE action_id = ?", (approved.action.action_id,)
            ).fetchone()
            assert state == "succeeded"
    finally:
        con.close()
    assert verify_database(tower.db, tower.key).ok
    await tower.hub.start()


async def test_pending_action_survives_a_hub_restart(tower: Tower) -> None:
    async with Shim(tower.url, tower.tokens["agent"], agent="a1", env="prod", reconnect_max_s=0.2) as shim:
        action = Action(action_id=new_action_id(), kind="shell", command="kubectl delete pod web-0")
        task = asyncio.create_task(shim.admit(action))
        async with tower.operator() as op:
            await wait_for(lambda: action.action_id in op.pending)  # from the snapshot or an event
        await restart(tower)
        async with tower.operator() as op:
            assert action.action_id in op.pending  # offered again after the restart
            await wait_for(lambda: shim.connected)
            await op.decide(action.action_id, approve=True)
            approved = await asyncio.wait_for(task, 5)
            assert approved.digest == action.digest()
            shim.report(approved)


async def test_sync_twin(tower: Tower, tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "sync.txt"

    def agent() -> int | None:
        with SyncShim(tower.url, tower.tokens["agent"], agent="sync", env="dev") as shim:
            assert shim.connected
            return shim.run_shell(f"echo sync > {out}").exit_code

    code = await asyncio.to_thread(agent)
    assert code == 0
    assert out.read_text() == "sync\n"
