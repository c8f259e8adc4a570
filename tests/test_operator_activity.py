"""Session activity to operators as ``activity`` messages (``towerctl.lines.v2``).

* End to end: with a real hub and a real shim running commands, a console on
  v2 learns each session's current action and rate from ``activity``
  messages and gets no ``session`` message for mere activity; consoles on v1,
  or with no subprotocol, get a ``session`` message per session as before,
  with the same values. ``OperatorClient`` offers v2 and keeps its sessions
  current from them.
* The pure parts: ``apply_activity`` never creates a session and changes
  only the activity fields; the console's state folds an ``activity`` message
  into its sessions without writing the feed; the hub cuts a large flush into
  messages that each fit ``MAX_MESSAGE_BYTES``; a malformed one is refused.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from agent_shim import Shim
from agent_shim.operator_messages import MAX_ACTIVITY_ENTRIES
from agent_shim.protocol import (
    MAX_MESSAGE_BYTES,
    ActivityEvent,
    HubToOperatorAdapter,
    ProtocolError,
    SessionActivity,
    SessionEvent,
    SessionInfo,
    Snapshot,
    apply_activity,
    decode,
    encode,
)
from agent_shim.wire import ACTIVITY_SUBPROTOCOL, LINES_SUBPROTOCOL
from towerctl.hub.registry import LiveSession
from towerctl.hub.service import _activity
from towerctl.operator import OperatorClient
from towerctl.tui.state import TowerState

from .conftest import Tower, wait_for
from .test_operator_batch import RawOperator, is_alert, raw_operator

# ------------------------------------------------------------ end to end


def activity_of(messages: list[dict[str, Any]], sid: str) -> list[dict[str, Any]]:
    return [e for m in messages if m["type"] == "activity" for e in m["sessions"] if e["session_id"] == sid]


def session_updates(messages: list[dict[str, Any]], sid: str) -> list[dict[str, Any]]:
    return [m["session"] for m in messages if m["type"] == "session" and m["session"]["session_id"] == sid]


async def test_v2_console_gets_activity_messages_and_older_ones_session_messages(
    tower: Tower, tmp_path: Path
) -> None:
    svc = tower.hub.service
    assert svc is not None
    v2 = await raw_operator(tower, "admin", {"client": "v2"}, offer=(ACTIVITY_SUBPROTOCOL, LINES_SUBPROTOCOL))
    v1 = await raw_operator(tower, "alice", {"client": "v1"}, lines=True)
    plain = await raw_operator(tower, "viewer", {"client": "plain"})
    clients: tuple[RawOperator, ...] = (v2, v1, plain)
    fifo = tmp_path / "go"
    os.mkfifo(fifo)
    try:
        await wait_for(lambda: len(svc.fanout.operators) == 3)
        assert tower.operator_conn("admin").activity is True
        assert tower.operator_conn("alice").activity is False
        assert tower.operator_conn("viewer").activity is False
        async with tower.operator("bob") as console:  # OperatorClient offers v2
            await wait_for(lambda: len(svc.fanout.operators) == 4)
            assert tower.operator_conn("bob").activity is True
            async with Shim(tower.url, tower.tokens["agent"], agent="worker", env="dev") as shim:
                sid = shim.session_id
                for k in range(3):
                    assert (await shim.run_shell(f"echo step-{k}")).exit_code == 0
                # A command that runs until the test lets it finish: every
                # console sees it as the session's current action meanwhile.
                blocked = f"cat {fifo}"
                running = asyncio.create_task(shim.run_shell(blocked))
                await wait_for(
                    lambda: any(e["current_action"] == blocked for e in activity_of(v2.messages, sid)), 10
                )
                for old in (v1, plain):
                    await wait_for(
                        lambda old=old: any(
                            s["current_action"] == blocked for s in session_updates(old.messages, sid)
                        ),
                        10,
                    )
                await wait_for(lambda: console.sessions[sid].current_action == blocked, 10)
                assert console.sessions[sid].rate >= 4
                assert console.sessions[sid].status == "active"
                await asyncio.to_thread(fifo.write_text, "go\n")
                assert (await asyncio.wait_for(running, 10)).exit_code == 0
                # Finished: the current action clears, for every console.
                await wait_for(lambda: console.sessions[sid].current_action == "", 10)
                svc.alert("info", "end")
                for c in clients:
                    await c.wait_message(is_alert("end"))

        assert activity_of(v2.messages, sid)[-1]["current_action"] == ""
        assert activity_of(v2.messages, sid)[-1]["rate"] >= 4
        # The v2 console heard of the session's status (connected) in a
        # session message, and of its activity only in activity messages.
        statuses = session_updates(v2.messages, sid)
        assert statuses and all(s["current_action"] != blocked for s in statuses)
        # The older consoles got the same activity as whole session messages.
        for old in (v1, plain):
            assert not any(m["type"] == "activity" for m in old.messages)
            assert session_updates(old.messages, sid)[-1]["rate"] >= 4
    finally:
        for c in clients:
            await c.close()


# ------------------------------------------------------------ pure parts


def info(sid: str, **kw: Any) -> SessionInfo:
    fields: dict[str, Any] = {
        "session_id": sid,
        "agent": "a",
        "env": "prod",
        "status": "paused",
        "connected": True,
        "started_at": 1,
        "last_seen": 10,
        "current_action": "old",
        "pending": 2,
        "rate": 5,
    }
    return SessionInfo(**{**fields, **kw})


def test_apply_activity_updates_known_sessions_only() -> None:
    sessions = {"s1": info("s1"), "s2": info("s2")}
    event = ActivityEvent(
        sessions=(
            SessionActivity(session_id="s1", last_seen=20, current_action="kubectl get pods", rate=7),
            SessionActivity(session_id="gone", last_seen=30, current_action="x", rate=1),
        )
    )
    updated = apply_activity(sessions, event.sessions)
    assert set(updated) == {"s1"}
    s1 = updated["s1"]
    assert (s1.last_seen, s1.current_action, s1.rate) == (20, "kubectl get pods", 7)
    # Nothing else of the session changes: status, connection, pending count.
    assert s1.model_dump(exclude={"last_seen", "current_action", "rate"}) == sessions["s1"].model_dump(
        exclude={"last_seen", "current_action", "rate"}
    )
    assert sessions["s1"].current_action == "old"  # the input is not modified


def test_operator_client_folds_activity_in_order_with_session_messages() -> None:
    client = OperatorClient("ws://127.0.0.1:9", "unused")
    snap = Snapshot(sessions=(info("s1", status="active"),), pending=(), policies={}, hub_time=1)

    def act(rate: int) -> ActivityEvent:
        return ActivityEvent(sessions=(SessionActivity(session_id="s1", last_seen=rate, rate=rate),))

    for msg in (snap, act(7)):
        client._apply(msg)
    assert client.sessions["s1"].rate == 7
    # A session message is newer than the activity before it, folded or not.
    for msg in (act(8), SessionEvent(session=info("s1", status="paused", rate=3))):
        client._apply(msg)
    assert (client.sessions["s1"].status, client.sessions["s1"].rate) == ("paused", 3)
    client._apply(act(9))
    assert (client.sessions["s1"].status, client.sessions["s1"].rate) == ("paused", 9)
    # ...and a snapshot replaces everything, activity not yet read included.
    for msg in (act(10), snap):
        client._apply(msg)
    assert (client.sessions["s1"].status, client.sessions["s1"].rate) == ("active", 5)


def test_console_state_folds_activity_into_sessions_without_feed_entries() -> None:
    state = TowerState()
    state.sessions = {"s1": info("s1"), "s2": info("s2")}
    state.take_delta()
    feeds_before = {k: list(v) for k, v in state.feeds.items()}
    event = ActivityEvent(
        sessions=(SessionActivity(session_id="s2", last_seen=99, current_action="ls", rate=3),)
    )
    state.apply(event, now_ms=100)
    assert state.sessions["s2"].current_action == "ls" and state.sessions["s2"].rate == 3
    assert state.sessions["s1"] == info("s1")
    delta = state.take_delta()
    assert delta.sessions == {"s2"}
    assert {k: list(v) for k, v in state.feeds.items()} == feeds_before


def live(n: int, command: str) -> LiveSession:
    return LiveSession(
        session_id=f"sess-{n}",
        agent="a",
        env="prod",
        host="h",
        pid=None,
        status="active",
        started_at=1,
        last_seen=2,
        current_action=command,
    )


@pytest.mark.parametrize("count", [1, MAX_ACTIVITY_ENTRIES, MAX_ACTIVITY_ENTRIES + 1, 1000])
def test_hub_cuts_activity_into_messages_that_fit(count: int) -> None:
    # The worst case for size: 200 characters that JSON escapes six bytes each.
    sessions = [live(n, "\x01" * 500) for n in range(count)]
    messages = _activity(sessions, now=0.0)
    assert len(messages) == -(-count // MAX_ACTIVITY_ENTRIES)
    seen = []
    for data in messages:
        assert len(data.encode()) <= MAX_MESSAGE_BYTES
        msg = decode(HubToOperatorAdapter, data)
        assert isinstance(msg, ActivityEvent)
        assert all(len(e.current_action) == 200 for e in msg.sessions)
        seen += [e.session_id for e in msg.sessions]
    assert seen == [s.session_id for s in sessions]


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ('{"type":"activity","sessions":[]}', "invalid"),
        (
            '{"type":"activity","sessions":[{"session_id":"s","last_seen":1,"rate":1,"rate":2}]}',
            "duplicate_key",
        ),
        ('{"type":"activity","sessions":[{"session_id":"s","last_seen":-1}]}', "invalid"),
        (
            encode(
                ActivityEvent(
                    sessions=tuple(SessionActivity(session_id=f"s{n}", last_seen=1) for n in range(2))
                )
            ).replace('"s1"', '"s1","status":"killed"'),
            "invalid",
        ),
    ],
)
def test_malformed_activity_is_refused_with_a_reason(frame: str, code: str) -> None:
    with pytest.raises(ProtocolError) as err:
        decode(HubToOperatorAdapter, frame)
    assert err.value.code == code, err.value.message


def test_too_many_entries_in_one_message_is_refused() -> None:
    entries = ",".join(f'{{"session_id":"s{n}","last_seen":1}}' for n in range(MAX_ACTIVITY_ENTRIES + 1))
    with pytest.raises(ProtocolError) as err:
        decode(HubToOperatorAdapter, '{"type":"activity","sessions":[' + entries + "]}")
    assert err.value.code == "invalid"
