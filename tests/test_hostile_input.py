"""Hostile input: fuzzed, duplicate-key, NaN, huge, deep, binary frames;
handshakes that never finish; idle connections by the thousand; tokens used
where they do not belong. Each gets a clear error or close code, and every
other session keeps working."""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import AfterValidator, BaseModel, ConfigDict, TypeAdapter
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from agent_shim import Action, Shim, new_action_id
from agent_shim.policy import Rule
from agent_shim.protocol import (
    PROTOCOL_VERSION,
    AgentMessageAdapter,
    HubToAgentAdapter,
    HubToOperatorAdapter,
    OperatorMessageAdapter,
    Propose,
    ProtocolError,
    decode,
    encode,
)
from towerctl.hub.server import Hub, HubConfig
from towerctl.tokens import create_token

from .conftest import Tower, wait_for

ADAPTERS: list[TypeAdapter[Any]] = [
    AgentMessageAdapter,
    OperatorMessageAdapter,
    HubToAgentAdapter,
    HubToOperatorAdapter,
]
D = "ab" * 32


def propose_json(
    verdict: str = "ask",
    *,
    command: str = "kubectl delete pod web-0",
    explanation: str = "needs approval",
    rule: Rule | None = None,
) -> str:
    action = Action(action_id="act-1", kind="shell", command=command, target="prod")
    return encode(
        Propose(
            action=action,
            digest=action.digest(),
            risk="destructive",
            reasons=("deletes a pod",) if rule is None else ("deletes: a pod", "x:y"),
            verdict=verdict,  # type: ignore[arg-type]
            rule=rule,
            explanation=explanation,
            proposed_at=1,
        )
    )


VALID_FRAMES = [
    propose_json(),
    # Colons inside strings (the hub's own explanations say "prod: ..."), with
    # and without a model whose validators may rewrite its strings (Rule).
    propose_json(command="curl http://a:8080/x", explanation="prod: destructive actions need approval"),
    propose_json(
        command="kubectl delete pod web-0",
        explanation="prod: rule 1",
        rule=Rule(match="kubectl delete*", verdict="ask", reason="prod: deletes need a look"),
    ),
    json.dumps(
        {"type": "hello", "protocol": PROTOCOL_VERSION, "agent": "bot", "env": "dev", "session_id": "s-1"}
    ),
    json.dumps({"type": "started", "action_id": "act-1", "digest": D, "started_at": 5}),
    json.dumps(
        {
            "type": "report",
            "action_id": "act-1",
            "digest": D,
            "status": "failed",
            "exit_code": 2,
            "finished_at": 9,
        }
    ),
    json.dumps({"type": "decide", "req": "r1", "action_id": "act-1", "digest": D, "approve": False}),
    json.dumps({"type": "self_paused", "reason": "rate"}),
]


def only_protocol_errors(adapter: TypeAdapter[Any], data: str | bytes) -> None:
    try:
        decode(adapter, data)
    except ProtocolError as exc:
        assert exc.code and exc.message
    # Anything else (ValueError, RecursionError, KeyError, ...) fails the test.


# ------------------------------------------------------------ parser fuzz


@settings(max_examples=300, deadline=None, database=None)
@given(
    data=st.one_of(st.binary(max_size=300), st.text(max_size=300)), which=st.integers(0, len(ADAPTERS) - 1)
)
def test_decode_raises_only_protocol_error_on_arbitrary_input(data: str | bytes, which: int) -> None:
    only_protocol_errors(ADAPTERS[which], data)


JSON_JUNK = st.sampled_from(
    [
        "NaN",
        "-Infinity",
        "1e999",
        str(2**64),
        "9" * 5000,
        "[" * 3000,
        '"\\ud800"',
        "{}",
        "[]",
        "null",
        "true",
        '"x"',
    ]
)


@st.composite
def mutated(draw: st.DrawFn) -> str | bytes:
    frame = draw(st.sampled_from(VALID_FRAMES))
    how = draw(st.sampled_from(["truncate", "flip", "insert", "dup_key", "swap_value", "bytes"]))
    if how == "truncate":
        return frame[: draw(st.integers(0, len(frame)))]
    if how == "flip":
        raw = bytearray(frame.encode())
        i = draw(st.integers(0, len(raw) - 1))
        raw[i] ^= 1 << draw(st.integers(0, 7))
        return bytes(raw)
    if how == "insert":
        i = draw(st.integers(0, len(frame)))
        return frame[:i] + draw(st.one_of(JSON_JUNK, st.text(max_size=8))) + frame[i:]
    obj = json.loads(frame)
    key = draw(st.sampled_from(sorted(obj)))
    if how == "dup_key":
        body = frame[:-1] + f",{json.dumps(key)}:{draw(JSON_JUNK)}" + "}"
        return body
    if how == "swap_value":
        return frame.replace(json.dumps(obj[key]), draw(JSON_JUNK), 1)
    return frame.encode("utf-16")


@settings(max_examples=300, deadline=None, database=None)
@given(frame=mutated(), which=st.integers(0, len(ADAPTERS) - 1))
def test_decode_raises_only_protocol_error_on_mutated_messages(frame: str | bytes, which: int) -> None:
    only_protocol_errors(ADAPTERS[which], frame)


@settings(max_examples=200, deadline=None, database=None)
@given(frame=st.sampled_from(VALID_FRAMES), data=st.data())
def test_any_repeated_key_is_refused_even_with_the_same_value(frame: str, data: st.DataObject) -> None:
    """The fast path (count of ':' against the fields pydantic saw) must never
    let a repeated key through, at the top level or in the nested action,
    whether or not the repeated value is valid on its own."""
    obj = json.loads(frame)
    nested = "action" in obj and data.draw(st.booleans())
    target = obj["action"] if nested else obj
    key = data.draw(st.sampled_from(sorted(target)))
    # A kept value written with a \u003a escape holds a colon the frame's
    # count does not see: the count must not be fooled by it.
    value = data.draw(
        st.sampled_from(
            [json.dumps(target[key]), '"a:b"', "1", "null", '"\\u003a"', '"x\\u003a:"', '"::"', '"\\u003A"']
        )
    )
    pair = f"{json.dumps(key)}:{value}"
    mutated = (
        frame.replace('"action":{', '"action":{' + pair + ",", 1) if nested else frame[:-1] + "," + pair + "}"
    )
    adapter = OperatorMessageAdapter if obj["type"] == "decide" else AgentMessageAdapter
    with pytest.raises(ProtocolError) as err:
        decode(adapter, mutated)
    assert err.value.code == "duplicate_key", (mutated, err.value.message)


def collect_frames(n: int) -> list[str | bytes]:
    """Hostile frames drawn by hypothesis, to replay against a live hub."""
    out: list[str | bytes] = []

    @settings(
        max_examples=n,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(frame=st.one_of(mutated(), st.binary(max_size=64), st.text(max_size=64)))
    def collect(frame: str | bytes) -> None:
        out.append(frame)

    collect()
    return out


async def raw_agent(tower: Tower, token: str = "agent", env: str = "dev") -> ClientConnection:
    ws = await connect(
        tower.url + "/agent",
        additional_headers={"Authorization": f"Bearer {tower.tokens[token]}"},
        compression=None,
        proxy=None,
    )
    await ws.send(json.dumps({"type": "hello", "protocol": PROTOCOL_VERSION, "agent": "fuzz", "env": env}))
    return ws


async def allowed(shim: Shim, what: str) -> None:
    approved = await asyncio.wait_for(
        shim.admit(Action(action_id=new_action_id(), kind="shell", command=f"echo {what}")), 5
    )
    approved.set_result(0, b"ok")
    shim.report(approved)


async def test_live_hub_survives_fuzzed_frames(tower: Tower) -> None:
    frames = collect_frames(150)
    async with Shim(tower.url, tower.tokens["agent"], agent="bystander", env="dev") as good:
        ws = await raw_agent(tower)
        assert json.loads(await ws.recv())["type"] == "welcome"
        codes: set[str] = set()
        closes: set[int] = set()
        for i, frame in enumerate(frames):
            # After each hostile frame, a probe the hub must answer (an allowed
            # read): everything before its ack is the hub's answer to the frame.
            probe = Action(action_id=f"probe-{i}", kind="shell", command="ls")
            probe_frame = encode(
                Propose(action=probe, digest=probe.digest(), risk="read", verdict="allow", proposed_at=1)
            )
            try:
                await ws.send(frame)
                await ws.send(probe_frame)
                while True:
                    reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
                    if reply.get("action_id") == probe.action_id:
                        assert reply["type"] == "ack", reply
                        break
                    assert reply["type"] in ("error", "ack", "decision"), reply
                    if reply["type"] == "error":
                        codes.add(reply["code"])
                        assert reply["message"]
            except ConnectionClosed as exc:
                # Only a policy close (strikes, 1008) or too big (1009), never an internal error (1011).
                assert exc.rcvd is not None and exc.rcvd.code in (1008, 1009), exc
                closes.add(exc.rcvd.code)
                ws = await raw_agent(tower)
                assert json.loads(await ws.recv())["type"] == "welcome"
            if i % 10 == 0:
                await allowed(good, f"alive {i}")  # the bystander's session keeps working
        await ws.close()
        assert good.connected
        await allowed(good, "after the fuzz")
    assert "bad_json" in codes and len(codes) >= 3, codes  # the fuzz reached several checks
    assert 1008 in closes  # strikes closed the fuzzing peer at least once


# ------------------------------------------------------ explicit rejections

HOSTILE = [
    # duplicate keys: pydantic alone would keep the last value ("allow")
    (propose_json("deny")[:-1] + ',"verdict":"allow"}', "duplicate_key"),
    ('{"type":"self_paused","reason":"a","reason":"b"}', "duplicate_key"),
    # inside the nested action, where the digest would be computed over the last value
    (
        propose_json().replace('"command":"kubectl', '"command":"rm -rf /","command":"kubectl'),
        "duplicate_key",
    ),
    # with colons inside strings (the slower path decides)
    ('{"type":"self_paused","reason":"a:b:c","reason":"http://x"}', "duplicate_key"),
    ('{"type":"self_paused","reason":"a","x":{"k":1,"k":2}}', "duplicate_key"),
    ('{"type":"started","action_id":"x","digest":"' + D + '","started_at":NaN}', "bad_number"),
    ('{"type":"started","action_id":"x","digest":"' + D + '","started_at":Infinity}', "bad_number"),
    ('{"type":"started","action_id":"x","digest":"' + D + '","started_at":-Infinity}', "bad_number"),
    ('{"type":"started","action_id":"x","digest":"' + D + '","started_at":1e999}', "bad_number"),
    ('{"type":"started","action_id":"x","digest":"' + D + f'","started_at":{2**64}}}', "number_too_large"),
    (
        '{"type":"started","action_id":"x","digest":"' + D + f'","started_at":{"9" * 5000}}}',
        "number_too_large",
    ),
    ('{"type":"self_paused","reason":' + "[" * 10_000 + "]" * 10_000 + "}", "too_deep"),
    ("[" * 10_000 + "]" * 10_000, "too_deep"),
    ('{"a":' * 10_000 + "1" + "}" * 10_000, "too_deep"),
    (b'{"type":"self_paused","reason":"\xff\xfe"}', "bad_encoding"),
]


def _ids(cases: list[tuple[str | bytes, str]]) -> list[str]:
    return [f"{i}-{code}" for i, (_, code) in enumerate(cases)]


@pytest.mark.parametrize(("frame", "code"), HOSTILE, ids=_ids(HOSTILE))
def test_decode_rejects_with_a_clear_reason(frame: str | bytes, code: str) -> None:
    with pytest.raises(ProtocolError) as err:
        decode(AgentMessageAdapter, frame)
    assert err.value.code == code, err.value.message
    assert err.value.message


class _AddsAColon(BaseModel):
    """A model whose validator rewrites a string: its kept strings do not tell
    how many colons the frame held."""

    model_config = ConfigDict(strict=True, extra="forbid")
    note: Annotated[str, AfterValidator(lambda s: s + ":")]


def test_a_validator_that_rewrites_strings_cannot_hide_a_repeated_key() -> None:
    with pytest.raises(ProtocolError) as err:
        decode(TypeAdapter(_AddsAColon), '{"note":"x","note":"y"}')
    assert err.value.code == "duplicate_key"
    assert decode(TypeAdapter(_AddsAColon), '{"note":"y"}').note == "y:"


def test_duplicate_key_cannot_flip_an_operator_decision() -> None:
    frame = '{"type":"decide","req":"1","action_id":"x","digest":"' + D + '","approve":false,"approve":true}'
    with pytest.raises(ProtocolError) as err:
        decode(OperatorMessageAdapter, frame)
    assert err.value.code == "duplicate_key" and "approve" in err.value.message


def test_valid_frames_in_any_spelling_still_decode() -> None:
    for frame in VALID_FRAMES:
        spaced = json.dumps(json.loads(frame), indent=2, sort_keys=True)
        adapter = OperatorMessageAdapter if '"decide"' in frame else AgentMessageAdapter
        assert decode(adapter, spaced) == decode(adapter, frame)


HOSTILE_LIVE = [*HOSTILE, (b'{"type":"self_paused","reason":"binary"}', "binary_frame")]


@pytest.mark.parametrize(("frame", "code"), HOSTILE_LIVE, ids=_ids(HOSTILE_LIVE))
async def test_hub_rejects_hostile_frames_and_keeps_the_connection(
    tower: Tower, frame: str | bytes, code: str
) -> None:
    ws = await raw_agent(tower)
    try:
        assert json.loads(await ws.recv())["type"] == "welcome"
        await ws.send(frame)
        err = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert err["type"] == "error" and err["code"] == code, err
        assert err["message"]
        # The same connection still works: a well-formed frame gets its own answer.
        await ws.send(json.dumps({"type": "started", "action_id": "nope", "digest": D, "started_at": 1}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["code"] == "unknown_action"
    finally:
        await ws.close()
    # Nothing of a rejected frame reached the store.
    assert tower.hub.store is not None
    assert await tower.hub.store.action("act-1") is None


async def test_operator_endpoint_rejects_duplicate_key_decision(tower: Tower) -> None:
    async with Shim(tower.url, tower.tokens["agent"], agent="a", env="prod") as shim:
        action = Action(action_id=new_action_id(), kind="shell", command="kubectl delete pod db-0")
        task = asyncio.create_task(shim.admit(action))
        async with tower.operator("admin") as op:
            await wait_for(lambda: action.action_id in op.pending)
        ws = await connect(
            tower.url + "/operator",
            additional_headers={"Authorization": f"Bearer {tower.tokens['admin']}"},
            proxy=None,
        )
        try:
            await ws.send(json.dumps({"type": "hello", "protocol": PROTOCOL_VERSION}))
            frame = (
                f'{{"type":"decide","req":"r","action_id":"{action.action_id}","digest":"{action.digest()}",'
                '"approve":false,"approve":true}'
            )
            await ws.send(frame)

            async def error() -> dict[str, Any]:
                while True:
                    msg = json.loads(await ws.recv())
                    if msg["type"] in ("error", "result"):
                        return msg  # type: ignore[no-any-return]

            got = await asyncio.wait_for(error(), 5)
            assert got["type"] == "error" and got["code"] == "duplicate_key", got
        finally:
            await ws.close()
        assert not task.done()  # still pending: neither approved nor denied
        assert tower.hub.service is not None and action.action_id in tower.hub.service.reg.pending
        task.cancel()


# ------------------------------------------------- tokens out of their place


async def test_dev_agent_token_cannot_open_a_prod_session(tower: Tower) -> None:
    ws = await raw_agent(tower, token="agent_dev", env="prod")
    err = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert err["type"] == "error" and err["code"] == "forbidden" and err["fatal"] is True
    assert "prod" in err["message"]
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert tower.hub.store is not None and tower.hub.service is not None
    assert not [s for s in tower.hub.service.reg.sessions.values() if s.env == "prod"]


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "set_policy", "req": "1", "env": "dev", "policy": {"read": "allow", "write": "allow",
         "destructive": "allow"}},
        {"type": "freeze", "req": "1", "env": "dev", "frozen": True},
        {"type": "session_control", "req": "1", "session_id": "SID", "op": "kill"},
        {"type": "decide", "req": "1", "action_id": "AID", "digest": "DIGEST", "approve": True},
    ],
 ids=["set_policy", "freeze", "kill", "decide"])  # fmt: skip
async def test_agent_token_cannot_send_operator_messages(tower: Tower, frame: dict[str, Any]) -> None:
    svc = tower.hub.service
    assert svc is not None
    async with Shim(tower.url, tower.tokens["agent"], agent="victim", env="prod") as victim:
        action = Action(action_id=new_action_id(), kind="shell", command="kubectl delete pod payments-0")
        task = asyncio.create_task(victim.admit(action))
        await wait_for(lambda: action.action_id in svc.reg.pending)
        policy_before = svc.reg.policy("dev")
        text = (
            json.dumps(frame)
            .replace("SID", victim.session_id)
            .replace("AID", action.action_id)
            .replace("DIGEST", action.digest())
        )
        ws = await raw_agent(tower)
        try:
            assert json.loads(await ws.recv())["type"] == "welcome"
            await ws.send(text)
            err = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert err["type"] == "error" and err["code"] == "unknown_type", err
        finally:
            await ws.close()
        # No effect at all.
        assert svc.reg.policy("dev") == policy_before
        assert not svc.reg.frozen
        assert svc.reg.sessions[victim.session_id].status == "active"
        assert action.action_id in svc.reg.pending and not task.done()
        task.cancel()


# ------------------------------------- half-open handshakes, idle thousands


@pytest.fixture
async def quick_tower(tmp_path: Path) -> AsyncIterator[Tower]:
    """A hub that drops handshakes after 0.5 s."""
    hub = Hub(
        HubConfig(
            host="127.0.0.1",
            port=0,
            db_path=tmp_path / "t.db",
            key_path=tmp_path / "k.key",
            open_timeout_s=0.5,
        )
    )
    await hub.start()
    tower = Tower(hub=hub, db=tmp_path / "t.db", key=tmp_path / "k.key")
    assert hub.store is not None
    tower.tokens["agent"] = await create_token(hub.store, role="agent", name="agent", envs=(), actor="test")
    try:
        yield tower
    finally:
        await hub.stop()


def raise_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"needs {need} file descriptors, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need if hard == resource.RLIM_INFINITY else hard, hard))


async def half_open(port: int, payload: bytes) -> asyncio.StreamReader:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if payload:
        writer.write(payload)
        await writer.drain()
    reader._towerctl_writer = writer  # type: ignore[attr-defined]  # keep it alive
    return reader


async def test_unfinished_handshakes_are_dropped_and_idle_crowds_do_not_slow_agents(
    quick_tower: Tower,
) -> None:
    tower = quick_tower
    n_half, n_idle = 200, 1000
    raise_fd_limit(2 * (n_half + n_idle) + 512)
    port = tower.hub.port
    idle: list[ClientConnection] = []
    half: list[asyncio.StreamReader] = []
    try:
        async with Shim(tower.url, tower.tokens["agent"], agent="worker", env="dev") as worker:
            # ~1,000 idle authenticated sessions (hello done, then silence)...
            async def one_idle(i: int) -> ClientConnection:
                ws = await connect(
                    tower.url + "/agent",
                    additional_headers={"Authorization": f"Bearer {tower.tokens['agent']}"},
                    compression=None,
                    proxy=None,
                    ping_interval=None,
                    open_timeout=30,
                )
                await ws.send(
                    json.dumps(
                        {"type": "hello", "protocol": PROTOCOL_VERSION, "agent": f"idle{i}", "env": "dev"}
                    )
                )
                assert json.loads(await ws.recv())["type"] == "welcome"
                return ws

            for start in range(0, n_idle, 100):
                idle += await asyncio.gather(*(one_idle(i) for i in range(start, start + 100)))
            # ...plus hundreds of connections that never finish the handshake:
            # silent ones and ones that stop half-way through the request.
            t0 = time.monotonic()
            payloads = [b"", b"GET /agent HT", b"GET /agent HTTP/1.1\r\nHost: x\r\nAuthoriz"]
            half = await asyncio.gather(*(half_open(port, payloads[i % 3]) for i in range(n_half)))
            # A normal agent still gets its actions through promptly.
            for i in range(10):
                s = time.monotonic()
                await allowed(worker, f"busy {i}")
                assert time.monotonic() - s < 1.0
            assert (await worker.run_shell("true")).exit_code == 0

            # Every unfinished handshake is closed by the hub within its open timeout.
            async def closed_by_hub(r: asyncio.StreamReader) -> bytes:
                with contextlib.suppress(ConnectionError):
                    return await r.read()
                return b""

            leftovers = await asyncio.wait_for(asyncio.gather(*(closed_by_hub(r) for r in half)), 10)
            elapsed = time.monotonic() - t0
            assert elapsed < 0.5 + 3.0, f"half-open connections held for {elapsed:.1f}s"
            # Dropped, never upgraded: at most an HTTP error, never a 101.
            assert not [x for x in leftovers if x.startswith(b"HTTP/1.1 101")]
            assert worker.connected
            assert all(ws.state.name == "OPEN" for ws in idle)  # the idle ones were left alone
            await allowed(worker, "after")
    finally:
        for r in half:
            r._towerctl_writer.close()  # type: ignore[attr-defined]
        await asyncio.gather(*(ws.close() for ws in idle), return_exceptions=True)
