"""A store that cannot write makes the hub refuse, never approve.

The database is locked by another process (a second sqlite3 connection
holding ``BEGIN EXCLUSIVE``) or full (``PRAGMA max_page_count`` on the hub's
own writer connection). While the fault lasts nothing that needs approval
runs and no approval reaches a shim; once it clears everything resumes, the
invariant "every executed action has exactly one approval with a matching
digest or was allowed by policy" holds and `audit verify` passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agent_shim import Action, ActionDenied, Shim, new_action_id
from agent_shim.policy import EnvPolicy
from towerctl.audit.verify import verify_database
from towerctl.hub.server import Hub, HubConfig
from towerctl.operator import OperatorError
from towerctl.tokens import create_token

from .conftest import Tower, wait_for
from .test_faults import check_invariants

DEV_ASK = EnvPolicy(read="allow", write="allow", destructive="ask", approval_timeout_s=3, rules=())


@pytest.fixture
async def tower(tmp_path: Path) -> AsyncIterator[Tower]:
    """A hub whose store gives up on a held lock after 0.2 s (instead of 5 s)."""
    db, key = tmp_path / "tower.db", tmp_path / "signing.key"
    hub = Hub(HubConfig(host="127.0.0.1", port=0, db_path=db, key_path=key, store_busy_timeout_ms=200))
    await hub.start()
    t = Tower(hub=hub, db=db, key=key)
    assert hub.store is not None
    for who, role in (("agent", "agent"), ("admin", "admin")):
        t.tokens[who] = await create_token(hub.store, role=role, name=who, envs=(), actor="test")
    await t.set_policy("dev", DEV_ASK)
    try:
        yield t
    finally:
        await hub.stop()


@contextlib.contextmanager
def locked(db: Path) -> Iterator[None]:
    """Another process holds the database's write lock."""
    con = sqlite3.connect(db, isolation_level=None)
    try:
        con.execute("BEGIN EXCLUSIVE")
        yield
        con.execute("ROLLBACK")
    finally:
        con.close()


def destructive(marker: Path) -> Action:
    return Action(action_id=new_action_id(), kind="shell", command=f"rm -rf {marker}", target="dev-box")


def executed(db: Path, action_id: str) -> bool:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = con.execute("SELECT state FROM actions WHERE action_id = ?", (action_id,)).fetchone()
    finally:
        con.close()
    return row is not None and row[0] in ("running", "succeeded", "failed")


async def final_checks(tower: Tower) -> None:
    port = tower.hub.port
    await tower.hub.stop()
    check_invariants(tower.db)
    result = verify_database(tower.db, tower.key)
    assert result.ok, result
    tower.hub.config.port = port
    await tower.hub.start()


async def run_approved(tower: Tower, shim: Shim, marker: Path) -> Action:
    """The normal path works: propose, approve, run, report."""
    action = destructive(marker)
    task = asyncio.create_task(shim.admit(action))
    async with tower.operator("admin") as op:
        await wait_for(lambda: action.action_id in op.pending, 10)
        await op.decide(action.action_id, approve=True)
    approved = await asyncio.wait_for(task, 10)
    approved.set_result(0, b"ok")
    shim.report(approved)
    return action


async def test_locked_store_refuses_a_proposal_that_needs_approval(
    tower: Tower, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("agent_shim.client.DECISION_GRACE_S", 0.2)
    await tower.set_policy("dev", DEV_ASK.model_copy(update={"approval_timeout_s": 1}))
    marker = tmp_path / "keep"
    marker.mkdir()
    async with Shim(tower.url, tower.tokens["agent"], agent="a", env="dev", reconnect_max_s=0.2) as shim:
        action = destructive(marker)
        with locked(tower.db):
            # The hub cannot record the proposal: it refuses (closes the
            # connection) and the shim denies at its timeout. Nothing runs.
            with pytest.raises(ActionDenied):
                await asyncio.wait_for(shim.admit(action), 10)
            assert "store" in shim.last_error or "unreachable" in shim.last_error or not shim.connected
        assert marker.exists()
        # The fault is gone: the shim is back and the normal path works again.
        await wait_for(lambda: shim.connected, 10)
        ok = await run_approved(tower, shim, tmp_path / "gone")
        await wait_for(lambda: executed(tower.db, ok.action_id), 10)
    assert not executed(tower.db, action.action_id)
    await final_checks(tower)


async def test_locked_store_never_sends_an_approval_to_the_shim(tower: Tower, tmp_path: Path) -> None:
    marker = tmp_path / "keep"
    marker.mkdir()
    svc = tower.hub.service
    assert svc is not None
    async with Shim(tower.url, tower.tokens["agent"], agent="a", env="dev", reconnect_max_s=0.2) as shim:
        action = destructive(marker)
        task = asyncio.create_task(shim.admit(action))
        async with tower.operator("admin") as op:
            await wait_for(lambda: action.action_id in op.pending)
            with locked(tower.db):
                # The approval cannot be made durable, so it is not made at all.
                with pytest.raises(OperatorError) as err:
                    await op.decide(action.action_id, approve=True)
                assert err.value.code == "store_unavailable", err.value
                assert not task.done()  # no decision reached the shim
                assert action.action_id in svc.reg.pending
                assert action.action_id not in svc.reg.deciding
            # The operator was told and stays connected; after the fault the
            # approval goes through, once.
            assert not op.closed.is_set()
            assert not task.done()
            await op.decide(action.action_id, approve=True)
        approved = await asyncio.wait_for(task, 10)
        approved.set_result(0, b"ok")
        shim.report(approved)
        await wait_for(lambda: executed(tower.db, action.action_id), 10)
    await final_checks(tower)


async def test_full_store_refuses_and_recovers(tower: Tower, tmp_path: Path) -> None:
    """The database cannot grow (max_page_count at its current size): the
    hub refuses to record a proposal, so the shim never gets an approval."""
    store = tower.hub.store
    assert store is not None

    def cap(tx: object) -> None:
        conn = tx.conn  # type: ignore[attr-defined]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")

    def uncap(tx: object) -> None:
        tx.conn.execute("PRAGMA max_page_count = 1073741823")  # type: ignore[attr-defined]

    marker = tmp_path / "keep"
    marker.mkdir()
    async with Shim(tower.url, tower.tokens["agent"], agent="a", env="dev", reconnect_max_s=0.2) as shim:
        await store._writer.submit(cap)  # fault injection on the hub's writer connection
        big = Action(
            action_id=new_action_id(), kind="shell", command=f"rm -rf {marker}", dry_run="x" * 60_000
        )
        task = asyncio.create_task(shim.admit(big))
        async with tower.operator("admin") as op:
            # Whatever happens, the pending action never shows up as approvable
            # while the disk is full, and the shim is not approved.
            with contextlib.suppress(TimeoutError):
                await wait_for(lambda: big.action_id in op.pending, 1.0)
            if big.action_id in op.pending:
                with pytest.raises(OperatorError):
                    await op.decide(big.action_id, approve=True)
        assert not (task.done() and task.exception() is None)
        await store._writer.submit(uncap)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ActionDenied):
            await task
        assert marker.exists()
        await wait_for(lambda: shim.connected, 10)
        ok = await run_approved(tower, shim, tmp_path / "gone")
        await wait_for(lambda: executed(tower.db, ok.action_id), 10)
    assert not executed(tower.db, big.action_id)
    await final_checks(tower)


async def test_expiry_during_a_store_fault_still_expires_and_refuses_late_approval(
    tower: Tower, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("agent_shim.client.DECISION_GRACE_S", 0.2)
    await tower.set_policy("dev", DEV_ASK.model_copy(update={"approval_timeout_s": 1}))
    svc = tower.hub.service
    assert svc is not None
    marker = tmp_path / "keep"
    marker.mkdir()
    async with Shim(tower.url, tower.tokens["agent"], agent="a", env="dev", reconnect_max_s=0.2) as shim:
        action = destructive(marker)
        task = asyncio.create_task(shim.admit(action))
        await wait_for(lambda: action.action_id in svc.reg.pending)
        expires_at = svc.reg.pending[action.action_id].info.expires_at
        assert expires_at is not None
        with locked(tower.db):
            # Hold the lock across the hub's expiry deadline.
            await wait_for(lambda: time.time() * 1000 > expires_at + 300, 5)
        with pytest.raises(ActionDenied):
            await asyncio.wait_for(task, 10)
        assert marker.exists()
        # The fault is gone: the hub must expire the action (late, but it must)...
        async with tower.operator("admin") as op:
            try:
                await wait_for(lambda: action.action_id not in svc.reg.pending, 2)
            finally:
                # ...and an approval after the deadline must be refused in any case.
                if action.action_id in op.pending:
                    with pytest.raises(OperatorError):
                        await op.decide(action.action_id, approve=True)
    con = sqlite3.connect(f"file:{tower.db}?mode=ro", uri=True)
    try:
        decisions = con.execute(
            "SELECT verdict FROM decisions WHERE action_id = ?", (action.action_id,)
        ).fetchall()
    finally:
        con.close()
    assert decisions == [("expired",)]
    assert not executed(tower.db, action.action_id)
    await final_checks(tower)
