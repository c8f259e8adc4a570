"""Bad input gets a clear error; the hub keeps serving everyone else."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from agent_shim import Shim
from agent_shim.protocol import PROTOCOL_VERSION

from .conftest import Tower


def hello(env: str = "dev") -> str:
    return json.dumps({"type": "hello", "protocol": PROTOCOL_VERSION, "agent": "raw", "env": env})


async def raw_agent(tower: Tower, token: str | None = None):  # type: ignore[no-untyped-def]
    headers = {"Authorization": f"Bearer {token or tower.tokens['agent']}"}
    ws = await connect(tower.url + "/agent", additional_headers=headers, compression=None, proxy=None)
    await ws.send(hello())
    welcome = json.loads(await ws.recv())
    assert welcome["type"] == "welcome"
    return ws


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("this is not json", "bad_json"),
        (b"\xff\xfe\x00binary", "bad_encoding"),
        ('{"type": "launch_missiles"}', "unknown_type"),
        ('{"no_type": 1}', "unknown_type"),
        (
            '{"type": "started", "action_id": "x1", "digest": "' + "a" * 64 + '", "started_at": "now"}',
            "invalid",
        ),
        (
            '{"type": "started", "action_id": "x1", "digest": "'
            + "a" * 64
            + '", "started_at": 1, "extra": 1}',
            "invalid",
        ),
        ('{"type": "report", "action_id": 5}', "invalid"),
        (
            '{"type": "started", "action_id": "nope", "digest": "' + "a" * 64 + '", "started_at": 1}',
            "unknown_action",
        ),
        (
            '{"type": "decide", "req": "1", "action_id": "x", "digest": "' + "a" * 64 + '", "approve": true}',
            "unknown_type",
        ),
    ],
)
async def test_bad_frames_get_a_reason_and_the_connection_survives(
    tower: Tower, frame: str | bytes, code: str
) -> None:
    ws = await raw_agent(tower)
    try:
        await ws.send(frame)
        err = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert err["type"] == "error"
        assert err["code"] == code, err
        assert err["message"]
        # still usable: a well-formed but unknown-action report gets its own answer
        await ws.send(
            json.dumps({"type": "started", "action_id": "again", "digest": "b" * 64, "started_at": 1})
        )
        err2 = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert err2["code"] == "unknown_action"
    finally:
        await ws.close()


async def test_oversize_frame_closes_only_that_connection(tower: Tower) -> None:
    async with Shim(tower.url, tower.tokens["agent"], agent="good", env="dev") as good:
        ws = await raw_agent(tower)
        await ws.send("x" * (1024 * 1024))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        approved = await good.run_shell("true")
        assert approved.exit_code == 0 and good.connected


async def test_repeated_bad_frames_disconnect_the_peer(tower: Tower) -> None:
    ws = await raw_agent(tower)
    with pytest.raises(ConnectionClosed) as closed:
        for _ in range(20):
            await ws.send("garbage")
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_first_message_must_be_hello(tower: Tower) -> None:
    headers = {"Authorization": f"Bearer {tower.tokens['agent']}"}
    async with connect(tower.url + "/agent", additional_headers=headers, proxy=None) as ws:
        await ws.send(json.dumps({"type": "self_paused", "reason": "x"}))
        err = json.loads(await ws.recv())
        assert err["code"] == "expected_hello" and err["fatal"] is True


async def test_wrong_protocol_version_is_refused(tower: Tower) -> None:
    headers = {"Authorization": f"Bearer {tower.tokens['agent']}"}
    async with connect(tower.url + "/agent", additional_headers=headers, proxy=None) as ws:
        await ws.send(json.dumps({"type": "hello", "protocol": 99, "agent": "x", "env": "dev"}))
        err = json.loads(await ws.recv())
        assert err["code"] == "protocol_version"


@pytest.mark.parametrize("header", [None, "Bearer nope", "Basic Zm9vOmJhcg==", "Bearer "])
async def test_bad_tokens_get_401_before_upgrade(tower: Tower, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    with pytest.raises(InvalidStatus) as err:
        await connect(tower.url + "/agent", additional_headers=headers, proxy=None)
    assert err.value.response.status_code == 401


async def test_healthz(tower: Tower) -> None:
    url = tower.url.replace("ws://", "http://") + "/healthz"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
    assert json.loads(body)["status"] == "ok"
