"""Fewer messages for the same truth, at fleet load.

* Lazy writes: an agent's report is written with the next batch that goes
  anyway (the next proposal, whose ack waits for its commit), or within
  ``LAZY_FLUSH_S``; in order with every other write, and never dropped at close.
* Routine operator events: an allowed action that runs and finishes within
  ``SESSION_COALESCE_S`` reaches operators as one event (its final state).
  What an operator may act on (pending, a decision, a cancel) goes out at once
  and replaces a held event of its action, so no older state ever follows a
  newer one.

Against a real hub on 127.0.0.1 with a real SQLite file, with both writers.
The hold times are stretched by monkeypatch so that nothing depends on how
fast the machine is: a flush that would take 60 s must not be needed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from agent_shim import Action, Shim, new_action_id
from agent_shim.protocol import ActionEvent, Alert
from towerctl.hub import service as hub_service
from towerctl.operator import OperatorClient
from towerctl.store import Store
from towerctl.store import writer as writer_mod
from towerctl.store.models import OutcomeRow

from .conftest import Tower, next_event, wait_for
from .test_writer_process import T0, action, session

pytestmark = pytest.mark.timeout(60)


def outcome(aid: str) -> OutcomeRow:
    return OutcomeRow(
        action_id=aid,
        status="succeeded",
        exit_code=0,
        duration_ms=1,
        output_digest=None,
        output_tail="",
        reported_at=T0 + 2,
    )


@pytest.fixture(params=[True, False], ids=["process", "thread"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    s = await Store.open(tmp_path / "t.db", key_path=tmp_path / "k.key", writer_process=request.param)
    try:
        await s.session_started(session(), resumed=False, ts_ms=T0)
        yield s
    finally:
        await s.close()


async def audit_events(store: Store, aid: str) -> list[str]:
    return [r.event for r in await store.audit_rows(limit=10_000) if r.action_id == aid]


# ------------------------------------------------------------ lazy writes


async def test_a_lazy_write_rides_with_the_next_batch_in_order(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_mod, "LAZY_FLUSH_S", 60.0)  # only another write can take it
    await store.action_proposed(action("a-1"), actor="agent:a", ts_ms=T0 + 1, started=True)
    batches = store.write_stats.batches
    report = store.queue_action_finished(outcome("a-1"), actor="agent:a", ts_ms=T0 + 2, lazy=True)
    await asyncio.sleep(0)  # the writer runs: it must find nothing to commit
    assert not report.done() and store.write_stats.batches == batches
    await store.action_proposed(action("a-2"), actor="agent:a", ts_ms=T0 + 3)
    assert report.done() and report.exception() is None
    assert store.write_stats.batches == batches + 1  # one commit for both
    rows = await store.audit_rows(limit=10_000)
    order = [(r.event, r.action_id) for r in rows if r.action_id in ("a-1", "a-2")]
    # Queued before the proposal, so recorded before it.
    assert order.index(("action.succeeded", "a-1")) < order.index(("action.proposed", "a-2"))
    assert (await store.action("a-1")).state == "succeeded"  # type: ignore[union-attr]


async def test_a_lazy_write_alone_is_committed_within_its_bound(store: Store) -> None:
    await store.action_proposed(action("a-1"), actor="agent:a", ts_ms=T0 + 1, started=True)
    report = store.queue_action_finished(outcome("a-1"), actor="agent:a", ts_ms=T0 + 2, lazy=True)
    await asyncio.wait_for(report, 5)  # LAZY_FLUSH_S, with nothing else written
    assert "action.succeeded" in await audit_events(store, "a-1")


async def test_the_hold_timer_outlives_an_eager_take_and_still_bounds_the_next_hold(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a fleet each report is held and the next proposal takes it at once:
    the timer armed for the first is not cancelled and re-armed for every one,
    and when it fires it queues whatever is held by then."""
    monkeypatch.setattr(writer_mod, "LAZY_FLUSH_S", 60.0)  # it fires only when this test says
    writer = store._writer
    await store.action_proposed(action("a-1"), actor="agent:a", ts_ms=T0 + 1, started=True)
    first = store.queue_action_finished(outcome("a-1"), actor="agent:a", ts_ms=T0 + 2, lazy=True)
    timer = writer._held_timer
    assert timer is not None
    await store.action_proposed(action("a-2"), actor="agent:a", ts_ms=T0 + 3, started=True)
    assert first.done() and first.exception() is None
    second = store.queue_action_finished(outcome("a-2"), actor="agent:a", ts_ms=T0 + 4, lazy=True)
    assert writer._held_timer is timer  # the same timer, still armed: the bound of the first hold
    timer.cancel()
    writer._held_timer_fired()  # what the timer does when it fires
    await asyncio.wait_for(second, 5)
    assert writer._held_timer is None
    assert "action.succeeded" in await audit_events(store, "a-2")


async def test_close_commits_held_lazy_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer_mod, "LAZY_FLUSH_S", 60.0)
    db, key = tmp_path / "t.db", tmp_path / "k.key"
    store = await Store.open(db, key_path=key, writer_process=True)
    try:
        await store.session_started(session(), resumed=False, ts_ms=T0)
        await store.action_proposed(action("a-1"), actor="agent:a", ts_ms=T0 + 1, started=True)
        report = store.queue_action_finished(outcome("a-1"), actor="agent:a", ts_ms=T0 + 2, lazy=True)
    finally:
        await store.close()
    assert report.done() and report.exception() is None
    again = await Store.open(db, key_path=key)
    try:
        assert (await again.action("a-1")).state == "succeeded"  # type: ignore[union-attr]
        assert (await again.verify()).ok
    finally:
        await again.close()


async def test_an_eager_write_queued_after_a_lazy_one_is_not_overtaken(store: Store) -> None:
    """Lazy jobs are released ahead of the next eager one: the order of the
    queue is the order of the log, whatever the hold time."""
    await store.action_proposed(action("a-1"), actor="agent:a", ts_ms=T0 + 1, started=True)
    report = store.queue_action_finished(outcome("a-1"), actor="agent:a", ts_ms=T0 + 2, lazy=True)
    # The same action, eagerly: legal only after the report is in.
    late = store.queue_action_finished(outcome("a-1"), actor="agent:a", ts_ms=T0 + 3)
    await asyncio.wait_for(asyncio.gather(report, late, return_exceptions=True), 5)
    assert report.exception() is None
    assert (await audit_events(store, "a-1")).count("action.succeeded") == 1


# ------------------------------------------------- the hub, end to end


def shell(command: str) -> Action:
    return Action(action_id=new_action_id(), kind="shell", command=command)


def events_for(seen: list[Any], aid: str) -> list[str]:
    """The states operators were told of for action ``aid``, in order."""
    return [e.action.state for e in seen if isinstance(e, ActionEvent) and e.action.action.action_id == aid]


async def collect(op: OperatorClient, seen: list[Any]) -> None:
    async for msg in op.events():
        seen.append(msg)


async def test_an_agents_report_rides_with_its_next_proposal(
    tower: Tower, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_mod, "LAZY_FLUSH_S", 60.0)
    store = tower.hub.store
    assert store is not None
    async with Shim(tower.url, tower.tokens["agent"], agent="a1", env="dev") as shim:
        first = await shim.run_shell("echo one")
        await wait_for(lambda: len(store._writer._held) == 1)  # the report, held
        row = await store.action(first.action.action_id)
        assert row is not None and row.state == "running"
        # The shim runs what its policy allows without waiting for the ack: wait
        # for the hub to have recorded the second proposal.
        second = await shim.run_shell("echo two")

        async def recorded() -> None:
            while await store.action(second.action.action_id) is None:  # noqa: ASYNC110
                await asyncio.sleep(0.005)

        await asyncio.wait_for(recorded(), 10)
        # Its commit took the held report along, though the hold was 60 s.
        row = await store.action(first.action.action_id)
        assert row is not None and row.state == "succeeded"


async def run_watched(tower: Tower, command: str, final: str) -> tuple[str, list[Any]]:
    """Run ``command`` through a shim while an operator watches: the action's id
    and every message the operator got until the action reached ``final``."""
    seen: list[Any] = []
    agent = Shim(tower.url, tower.tokens["agent"], agent="a1", env="dev")
    async with tower.operator("viewer") as op, agent as shim:
        reader = asyncio.create_task(collect(op, seen))
        await wait_for(lambda: len(tower.hub.service.fanout.operators) == 1)  # type: ignore[union-attr]
        result = await shim.run_shell(command)
        aid = result.action.action_id
        await wait_for(lambda: final in events_for(seen, aid))
        reader.cancel()
    return aid, seen


async def test_an_allowed_action_reaches_operators_as_one_event(
    tower: Tower, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub_service, "SESSION_COALESCE_S", 1.0)  # room for the shim to finish first
    aid, seen = await run_watched(tower, "echo hi", "succeeded")
    assert events_for(seen, aid) == ["succeeded"]


async def test_a_finished_action_reaches_operators_with_its_outcome(
    tower: Tower, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report's figures are kept beside the proposal and made into the
    operators' ActionInfo only when sent: in the flushed event and in the
    snapshot of a console that connects later, with the same outcome."""
    monkeypatch.setattr(hub_service, "SESSION_COALESCE_S", 1.0)
    aid, seen = await run_watched(tower, "echo out; exit 3", "failed")
    sent = [e.action for e in seen if isinstance(e, ActionEvent) and e.action.action.action_id == aid][-1]
    assert (sent.state, sent.exit_code) == ("failed", 3)
    assert "out" in sent.output_tail and sent.duration_ms is not None
    async with tower.operator("viewer") as late:  # connect() returns once its snapshot is in
        assert late.actions[aid] == sent


async def test_what_an_operator_acts_on_is_not_held_and_replaces_a_held_state(
    tower: Tower, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub_service, "SESSION_COALESCE_S", 60.0)  # a routine event would never come
    svc = tower.hub.service
    assert svc is not None
    agent = Shim(tower.url, tower.tokens["agent"], agent="a1", env="prod")
    async with tower.operator("alice") as op, agent as shim:
        await wait_for(lambda: len(svc.fanout.operators) == 1)
        ticket = asyncio.create_task(shim.admit(shell("kubectl delete pod web-0")))
        pending = await next_event(op, lambda m: isinstance(m, ActionEvent) and m.action.state == "pending")
        aid = pending.action.action.action_id
        await op.decide(aid, approve=True)
        await next_event(op, lambda m: isinstance(m, ActionEvent) and m.action.state == "approved")
        await asyncio.wait_for(ticket, 10)

        # A routine state held, then a state an operator acts on: only the latter,
        # and the flush that follows has nothing older to send.
        info = pending.action
        svc._announce_action(info.model_copy(update={"state": "running"}), routine=True)
        svc._announce_action(info.model_copy(update={"state": "cancelled"}))
        svc._flush()
        svc.alert("info", "marker")
        seen: list[Any] = []
        await next_event(op, lambda m: seen.append(m) or (isinstance(m, Alert) and m.message == "marker"))
        assert [m.action.state for m in seen if isinstance(m, ActionEvent)] == ["cancelled"]

        # The same while no operator is connected: the held state is dropped too,
        # so one who connects before the flush is not sent it after its snapshot.
        svc._announce_action(info.model_copy(update={"state": "running"}), routine=True)
        connected = set(svc.fanout.operators)
        svc.fanout.operators.clear()
        svc._announce_action(info.model_copy(update={"state": "cancelled"}))
        svc.fanout.operators.update(connected)
        svc._flush()
        svc.alert("info", "marker 2")
        seen.clear()
        await next_event(op, lambda m: seen.append(m) or (isinstance(m, Alert) and m.message == "marker 2"))
        assert [m for m in seen if isinstance(m, ActionEvent)] == []


async def test_replies_to_agents_are_written_directly_until_the_agent_stops_reading(
    tower: Tower, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Below the buffer limit a reply is written at once (``broadcast``); at
    or above it the hub waits on ``send`` (flow control): both deliver it."""
    direct: list[str] = []
    real = hub_service.broadcast

    def spy(conns: Any, data: str) -> None:
        direct.append(data)
        real(conns, data)

    monkeypatch.setattr(hub_service, "broadcast", spy)
    agent = Shim(tower.url, tower.tokens["agent"], agent="a1", env="prod")
    async with tower.operator("alice") as op, agent as shim:
        action = shell("kubectl delete pod web-0")
        ticket = asyncio.create_task(shim.admit(action))
        await next_event(op, lambda m: isinstance(m, ActionEvent) and m.action.state == "pending")
        await wait_for(lambda: any(action.action_id in d and '"pending"' in d for d in direct))  # the ack
        monkeypatch.setattr(hub_service, "AGENT_WRITE_BUFFER_LIMIT", 0)  # as if the agent read nothing
        direct.clear()
        await op.decide(action.action_id, approve=True)
        approved = await asyncio.wait_for(ticket, 10)  # the signed decision came through send
        assert approved.decision is not None and direct == []
