"""Multi-message frames from the hub to operators (``towerctl.lines.v1``).

* A client that asked for them gets, in one frame, what was queued for it,
  separated by "\\n"; every line decodes, and the messages (and their order)
  are exactly what a one-message-per-frame client gets for the same events.
* A client that did not ask never gets a frame with a newline in it.
* ``OperatorClient`` asks for them and handles every line as it handled a
  frame, a malformed one included.
* The sender's bounds (messages, bytes), and a resync snapshot alone in its frame.

End to end against a real hub on 127.0.0.1 with a real SQLite file; only the
bound tests drive ``OperatorConn`` with a fake connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any, cast

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.typing import Subprotocol

from agent_shim import Shim
from agent_shim.protocol import (
    PROTOCOL_VERSION,
    Alert,
    HubToOperatorAdapter,
    OperatorHello,
    OperatorMessageAdapter,
    OperatorWelcome,
    Snapshot,
    decode,
    encode,
)
from agent_shim.wire import LINES_SUBPROTOCOL, select_lines
from towerctl.auth import Principal
from towerctl.hub.fanout import BATCH_MAX_BYTES, BATCH_MAX_MESSAGES, OperatorConn
from towerctl.operator import OperatorClient

from .conftest import Tower, next_event, wait_for

# ------------------------------------------------------------ raw clients


class RawOperator:
    """A websockets operator client that records every frame it receives."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[str] = []
        self.changed = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for raw in self.ws:
                assert isinstance(raw, str)
                self.frames.append(raw)
                self.changed.set()

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Every message, frames split on the separator, each decoded strictly."""
        out = []
        for frame in self.frames:
            for line in frame.split("\n"):
                decode(HubToOperatorAdapter, line)  # raises on anything not a valid message
                out.append(json.loads(line))
        return out

    async def wait_message(self, match: Callable[[dict[str, Any]], bool], timeout: float = 10) -> None:
        async def scan() -> None:
            while not any(match(m) for m in self.messages):
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(scan(), timeout)

    async def close(self) -> None:
        await self.ws.close()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def raw_operator(
    tower: Tower, who: str, hello: dict[str, Any], *, lines: bool = False, offer: tuple[str, ...] = ()
) -> RawOperator:
    """``lines``: offer ``towerctl.lines.v1``; ``offer``: these subprotocols."""
    offered = offer or ((LINES_SUBPROTOCOL,) if lines else ())
    ws = await connect(
        tower.url + "/operator",
        additional_headers={"Authorization": f"Bearer {tower.tokens[who]}"},
        subprotocols=[Subprotocol(name) for name in offered] or None,
        compression=None,
        proxy=None,
        max_size=None,
    )
    assert ws.subprotocol == select_lines(None, offered)
    await ws.send(json.dumps({"type": "hello", "protocol": PROTOCOL_VERSION, **hello}))
    welcome = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert welcome["type"] == "welcome", welcome
    return RawOperator(ws)


def is_alert(text: str) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m["type"] == "alert" and m["message"] == text


def between(messages: list[dict[str, Any]], start: str, end: str) -> list[dict[str, Any]]:
    """The messages after the alert ``start`` up to and including the alert ``end``."""
    i = next(k for k, m in enumerate(messages) if is_alert(start)(m))
    j = next(k for k, m in enumerate(messages) if is_alert(end)(m))
    return messages[i + 1 : j + 1]


# ------------------------------------------------------------ end to end


async def test_batching_client_gets_multi_message_frames_with_the_same_messages(tower: Tower) -> None:
    svc = tower.hub.service
    assert svc is not None
    batched = await raw_operator(tower, "admin", {"client": "raw-batch"}, lines=True)
    single = await raw_operator(tower, "viewer", {"client": "raw-single"})
    try:
        await wait_for(lambda: len(svc.fanout.operators) == 2)
        assert tower.operator_conn("admin").batch is True
        assert tower.operator_conn("viewer").batch is False
        svc.alert("info", "start")

        # Several agents at once, each running actions as fast as it can...
        async def agent(n: int) -> list[str]:
            ids = []
            async with Shim(tower.url, tower.tokens["agent"], agent=f"busy-{n}", env="dev") as shim:
                for k in range(8):
                    result = await shim.run_shell(f"echo {n}-{k}")
                    assert result.exit_code == 0
                    ids.append(result.action.action_id)
            return ids

        action_ids = [aid for ids in await asyncio.gather(*(agent(n) for n in range(6))) for aid in ids]

        def finished(client: RawOperator) -> set[str]:
            return {
                m["action"]["action"]["action_id"]
                for m in client.messages
                if m["type"] == "action" and m["action"]["state"] == "succeeded"
            }

        # Outcomes are announced once the hub's store commits them.
        await wait_for(lambda: finished(batched) >= set(action_ids), 10)
        # ...and a burst the hub emits in one go (as a policy change to a busy
        # environment would), so at least one frame certainly holds several.
        for k in range(50):
            svc.alert("info", f"burst {k}\nwith a newline inside the text")
        svc.alert("info", "end")
        await batched.wait_message(is_alert("end"))
        await single.wait_message(is_alert("end"))

        assert not any("\n" in frame for frame in single.frames)
        multi = [f for f in batched.frames if "\n" in f]
        assert multi, "no frame held more than one message: the test proves nothing"
        assert max(f.count("\n") + 1 for f in batched.frames) <= BATCH_MAX_MESSAGES
        # The same messages in the same order: nothing lost, nothing reordered.
        got_batched = between(batched.messages, "start", "end")
        got_single = between(single.messages, "start", "end")
        assert got_batched == got_single
        assert len(batched.frames) < len(single.frames)
        burst = [m["message"] for m in got_batched if m["type"] == "alert"]
        assert burst == [f"burst {k}\nwith a newline inside the text" for k in range(50)] + ["end"]
        # Every action's events arrive in the order of its states.
        order = ["pending", "allowed", "approved", "running", "succeeded"]
        for aid in action_ids:
            states = [
                m["action"]["state"]
                for m in got_batched
                if m["type"] == "action" and m["action"]["action"]["action_id"] == aid
            ]
            assert states and states[-1] == "succeeded", (aid, states)
            ranks = [order.index(s) for s in states if s in order]
            assert ranks == sorted(ranks), (aid, states)
        assert tower.operator_conn("admin").resyncs == 0 and tower.operator_conn("viewer").resyncs == 0
    finally:
        await batched.close()
        await single.close()


async def test_client_that_does_not_offer_lines_never_gets_a_newline(tower: Tower) -> None:
    svc = tower.hub.service
    assert svc is not None
    single = await raw_operator(tower, "viewer", {"client": "raw-single"})
    try:
        await wait_for(lambda: len(svc.fanout.operators) == 1)
        for k in range(300):
            svc.alert("info", f"burst {k}")
        await single.wait_message(is_alert("burst 299"))
        assert all("\n" not in frame for frame in single.frames)
        # snapshot, operators, 300 alerts: one message per frame.
        assert len(single.frames) == len(single.messages) == 302
    finally:
        await single.close()


async def test_operator_client_asks_for_batches_and_sees_every_event(tower: Tower) -> None:
    svc = tower.hub.service
    assert svc is not None
    async with tower.operator("admin") as op:
        assert tower.operator_conn("admin").batch is True
        for k in range(600):  # more than one frame's worth
            svc.alert("info", f"burst {k}")
        seen: list[str] = []

        async def collect() -> None:
            async for msg in op.events():
                if isinstance(msg, Alert) and msg.message.startswith("burst "):
                    seen.append(msg.message)
                    if len(seen) == 600:
                        return

        await asyncio.wait_for(collect(), 10)
        assert seen == [f"burst {k}" for k in range(600)]
        # Requests and their results still work with replies inside batches.
        async with Shim(tower.url, tower.tokens["agent"], agent="a", env="dev") as shim:
            await shim.run_shell("true")
            await wait_for(lambda: any(s.agent == "a" for s in op.sessions.values()))
        await op.freeze("dev", True, "test")
        await next_event(op, lambda m: getattr(m, "type", "") == "frozen" and m.env == "dev")
        assert "dev" in op.frozen


# ------------------------------------------- a malformed line in a frame


def _snapshot() -> str:
    return encode(Snapshot(sessions=(), pending=(), policies={}, hub_time=1))


async def _client_against(frames: list[str]) -> tuple[list[str], bool, str]:
    """Run ``OperatorClient`` against a fake hub that sends ``frames`` after
    the welcome; the types of the events it saw, whether it marked itself
    closed, and what ``close()`` raised."""

    async def handler(ws: ServerConnection) -> None:
        hello = decode(OperatorMessageAdapter, await ws.recv())
        assert isinstance(hello, OperatorHello) and ws.subprotocol == LINES_SUBPROTOCOL
        await ws.send(encode(OperatorWelcome(protocol=PROTOCOL_VERSION, operator="alice", role="admin")))
        for frame in frames:
            await ws.send(frame)
        await ws.wait_closed()

    lines = [Subprotocol(LINES_SUBPROTOCOL)]
    async with serve(handler, "127.0.0.1", 0, compression=None, subprotocols=lines) as server:
        port = server.sockets[0].getsockname()[1]
        client = OperatorClient(f"ws://127.0.0.1:{port}", "token", timeout=5)
        await client.connect()
        seen: list[str] = []

        async def drain() -> None:
            async for msg in client.events():
                seen.append(msg.type if not isinstance(msg, Alert) else f"alert:{msg.message}")

        await asyncio.wait_for(drain(), 5)
        raised = ""
        try:
            await client.close()
        except Exception as exc:
            raised = f"{type(exc).__name__}:{getattr(exc, 'code', '')}"
        return seen, client.closed.is_set(), raised


async def test_malformed_line_is_handled_like_a_malformed_frame() -> None:
    alert = encode(Alert(level="info", message="before"))
    after = encode(Alert(level="info", message="after"))
    bad = '{"type": "alert", "level": "loud"'
    as_frames = await _client_against([_snapshot(), alert, bad, after])
    as_lines = await _client_against(["\n".join([_snapshot(), alert, bad, after])])
    assert as_lines == as_frames
    seen, closed, raised = as_lines
    assert seen == ["snapshot", "alert:before"] and closed
    assert raised.startswith("ProtocolError")


# ------------------------------------------------------ the sender's bounds


class FakeConn:
    """Records what the sender hands to the socket (unit tests of the bounds only)."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, data: str) -> None:
        self.sent.append(data)


def make_conn(
    snapshot: Callable[[], str] = lambda: "SNAPSHOT", **kwargs: Any
) -> tuple[OperatorConn, FakeConn]:
    fake = FakeConn()
    principal = Principal(token_id="t", name="alice", role="admin", envs=())
    return OperatorConn(cast(ServerConnection, fake), principal, snapshot, **kwargs), fake


def _lines(sent: list[str]) -> list[str]:
    return [line for frame in sent for line in frame.split("\n")]


async def test_sender_bounds_a_frame_by_message_count() -> None:
    op, fake = make_conn(batch=True)
    items = [json.dumps({"n": k}) for k in range(2 * BATCH_MAX_MESSAGES + 10)]
    for item in items:
        op.push(item)
    op.start()
    try:
        await wait_for(lambda: op.backlog == 0 and len(_lines(fake.sent)) == len(items))
        assert [f.count("\n") + 1 for f in fake.sent] == [BATCH_MAX_MESSAGES, BATCH_MAX_MESSAGES, 10]
        assert _lines(fake.sent) == items
    finally:
        await op.stop()


async def test_sender_bounds_a_frame_by_utf8_bytes_and_sends_a_big_message_alone() -> None:
    op, fake = make_conn(batch=True, batch_bytes=350)
    small = "a" * 100
    wide = "é" * 100  # 200 bytes in UTF-8
    big = "b" * 1000
    for item in [small, small, small, small, wide, small, big, small]:
        op.push(item)
    op.start()
    try:
        await wait_for(lambda: op.backlog == 0 and len(_lines(fake.sent)) == 8)
        assert fake.sent == [
            "\n".join([small] * 3),  # 302 bytes; a fourth would be 403
            "\n".join([small, wide]),  # 301 bytes; counted in bytes, not characters
            small,  # the big one does not fit after it...
            big,  # ...and goes out alone although it is beyond the bound
            small,
        ]
        assert BATCH_MAX_BYTES < 16 * 256 * 1024
    finally:
        await op.stop()


async def test_resync_snapshot_is_a_frame_of_its_own_and_replies_keep_their_order() -> None:
    op, fake = make_conn(batch=True, limit=5)
    op.push("e0")
    op.reply("r1")
    for k in range(1, 6):
        op.push(f"e{k}")  # the fifth overflows: events dropped, the reply kept
    assert op.resyncs == 1 and op.backlog == 1
    op.push("dropped")  # a resync is due: the snapshot covers it
    op.reply("r2")
    op.start()
    try:
        await wait_for(lambda: op.backlog == 0 and len(fake.sent) == 2)
        assert fake.sent == ["SNAPSHOT", "r1\nr2"]
        op.push("e6")
        op.push("e7")
        await wait_for(lambda: len(fake.sent) == 3)
        assert fake.sent[2] == "e6\ne7"  # both queued before the sender ran
    finally:
        await op.stop()


async def test_sender_without_batch_sends_one_message_per_frame() -> None:
    op, fake = make_conn()
    items = [f"m{k}" for k in range(20)]
    for item in items:
        op.push(item)
    op.start()
    try:
        await wait_for(lambda: len(fake.sent) == 20)
        assert fake.sent == items
    finally:
        await op.stop()


@pytest.mark.parametrize("message", ["line\nbreak", "cr\r\nlf", "tab\there", "uni\u2028sep"])
def test_encoded_messages_never_hold_a_raw_newline(message: str) -> None:
    """The invariant the separator relies on."""
    assert "\n" not in encode(Alert(level="info", message=message))
