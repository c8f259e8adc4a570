"""The physical limit: a bare ``websockets`` echo server and the same client load.

    python bench/echo_baseline.py server                  # prints {"event": "listening", "url": ...}
    python bench/echo_baseline.py client URL --clients 100 --windows 5 --window-s 2
    python bench/echo_baseline.py client URL --clients 1000 --mode idle --hold-s 3

The server and the client run in separate processes, as the hub and the load
do in fleet_bench.py. The client is load_raw.py's: the same websockets client
settings, the same connect ramp, the same windows; each client sends a real
propose message (built once, ~400 bytes), waits for the echo and sends the
next: one request/response round trip per
action, closed loop. Only 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import sys
import time
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import quiet_gc
from load_raw import (
    CONNECT_CONCURRENCY,
    READS,
    Meter,
    Templates,
    lat_summary,
    measure_windows,
    raise_nofile,
)
from load_raw import run_server as serve_on_hub_loop

from agent_shim.action_ids import new_action_id
from agent_shim.policy import policy_for
from agent_shim.protocol import MAX_MESSAGE_BYTES


async def echo(conn: ServerConnection) -> None:
    with contextlib.suppress(Exception):
        async for msg in conn:
            await conn.send(msg)


async def run_server(duration_s: float) -> None:
    raise_nofile()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with serve(
        echo,
        "127.0.0.1",
        0,
        compression=None,
        max_size=MAX_MESSAGE_BYTES,
        max_queue=16,
        ping_interval=20,
        ping_timeout=20,
        close_timeout=2,
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(
            json.dumps({"event": "listening", "url": f"ws://127.0.0.1:{port}", "pid": os.getpid()}),
            flush=True,
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), duration_s)


async def open_client(url: str, sem: asyncio.Semaphore) -> ClientConnection:
    async with sem:
        return await connect(
            url,
            compression=None,
            proxy=None,
            max_size=MAX_MESSAGE_BYTES,
            open_timeout=60,
            ping_interval=None,
            close_timeout=2,
        )


async def client_loop(
    ws: ClientConnection, payload: str, meter: Meter, stop: asyncio.Event, cap: int
) -> None:
    """Closed loop of round trips. The payload is built once (a real propose of
    the usual size): the echo client does the least possible work per request,
    so that the baseline is the transport's limit, not the client's."""
    for _ in range(cap):
        if stop.is_set():
            return
        t0 = time.perf_counter()
        try:
            await ws.send(payload)
            await asyncio.wait_for(ws.recv(), 60)
        except (OSError, TimeoutError) as exc:
            meter.error(type(exc).__name__)
            return
        meter.hit((time.perf_counter() - t0) * 1000)


async def run_client(args: argparse.Namespace) -> None:
    nofile = raise_nofile()
    sem = asyncio.Semaphore(CONNECT_CONCURRENCY)
    t0 = time.monotonic()
    conns = await asyncio.gather(*(open_client(args.url, sem) for _ in range(args.clients)))
    quiet_gc()  # as the load does (load_raw.py)
    print(
        json.dumps(
            {
                "event": "connected",
                "agents": len(conns),
                "connect_s": round(time.monotonic() - t0, 2),
                "nofile": nofile,
            }
        ),
        flush=True,
    )
    meter = Meter()
    result: dict[str, Any] = {"event": "done", "mode": args.mode, "agents": args.clients}
    if args.mode == "idle":
        print(json.dumps({"event": "measuring"}), flush=True)
        await asyncio.sleep(args.hold_s)
        print(json.dumps({"event": "measured"}), flush=True)
    else:
        tpl = Templates(policy_for(None, "dev"), "dev")
        stop = asyncio.Event()
        payload = tpl.propose(READS[0], new_action_id(), time.time_ns() // 1_000_000)[0]
        tasks = [asyncio.create_task(client_loop(ws, payload, meter, stop, 1_000_000)) for ws in conns]
        client_cpu = await measure_windows(meter, args.warmup_s, args.windows, args.window_s)
        stop.set()
        await asyncio.wait(tasks, timeout=30)
        for t in tasks:
            t.cancel()
        rates = [c / args.window_s for c in meter.per_window]
        pooled = [x for w in meter.allowed_ms for x in w]
        result.update(
            rates=rates,
            rate_median=statistics.median(rates),
            client_cpu=round(client_cpu, 3),
            rtt_ms_pooled=lat_summary(pooled),
            errors=meter.errors,
        )
    await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)
    print(json.dumps(result), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("server")
    s.add_argument("--max-s", type=float, default=600.0, help="exit after this long at the latest")
    c = sub.add_parser("client")
    c.add_argument("url")
    c.add_argument("--clients", type=int, default=100)
    c.add_argument("--mode", choices=("closed", "idle"), default="closed")
    c.add_argument("--warmup-s", type=float, default=2.0)
    c.add_argument("--windows", type=int, default=5)
    c.add_argument("--window-s", type=float, default=2.0)
    c.add_argument("--hold-s", type=float, default=3.0)
    args = ap.parse_args()
    if args.cmd == "server":
        serve_on_hub_loop(run_server(args.max_s))
    else:
        asyncio.run(run_client(args))


if __name__ == "__main__":
    main()
