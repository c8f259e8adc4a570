"""A quick closed-loop probe of one hub: rate, and CPU per action by process.

    python bench/hub_probe.py                  # 100 agents, 4 windows of 2 s
    python bench/hub_probe.py --agents 1000 --sync normal --windows 6

Why next to fleet_bench.py: a change to the hub's hot path wants an answer in
20 s, not 4 minutes, and the answer that matters is where the CPU went: the
serve process's event loop, its writer process, or the load. This starts a
fresh ``towerctl serve`` (real SQLite file, real policy, audit chain) with
``bench/harness.start_hub``, drives it with ``bench/load_raw.py --mode closed``
in its own process, and between the load's ``measuring`` and ``measured``
marks reads ``/proc`` CPU of the serve process and of each of its children.
Single probes move ±10 % on a shared machine: compare probes run back to
back, and keep claims for fleet_bench.py's ratios.
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

from harness import proc_cpu_s, start_hub

HERE = Path(__file__).resolve().parent


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (the forked store writer), from /proc."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


async def probe(agents: int, windows: int, sync: str, writer: str) -> dict[str, Any]:
    hub = await start_hub(sync=sync, writer=writer)
    try:
        cmd = [
            sys.executable,
            str(HERE / "load_raw.py"),
            hub.url,
            hub.token("agent"),
            "--agents",
            str(agents),
            "--mode",
            "closed",
            "--windows",
            str(windows),
            "--window-s",
            "2",
            "--warmup-s",
            "1",
        ]
        load = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE)
        assert load.stdout is not None
        pids = [hub.proc.pid]
        cpu0: dict[int, float] = {}
        cpu: dict[int, float] = {}
        t0 = elapsed = 0.0
        done: dict[str, Any] = {}
        async for line in load.stdout:
            event = json.loads(line)
            if event.get("event") == "measuring":
                pids = [hub.proc.pid, *children(hub.proc.pid)]
                cpu0 = {p: proc_cpu_s(p) for p in pids}
                t0 = time.monotonic()
            elif event.get("event") == "measured":
                elapsed = time.monotonic() - t0
                cpu = {p: (proc_cpu_s(p) - cpu0[p]) / elapsed for p in pids}
            elif event.get("event") == "done":
                done = event
        await load.wait()
    finally:
        await hub.stop()
    rate = float(done["rate_median"])
    loop_cores = cpu.get(hub.proc.pid, 0.0)
    writer_cores = sum(v for p, v in cpu.items() if p != hub.proc.pid)
    client = float(done["client_cpu"])
    return {
        "agents": agents,
        "sync": sync,
        "writer": writer,
        "rates": done["rates"],
        "rate_median": rate,
        "errors": done["errors"],
        "cores": {"serve": round(loop_cores, 2), "writer": round(writer_cores, 2), "load": client},
        "us_per_action": {
            "serve": round(loop_cores / rate * 1e6),
            "writer": round(writer_cores / rate * 1e6),
            "load": round(client / rate * 1e6),
        },
        "ack_ms": done["allowed_ms_pooled"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=100)
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--sync", choices=("full", "normal"), default="full")
    ap.add_argument("--writer", choices=("process", "thread"), default="process")
    args = ap.parse_args()
    res = asyncio.run(probe(args.agents, args.windows, args.sync, args.writer))
    us = res["us_per_action"]
    print(
        f"{res['agents']} agents, sync {res['sync']}, {res['writer']} writer: "
        f"{res['rate_median']:.0f} actions/s (windows {res['rates']}); CPU per action: "
        f"serve {us['serve']} us, writer {us['writer']} us, load {us['load']} us; "
        f"ack p50 {res['ack_ms']['p50']} ms; errors {res['errors'] or 'none'}",
        file=sys.stderr,
    )
    print(json.dumps(res))


if __name__ == "__main__":
    os.environ.pop("TOWER_HOME", None)
    main()
