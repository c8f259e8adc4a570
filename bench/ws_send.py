"""CPU per frame of websockets' ``send()`` against ``broadcast()``, server side.

    python bench/ws_send.py [--frames 20000]

Why: the hub answers every proposal with one small frame to one agent. This
writes ``--frames`` ack-sized text frames to a client (its own process, reading
and discarding) both ways, alternately, twice each, and prints the sender's CPU
per frame (``time.process_time``): what ``HubService.send_agent`` saves by
writing with ``broadcast()`` while the socket buffer is small.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from websockets.asyncio.server import ServerConnection, broadcast, serve

ACK = '{"type":"ack","action_id":"0123456789abcdef0123456789abcdef","state":"allowed","reason":""}'
CLIENT = """
import asyncio, sys
from websockets.asyncio.client import connect
async def main():
    async with connect(sys.argv[1], compression=None) as ws:
        await ws.send("go")
        async for _ in ws:
            pass
asyncio.run(main())
"""


async def main(frames: int) -> dict[str, list[float]]:
    done = asyncio.Event()
    res: dict[str, list[float]] = {"send": [], "broadcast": []}

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        for mode in ("send", "broadcast", "send", "broadcast"):
            t = time.process_time()
            for i in range(frames):
                if mode == "broadcast" and ws.transport.get_write_buffer_size() < 64 * 1024:
                    broadcast((ws,), ACK)
                else:
                    await ws.send(ACK)
                if i % 64 == 0:
                    await asyncio.sleep(0)  # let the transport flush, as a busy hub would
            res[mode].append(round((time.process_time() - t) / frames * 1e6, 1))
        await ws.close()
        done.set()

    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        client = await asyncio.create_subprocess_exec(sys.executable, "-c", CLIENT, f"ws://127.0.0.1:{port}")
        await asyncio.wait_for(done.wait(), 120)
        await asyncio.wait_for(client.wait(), 30)
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=20_000)
    out = asyncio.run(main(ap.parse_args().frames))
    print(f"server CPU per frame: send() {out['send']} us, broadcast() {out['broadcast']} us")
