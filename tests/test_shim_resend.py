"""The shim keeps what it sent until the hub confirms processing it (an answer
to a later proposal), so a hub killed with frames in its socket buffer loses
nothing: the rest is re-sent after reconnecting."""

from __future__ import annotations

import json

from agent_shim import Action, Shim
from agent_shim.protocol import Propose, Report, Started, encode


def propose(aid: str, verdict: str = "allow") -> str:
    action = Action(action_id=aid, kind="shell", command="ls")
    return encode(
        Propose(action=action, digest=action.digest(), risk="read", verdict=verdict, proposed_at=1)  # type: ignore[arg-type]
    )


def started(aid: str) -> str:
    return encode(Started(action_id=aid, digest="0" * 64, started_at=1))


def report(aid: str) -> str:
    return encode(Report(action_id=aid, digest="0" * 64, status="succeeded", finished_at=2))


def kinds(shim: Shim) -> list[tuple[str, str]]:
    out = []
    for _, data in shim._unconfirmed:
        obj = json.loads(data)
        out.append((obj["type"], obj.get("action_id") or obj["action"]["action_id"]))
    return out


def test_an_answer_confirms_everything_sent_before_it() -> None:
    shim = Shim("ws://127.0.0.1:9", "t", agent="a", env="dev")
    for data in (propose("a1"), started("a1"), propose("a2"), report("a1")):
        shim._sent(data)
    shim._confirm("a1")
    assert kinds(shim) == [("started", "a1"), ("propose", "a2"), ("report", "a1")]
    shim._confirm("a2")
    assert kinds(shim) == [("report", "a1")]
    shim._confirm("unknown")  # an answer to nothing we sent changes nothing
    assert kinds(shim) == [("report", "a1")]


def test_unconfirmed_log_is_bounded() -> None:
    shim = Shim("ws://127.0.0.1:9", "t", agent="a", env="dev", outbox_limit=3)
    for i in range(10):
        shim._sent(propose(f"a{i}"))
    assert [aid for _, aid in kinds(shim)] == ["a7", "a8", "a9"]
    assert shim._unconfirmed_keys == {"a7", "a8", "a9"}
