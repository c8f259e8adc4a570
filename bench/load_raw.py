"""Load process: N concurrent agents over real websockets, speaking the real agent protocol.

    python bench/load_raw.py URL TOKEN --agents 1000 --mode closed --windows 5 --window-s 2
    python bench/load_raw.py URL TOKEN --agents 1000 --mode open --rate 1000 --ask-frac 0.05
    python bench/load_raw.py URL TOKEN --agents 1000 --mode idle --hold-s 5

Why a lean client and not ``agent_shim.Shim``: the shim does not wait for the
hub's ack on an allowed action (it runs at once and reports later), so it
cannot measure propose -> ack; and the real shim costs ~85 us of client CPU
per action (judge ~70 us + pydantic encode ~13 us, see shim_overhead.py), which
on a 2-core machine would take the core the hub needs and measure the load
generator instead of the hub. So each agent here speaks the real protocol
(hello -> welcome, propose -> ack [-> decision -> started], report) with
messages the hub validates strictly; the verdict, risk and reasons come from
the real ``agent_shim.gate.judge`` (called once per distinct command against
the policy the hub sent in its welcome, which is deterministic), and the
digest of every action is computed with the real ``tagged_digest`` over the
action's canonical body (checked against ``Action.digest()`` at start).

Modes:
  closed  every agent proposes, waits for the ack, sends its report, and
          proposes again at once (throughput);
  open    every agent proposes at ``agents / rate`` second intervals with
          jitter (fixed offered load); ``--ask-frac`` of actions are
          destructive and wait for an operator's decision (env prod);
  idle    agents connect, say hello and hold the session (memory).

Output: JSON lines on stdout: ``connected``, ``measuring``, ``measured``,
``done`` (with per-window rates and latency samples summarised); with
``--out`` the raw samples and acknowledged action ids go to that file.
Every loop is bounded by count and time; traffic goes only to the URL given
(127.0.0.1 in the benchmarks).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import resource
import statistics
import sys
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import collect_as_the_hub, pct, quiet_gc, self_cpu_s
from load_messages import ASK, READS, Templates
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from agent_shim.action_ids import new_action_id
from agent_shim.policy import EnvPolicy
from agent_shim.protocol import MAX_MESSAGE_BYTES, PROTOCOL_VERSION, AgentHello, encode
from agent_shim.wire import LINES_SUBPROTOCOL

CONNECT_CONCURRENCY = 50


def raise_nofile() -> tuple[int, int]:
    """Raise RLIMIT_NOFILE soft to hard: 1,000 agents need ~1,000 fds here."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def run_server(main: Coroutine[Any, Any, None]) -> None:
    """Run a baseline server (echo, null hub) on the event loop ``towerctl
    serve`` picks (``--loop auto``: uvloop where installed), so the physical
    limit is measured with the same loop as the hub it is compared with. The
    load itself stays on asyncio's loop, the same for every server it drives."""
    from towerctl.cli.common import loop_factory

    collect_as_the_hub()
    with asyncio.Runner(loop_factory=loop_factory("auto")) as runner:
        runner.run(main)


def lat_summary(values_ms: list[float]) -> dict[str, float]:
    return {
        "n": len(values_ms),
        "p50": round(pct(values_ms, 50), 3),
        "p99": round(pct(values_ms, 99), 3),
        "p99.9": round(pct(values_ms, 99.9), 3),
        "max": round(max(values_ms), 3) if values_ms else float("nan"),
    }


@dataclass
class Meter:
    """Counts and samples, tagged with the measurement window they fall in (-1: outside)."""

    window: int = -1
    done: int = 0
    per_window: list[int] = field(default_factory=list)
    allowed_ms: list[list[float]] = field(default_factory=list)
    asked: list[dict[str, Any]] = field(default_factory=list)
    acked_ids: list[str] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def open_windows(self, n: int) -> None:
        self.per_window = [0] * n
        self.allowed_ms = [[] for _ in range(n)]

    def hit(self, latency_ms: float | None) -> None:
        self.done += 1
        w = self.window
        if w >= 0:
            self.per_window[w] += 1
            if latency_ms is not None:
                self.allowed_ms[w].append(latency_ms)

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


async def open_agent(
    url: str, token: str, i: int, env: str, sem: asyncio.Semaphore
) -> tuple[ClientConnection, dict[str, Any]]:
    async with sem:
        ws = await connect(
            url.rstrip("/") + "/agent",
            additional_headers={"Authorization": f"Bearer {token}"},
            compression=None,
            proxy=None,
            max_size=MAX_MESSAGE_BYTES,
            subprotocols=[Subprotocol(LINES_SUBPROTOCOL)],
            open_timeout=60,
            ping_interval=None,
            close_timeout=2,
        )
        hello = AgentHello(
            protocol=PROTOCOL_VERSION,
            agent=f"raw-{i:04d}",
            env=env,
            host="bench",
            pid=i,
            session_id=f"s-{uuid.uuid4().hex[:16]}",
            shim_version="load_raw",
        )
        await ws.send(encode(hello))
        welcome = json.loads(await asyncio.wait_for(ws.recv(), 60))
        if welcome.get("type") != "welcome":
            raise RuntimeError(f"expected welcome, got {welcome}")
        return ws, welcome


async def recv_until(
    ws: ClientConnection, action_id: str, types: tuple[str, ...], timeout: float
) -> dict[str, Any]:
    """Next message of one of ``types`` about ``action_id`` (others, e.g. policy pushes, are skipped)."""
    deadline = time.monotonic() + timeout
    for _ in range(10_000):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        async with asyncio.timeout(left):  # no task per recv, unlike wait_for
            msg = json.loads(await ws.recv())
        t = msg.get("type")
        if t == "error":
            raise RuntimeError(f"hub error: {msg.get('code')}: {msg.get('message')}")
        if t in types and msg.get("action_id") == action_id:
            return msg
    raise TimeoutError(f"no {types} for {action_id}")


async def agent_loop(
    ws: ClientConnection,
    tpl: Templates,
    meter: Meter,
    stop: asyncio.Event,
    *,
    interval: float,
    ask_frac: float,
    max_actions: int,
) -> None:
    rnd = random.Random()
    if interval > 0:
        await asyncio.sleep(rnd.uniform(0, interval))
    # Closed loop under LINES_SUBPROTOCOL: the report of one action travels
    # with the proposal of the next, as the shim's writer sends what it has
    # queued at once. With an interval the report goes alone, at once.
    hold = interval == 0 and ws.subprotocol == LINES_SUBPROTOCOL
    held: str | None = None
    try:
        for _ in range(max_actions):
            if stop.is_set():
                return
            t_next = time.monotonic() + interval * rnd.uniform(0.8, 1.2)
            aid = new_action_id()  # as the shim makes them: time-ordered (agent_shim.action_ids)
            asked = ask_frac > 0 and rnd.random() < ask_frac
            command = ASK.format(n=aid[-8:]) if asked else rnd.choice(READS)
            t0_wall = time.time_ns()
            t0 = time.perf_counter()
            data, digest, verdict = tpl.propose(command, aid, t0_wall // 1_000_000)
            try:
                await ws.send(data if held is None else held + "\n" + data)
                held = None
                ack = await recv_until(ws, aid, ("ack",), 60)
                t_ack = time.perf_counter()
                if ack["state"] == "pending":
                    window = meter.window
                    dec = await recv_until(ws, aid, ("decision",), 60)
                    t_dec_wall = time.time_ns()
                    if dec.get("verdict") != "approved":
                        meter.error(f"decision {dec.get('verdict')}")
                        continue
                    if window >= 0:
                        meter.asked.append(
                            {
                                "action_id": aid,
                                "window": window,
                                "propose_ns": t0_wall,
                                "unblocked_ns": t_dec_wall,
                            }
                        )
                elif ack["state"] != "allowed":
                    meter.error(f"ack {ack['state']}")
                    continue
                now = time.time_ns() // 1_000_000
                if asked:  # as the shim does: `started` only after an approval
                    await ws.send(tpl.started_json(aid, digest, now))
                report = tpl.report_json(aid, digest, now)
                if hold:
                    held = report
                else:
                    await ws.send(report)
            except (OSError, RuntimeError, TimeoutError, KeyError) as exc:
                meter.error(type(exc).__name__ + ": " + str(exc)[:80])
                return
            meter.acked_ids.append(aid)
            meter.hit(None if asked or verdict != "allow" else (t_ack - t0) * 1000)
            if interval > 0:
                delay = t_next - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
    finally:
        if held is not None:
            with contextlib.suppress(OSError, ConnectionClosed):
                await ws.send(held)


async def measure_windows(meter: Meter, warmup_s: float, windows: int, window_s: float) -> float:
    """Warm up, then count into ``windows`` windows of ``window_s``, announcing
    ``measuring``/``measured`` on stdout (the orchestrator samples the server's
    CPU between them). Returns this process's CPU use in those windows (cores)."""
    await asyncio.sleep(warmup_s)
    meter.open_windows(windows)
    c0 = self_cpu_s()
    print(json.dumps({"event": "measuring"}), flush=True)
    for w in range(windows):
        meter.window = w
        await asyncio.sleep(window_s)
    meter.window = -1
    client_cpu = (self_cpu_s() - c0) / (windows * window_s)
    print(json.dumps({"event": "measured"}), flush=True)
    return client_cpu


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url")
    ap.add_argument("token")
    ap.add_argument("--agents", type=int, default=100)
    ap.add_argument("--env", default="dev")
    ap.add_argument("--mode", choices=("closed", "open", "idle"), default="closed")
    ap.add_argument("--rate", type=float, default=1000.0, help="offered actions/s in open mode")
    ap.add_argument("--ask-frac", type=float, default=0.0)
    ap.add_argument("--warmup-s", type=float, default=2.0)
    ap.add_argument("--windows", type=int, default=5)
    ap.add_argument("--window-s", type=float, default=2.0)
    ap.add_argument("--hold-s", type=float, default=3.0, help="idle mode: how long to hold the sessions")
    ap.add_argument("--out", default="", help="file for raw samples and acknowledged action ids")
    args = ap.parse_args()
    nofile = raise_nofile()
    sem = asyncio.Semaphore(CONNECT_CONCURRENCY)
    t0 = time.monotonic()
    opened = await asyncio.gather(
        *(open_agent(args.url, args.token, i, args.env, sem) for i in range(args.agents))
    )
    conns = [ws for ws, _ in opened]
    quiet_gc()
    policy = EnvPolicy.model_validate_json(json.dumps(opened[0][1]["policy"]))
    print(
        json.dumps(
            {
                "event": "connected",
                "agents": len(conns),
                "connect_s": round(time.monotonic() - t0, 2),
                "nofile": nofile,
                "policy_rate_limit": policy.max_actions_per_minute,
            }
        ),
        flush=True,
    )
    meter = Meter()
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    if args.mode == "idle":
        print(json.dumps({"event": "measuring"}), flush=True)
        await asyncio.sleep(args.hold_s)
        print(json.dumps({"event": "measured"}), flush=True)
    else:
        tpl = Templates(policy, args.env)
        interval = args.agents / args.rate if args.mode == "open" else 0.0
        total_s = args.warmup_s + args.windows * args.window_s
        cap = int(100_000 if interval == 0 else total_s / interval * 2 + 10)
        tasks = [
            asyncio.create_task(
                agent_loop(ws, tpl, meter, stop, interval=interval, ask_frac=args.ask_frac, max_actions=cap)
            )
            for ws in conns
        ]
        client_cpu = await measure_windows(meter, args.warmup_s, args.windows, args.window_s)
        stop.set()
        await asyncio.wait(tasks, timeout=30)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)
    result: dict[str, Any] = {
        "event": "done",
        "mode": args.mode,
        "agents": args.agents,
        "errors": meter.errors,
    }
    if args.mode != "idle":
        rates = [c / args.window_s for c in meter.per_window]
        pooled = [x for w in meter.allowed_ms for x in w]
        result.update(
            rates=rates,
            rate_median=statistics.median(rates),
            acked=len(meter.acked_ids),
            client_cpu=round(client_cpu, 3),
            allowed_ms_pooled=lat_summary(pooled),
            allowed_ms_windows=[lat_summary(w) for w in meter.allowed_ms],
            asked_n=len(meter.asked),
        )
        if args.out:
            data = json.dumps({"acked_ids": meter.acked_ids, "asked": meter.asked})
            await asyncio.to_thread(Path(args.out).write_text, data)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    sys.exit(0)
