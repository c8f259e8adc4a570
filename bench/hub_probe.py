"""A quick probe of one hub: rate, and CPU per action by process.

    python bench/hub_probe.py                  # 100 agents, 4 windows of 2 s
    python bench/hub_probe.py --agents 1000 --sync normal --windows 6
    python bench/hub_probe.py --agents 1000 --rate 1000 --operator --ask-frac 0.05

Why next to fleet_bench.py: a change to the hub's hot path wants an answer in
20 s, not 4 minutes, and the answer that matters is where the CPU went: the
serve process's event loop, its writer process, or the load. This starts a
fresh ``towerctl serve`` (real SQLite file, real policy, audit chain) with
``bench/harness.start_hub``, drives it with ``bench/load_raw.py --mode closed``
in its own process, and between the load's ``measuring`` and ``measured``
marks reads ``/proc`` CPU of the serve process and of each of its children,
and how long each was runnable but waiting for a CPU (``/proc/PID/schedstat``:
on two cores the three processes contend, and a serve process busy 0.85 of a
core that waited 0.14 had work all the time).
Single probes move ±10 % on a shared machine: compare probes run back to
back, and keep claims for fleet_bench.py's ratios.

``--rate`` offers a fixed load instead (open loop, prod, as fleet_bench's
latency rows do), where the CPU per action is not the closed loop's: at
1,000/s the hub spends about twice as much per action as when it is
saturated, because fewer events share each wakeup, frame and commit.
``--operator`` connects an automated operator client (this process; its CPU
and the events it received are reported) that approves what waits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from harness import (
    children,
    gc_pause_buckets,
    gc_pauses_between,
    proc_cpu_s,
    proc_wait_s,
    quiet_gc,
    serve_alone,
    start_hub,
)

HERE = Path(__file__).resolve().parent


class Operator:
    """An operator client that counts what it receives and approves at once."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.events = 0
        self._tasks: set[asyncio.Task[Any]] = set()

    async def run(self) -> None:
        from agent_shim.protocol import ActionEvent

        async for msg in self.client.events():
            self.events += 1
            if isinstance(msg, ActionEvent) and msg.action.state == "pending":
                aid, digest = msg.action.action.action_id, msg.action.digest
                task = asyncio.create_task(self.client.decide(aid, True, "hub_probe", digest=digest))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)


async def probe(
    agents: int,
    windows: int,
    sync: str,
    writer: str,
    *,
    offered: float = 0.0,
    operator: bool = False,
    ask_frac: float = 0.0,
    pinned: bool = False,
) -> dict[str, Any]:
    from towerctl.operator import OperatorClient

    hub = await start_hub(sync=sync, writer=writer)
    op: Operator | None = None
    op_task: asyncio.Task[None] | None = None
    op_client: OperatorClient | None = None
    try:
        if operator:
            op_client = OperatorClient(hub.url, hub.token("admin"), client="hub-probe")
            await op_client.__aenter__()
            op = Operator(op_client)
            op_task = asyncio.create_task(op.run())
            quiet_gc()  # this process times the operator's side
        mode = ["--mode", "closed"]
        if offered:
            mode = ["--mode", "open", "--rate", str(offered), "--env", "prod"]
        cmd = [
            sys.executable,
            str(HERE / "load_raw.py"),
            hub.url,
            hub.token("agent"),
            "--agents",
            str(agents),
            *mode,
            "--ask-frac",
            str(ask_frac),
            "--windows",
            str(windows),
            "--window-s",
            "2",
            "--warmup-s",
            "1",
        ]
        load = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE)
        if pinned:
            serve_alone(hub.proc.pid, load.pid)  # the hub stops after this probe
        assert load.stdout is not None
        pids = [hub.proc.pid]
        cpu0: dict[int, float] = {}
        cpu: dict[int, float] = {}
        wait0: dict[int, float] = {}
        wait: dict[int, float] = {}
        t0 = elapsed = own0 = own = 0.0
        events0 = events = 0
        done: dict[str, Any] = {}
        gc0: dict[float, float] = {}
        serve_gc: dict[str, float] = {}
        async for line in load.stdout:
            event = json.loads(line)
            if event.get("event") == "measuring":
                gc0 = await asyncio.to_thread(gc_pause_buckets, hub.url)  # before the CPU mark
                pids = [hub.proc.pid, *children(hub.proc.pid)]
                cpu0 = {p: proc_cpu_s(p) for p in pids}
                wait0 = {p: proc_wait_s(p) for p in pids}
                t0, own0 = time.monotonic(), time.process_time()
                events0 = op.events if op else 0
            elif event.get("event") == "measured":
                elapsed = time.monotonic() - t0
                cpu = {p: (proc_cpu_s(p) - cpu0[p]) / elapsed for p in pids}
                wait = {p: (proc_wait_s(p) - wait0[p]) / elapsed for p in pids}
                own = (time.process_time() - own0) / elapsed
                events = round(((op.events if op else 0) - events0) / elapsed)
                serve_gc = gc_pauses_between(gc0, await asyncio.to_thread(gc_pause_buckets, hub.url))
            elif event.get("event") == "done":
                done = event
        await load.wait()
    finally:
        if op_task is not None:
            op_task.cancel()
        if op_client is not None:
            await op_client.__aexit__(None, None, None)
        await hub.stop()
    rate = float(done["rate_median"])
    loop_cores = cpu.get(hub.proc.pid, 0.0)
    writer_cores = sum(v for p, v in cpu.items() if p != hub.proc.pid)
    client = float(done["client_cpu"])
    return {
        "agents": agents,
        "offered": f"{offered:.0f}/s offered" if offered else "closed loop",
        "sync": sync,
        "writer": writer,
        "pinned": pinned,
        "rates": done["rates"],
        "rate_median": rate,
        "errors": done["errors"],
        "cores": {"serve": round(loop_cores, 2), "writer": round(writer_cores, 2), "load": client},
        # Cores' worth of time each hub process was runnable but had no CPU:
        # serve's busy + waiting near 1.0 means it always had work.
        "waiting": {
            "serve": round(wait.get(hub.proc.pid, 0.0), 2),
            "writer": round(sum(v for p, v in wait.items() if p != hub.proc.pid), 2),
        },
        "us_per_action": {
            "serve": round(loop_cores / rate * 1e6),
            "writer": round(writer_cores / rate * 1e6),
            "load": round(client / rate * 1e6),
        },
        "ack_ms": done["allowed_ms_pooled"],
        # The serve process's collections in the windows (they stop its event loop).
        "serve_gc": serve_gc,
        # This process: the operator client, when there is one.
        "operator": {"cores": round(own, 2), "events_per_s": events} if operator else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=100)
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--sync", choices=("full", "normal"), default="full")
    ap.add_argument("--writer", choices=("process", "thread"), default="process")
    ap.add_argument("--rate", type=float, default=0.0, help="offered actions/s (open loop, prod); 0: closed")
    ap.add_argument("--operator", action="store_true", help="an operator client that approves at once")
    ap.add_argument("--ask-frac", type=float, default=0.0, help="share of actions that need approval")
    ap.add_argument(
        "--pin",
        action="store_true",
        help="serve process alone on the first CPU, its writer and the load on the others",
    )
    args = ap.parse_args()
    if args.ask_frac > 0 and not (args.operator and args.rate > 0):
        ap.error("--ask-frac needs --rate and --operator (someone has to approve)")
    if args.pin and len(os.sched_getaffinity(0)) < 2:
        ap.error("--pin needs at least 2 CPUs")
    res = asyncio.run(
        probe(
            args.agents,
            args.windows,
            args.sync,
            args.writer,
            offered=args.rate,
            operator=args.operator,
            ask_frac=args.ask_frac,
            pinned=args.pin,
        )
    )
    us = res["us_per_action"]
    opr = res["operator"]
    pauses = res["serve_gc"]
    print(
        f"{res['agents']} agents, {res['offered']}, sync {res['sync']}, {res['writer']} writer"
        + (", serve pinned alone" if res["pinned"] else "")
        + ": "
        f"{res['rate_median']:.0f} actions/s (windows {res['rates']}); CPU per action: "
        f"serve {us['serve']} us, writer {us['writer']} us, load {us['load']} us; "
        f"serve busy {res['cores']['serve']} + waiting for a CPU {res['waiting']['serve']} of 1 core; "
        + (f"operator client {opr['cores']} cores, {opr['events_per_s']} events/s; " if opr else "")
        + f"ack p50 {res['ack_ms']['p50']} p99 {res['ack_ms']['p99']} ms; "
        + f"serve GC in the windows {pauses['collections']:.0f} ({pauses['over_10ms']:.0f} over 10 ms, "
        + f"longest <= {pauses['longest_le_ms']} ms); errors {res['errors'] or 'none'}",
        file=sys.stderr,
    )
    print(json.dumps(res))


if __name__ == "__main__":
    os.environ.pop("TOWER_HOME", None)
    main()
