"""Several agent messages in one frame, under the ``towerctl.lines.v1``
websocket subprotocol (agent_shim/wire.py says why): negotiated in the
handshake, each line judged on its own, one bad line rejected with a reason
while the lines around it are processed, and peers that do not offer it keep
one message per frame."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from agent_shim import Action, Shim
from agent_shim.protocol import PROTOCOL_VERSION, Propose, Report, encode
from agent_shim.wire import LINES_SUBPROTOCOL, MAX_LINES_PER_FRAME, frame_lines, lines_that_fit

from .conftest import Tower


@pytest.mark.parametrize(
    ("frame", "lines", "parts"),
    [
        ("{}", False, ["{}"]),
        ('{"a":"x\\ny"}', False, ['{"a":"x\\ny"}']),  # an escaped newline is not a separator
        ('{"a":1}\n{"b":2}', True, ['{"a":1}', '{"b":2}']),
        ('{"a":1}\n{"b":2}', False, ['{"a":1}\n{"b":2}']),  # not negotiated: one (bad) message
        ('{"a":1}\n', True, ['{"a":1}', ""]),  # a trailing newline is an empty, bad, line
        (b'{"a":1}\n{"b":2}', True, [b'{"a":1}\n{"b":2}']),  # binary: refused once, whole
    ],
)
def test_frame_lines(frame: str | bytes, lines: bool, parts: list[Any]) -> None:
    assert frame_lines(frame, lines) == parts


@pytest.mark.parametrize(
    ("sizes", "max_bytes", "n"),
    [
        ([10], 1000, 1),
        ([10, 10, 10], 1000, 3),
        ([10, 10, 10], 21, 2),  # two lines and their separator fit, a third does not
        (["é" * 5, "x"], 11, 1),  # bytes, not characters: 10 + 1 + 1 > 11
        ([5000], 1000, 1),  # too big for the budget alone: still sent, alone
        ([10] * (MAX_LINES_PER_FRAME + 5), 10**9, MAX_LINES_PER_FRAME),
    ],
)
def test_lines_that_fit(sizes: list[int | str], max_bytes: int, n: int) -> None:
    queued = [k if isinstance(k, str) else "x" * k for k in sizes]
    assert lines_that_fit(queued, max_bytes) == n


def propose(aid: str, command: str = "ls") -> str:
    action = Action(action_id=aid, kind="shell", command=command)
    return encode(Propose(action=action, digest=action.digest(), risk="read", verdict="allow", proposed_at=1))


def report(aid: str, command: str = "ls") -> str:
    digest = Action(action_id=aid, kind="shell", command=command).digest()
    return encode(Report(action_id=aid, digest=digest, status="succeeded", exit_code=0, finished_at=2))


async def agent(tower: Tower, *, offer: bool, name: str = "lines") -> ClientConnection:
    ws = await connect(
        tower.url + "/agent",
        additional_headers={"Authorization": f"Bearer {tower.tokens['agent']}"},
        subprotocols=[Subprotocol(LINES_SUBPROTOCOL)] if offer else None,
        compression=None,
        proxy=None,
    )
    hello = {"type": "hello", "protocol": PROTOCOL_VERSION, "agent": name, "env": "dev"}
    await ws.send(json.dumps(hello))
    assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "welcome"
    return ws


async def answers(ws: ClientConnection, n: int) -> list[dict[str, Any]]:
    return [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(n)]


def _scrape(url: str, name: str) -> float:
    with urllib.request.urlopen(url, timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


async def metric(tower: Tower, name: str) -> float:
    """From GET /metrics, off the loop (the hub answers on this same loop)."""
    return await asyncio.to_thread(_scrape, tower.url.replace("ws://", "http://") + "/metrics", name)


async def metric_reaches(tower: Tower, name: str, value: float) -> None:
    async def loop() -> None:
        while await metric(tower, name) < value:  # noqa: ASYNC110 - a bounded wait on another process's view
            await asyncio.sleep(0.01)

    await asyncio.wait_for(loop(), 5)


async def test_one_frame_carries_several_messages_and_a_bad_line_fails_alone(tower: Tower) -> None:
    ws = await agent(tower, offer=True)
    try:
        assert ws.subprotocol == LINES_SUBPROTOCOL
        frames0 = await metric(tower, "towerctl_agent_frames_total")
        messages0 = await metric(tower, "towerctl_agent_messages_total")
        await ws.send("\n".join([propose("l-1"), report("l-1"), "not json", propose("l-2")]))
        got = await answers(ws, 3)
        assert [(m["type"], m.get("action_id") or m.get("code")) for m in got] == [
            ("ack", "l-1"),
            ("error", "bad_json"),
            ("ack", "l-2"),
        ]
        assert got[1]["message"] and not got[1]["fatal"]
        await ws.send(report("l-2"))
        await metric_reaches(tower, "towerctl_agent_messages_total", messages0 + 5)
        assert await metric(tower, "towerctl_agent_frames_total") == frames0 + 2
    finally:
        await ws.close()
    store = tower.hub.store
    assert store is not None
    for aid in ("l-1", "l-2"):
        outcome = None
        for _ in range(200):
            outcome = await store.outcome(aid)
            if outcome is not None:
                break
            await asyncio.sleep(0.01)  # the report's write is queued, not awaited
        assert outcome is not None and outcome.status == "succeeded"
    assert (await store.verify()).ok


async def test_a_peer_that_does_not_offer_lines_keeps_one_message_per_frame(tower: Tower) -> None:
    ws = await agent(tower, offer=False)
    try:
        assert ws.subprotocol is None
        await ws.send(propose("o-1") + "\n" + report("o-1"))
        err = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert err["type"] == "error" and err["code"] == "bad_json"
        await ws.send(propose("o-2"))
        ack = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert (ack["type"], ack["action_id"]) == ("ack", "o-2")
    finally:
        await ws.close()


async def test_the_shim_sends_a_report_and_the_next_proposal_in_one_frame(tower: Tower) -> None:
    async with Shim(tower.url, tower.tokens["agent"], agent="lines", env="dev") as shim:
        await shim.wait_connected(5)
        assert shim._ws is not None and shim._ws.subprotocol == LINES_SUBPROTOCOL
        frames0 = await metric(tower, "towerctl_agent_frames_total")
        messages0 = await metric(tower, "towerctl_agent_messages_total")
        for _ in range(5):
            done = await shim.run_shell("true")
            assert done.exit_code == 0
        # five proposals and five reports arrive...
        await metric_reaches(tower, "towerctl_agent_messages_total", messages0 + 10)
        # ...in fewer frames: a report travelled with the next proposal
        assert await metric(tower, "towerctl_agent_frames_total") - frames0 < 10
