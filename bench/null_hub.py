"""The protocol's own ceiling: a hub that exchanges the same frames and does nothing else.

    python bench/null_hub.py            # prints {"event": "listening", "url": ..., "pid": ...}

Why it exists: the echo baseline is one request and one reply per round trip;
an allowed action is three messages (propose, ack, report; ``started`` only
follows an approval), in two frames under ``towerctl.lines.v1`` where a
report travels with the next proposal, as with the real hub. This server
answers ``hello`` with a welcome carrying the
built-in policy and every ``propose`` with an ``allowed`` ack, and reads the
rest without looking at it: no validation, policy, storage or audit. Driven by
the same ``load_raw.py`` load, its rate is the most any hub speaking this
protocol over ``websockets`` on this machine could reach, so
towerctl / null hub says how much of the gap to echo is towerctl's own work
and how much is the protocol's frame count.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys

from websockets.asyncio.server import ServerConnection, serve

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from load_raw import raise_nofile, run_server

from agent_shim.policy import policy_for
from agent_shim.protocol import MAX_MESSAGE_BYTES, PROTOCOL_VERSION
from agent_shim.wire import LINES_SUBPROTOCOL, frame_lines, select_lines


def welcome(hello: dict[str, object]) -> str:
    env = str(hello.get("env", "dev"))
    return json.dumps(
        {
            "type": "welcome",
            "protocol": PROTOCOL_VERSION,
            "session_id": hello.get("session_id") or "s-null",
            "policy": policy_for(None, env).model_dump(mode="json"),
            "policy_version": 0,
            "paused": False,
            "killed": False,
            "hub_key": "00" * 32,
        }
    )


async def agent(conn: ServerConnection) -> None:
    with contextlib.suppress(Exception):
        await conn.send(welcome(json.loads(await conn.recv())))
        lines = conn.subprotocol == LINES_SUBPROTOCOL
        async for frame in conn:
            for raw in frame_lines(frame, lines):
                if isinstance(raw, str) and raw.startswith('{"type":"propose"'):
                    aid = json.loads(raw)["action"]["action_id"]
                    await conn.send(f'{{"type":"ack","action_id":"{aid}","state":"allowed","reason":""}}')


async def main() -> None:
    raise_nofile()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with serve(
        agent,
        "127.0.0.1",
        0,
        compression=None,
        select_subprotocol=select_lines,
        max_size=MAX_MESSAGE_BYTES,
        max_queue=16,
        ping_interval=20,
        ping_timeout=20,
        close_timeout=2,
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        ready = {"event": "listening", "url": f"ws://127.0.0.1:{port}", "pid": os.getpid()}
        print(json.dumps(ready), flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 600)


if __name__ == "__main__":
    run_server(main())
