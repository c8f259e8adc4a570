"""Decisions from one console do not wait for each other's commits.

Each decision is durable before the agent hears of it. The hub once took an
operator's requests strictly one at a time, so a burst of approvals (a script,
or an SRE clearing a queue) waited for one commit after another; at 50
decisions/s on a busy hub the last waited seconds. Now each decision runs as
soon as it arrives and they share group commits, while the first of two
decisions on one action still wins and any other request waits for the
decisions sent before it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agent_shim import Action, Shim, new_action_id
from agent_shim.protocol import ActionEvent
from towerctl.operator import OperatorError

from .conftest import Tower, next_event, wait_for


def shell(command: str) -> Action:
    return Action(action_id=new_action_id(), kind="shell", command=command)


async def test_a_burst_of_decisions_is_decided_side_by_side(
    tower: Tower, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc, store = tower.hub.service, tower.hub.store
    assert svc is not None and store is not None
    gate = asyncio.Event()
    real = store.action_decided

    async def held(*args: Any, **kwargs: Any) -> Any:
        await gate.wait()  # the store is slow: every decision's commit waits here
        return await real(*args, **kwargs)

    monkeypatch.setattr(store, "action_decided", held)
    async with (
        tower.operator("alice") as op,
        Shim(tower.url, tower.tokens["agent"], agent="a1", env="prod") as shim,
    ):
        tickets = [asyncio.create_task(shim.admit(shell(f"kubectl delete pod web-{i}"))) for i in range(5)]
        await wait_for(lambda: len(op.pending) == 5)
        ids = sorted(op.pending)
        decided = asyncio.gather(
            *(op.decide(aid, approve=True) for aid in ids[:4]),
            op.decide(ids[4], approve=False, reason="not this one"),
        )
        # All five are being decided at once, none committed yet: one at a
        # time, the second could not start before the first commit.
        await wait_for(lambda: len(svc.reg.deciding) == 5)
        # A second decision on an action being decided loses, without waiting.
        with pytest.raises(OperatorError) as lost:
            await op.decide(ids[0], approve=False)
        assert lost.value.code == "already_decided"
        gate.set()
        await asyncio.wait_for(decided, 10)
        results = await asyncio.gather(*tickets, return_exceptions=True)
    assert sum(1 for r in results if not isinstance(r, BaseException)) == 4
    for aid in ids:
        assert await store.decision(aid) is not None


async def test_a_control_request_after_decisions_sees_them_done(tower: Tower) -> None:
    async with (
        tower.operator("alice") as op,
        Shim(tower.url, tower.tokens["agent"], agent="a1", env="prod") as shim,
    ):
        ticket = asyncio.create_task(shim.admit(shell("kubectl delete pod web-0")))
        ev = await next_event(op, lambda m: isinstance(m, ActionEvent) and m.action.state == "pending")
        aid = ev.action.action.action_id
        decision = asyncio.create_task(op.decide(aid, approve=True))
        kill = asyncio.create_task(op.control(ev.action.session_id, "kill", "done here"))
        await asyncio.wait_for(asyncio.gather(decision, kill), 10)
        approved = await asyncio.wait_for(ticket, 10)  # approved before the kill took effect
        assert approved.decision is not None and approved.decision.operator == "alice"
