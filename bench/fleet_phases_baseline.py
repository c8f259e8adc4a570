"""The fleet benchmark's baselines: what this machine allows, before towerctl runs.

The echo server (echo_baseline.py) is the transport's limit and the null hub
(null_hub.py) the protocol's; both run in the same run as the hub phases, so
that the ratios compare figures taken minutes apart on the same machine.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fleet_procs import HERE, PY, CpuProbe, log, nofile_limit, rss_kib, run_json_proc
from fleet_report import fmt, spread
from fleet_run import Bench


async def echo_phase(bench: Bench) -> None:
    """The physical limit: RSS per idle connection on the fresh echo server, then round trips/s."""
    proc = await asyncio.create_subprocess_exec(
        PY,
        str(HERE / "echo_baseline.py"),
        "server",
        "--max-s",
        "300",
        stdout=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    try:
        first = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
        url, pid = first["url"], first["pid"]
        echo: dict[str, Any] = {"nofile_server": nofile_limit(pid)}
        await asyncio.sleep(0.5)  # idle memory first, on the fresh server
        base = rss_kib(pid)
        probe = CpuProbe(pid)
        await run_json_proc(
            [
                PY,
                str(HERE / "echo_baseline.py"),
                "client",
                url,
                "--clients",
                "1000",
                "--mode",
                "idle",
                "--hold-s",
                "2",
            ],
            120,
            probe,
        )
        echo["rss_per_idle_conn_kib"] = round((probe.rss_during - base) / 1000, 1)
        log(f"echo RSS per idle connection at 1,000: {echo['rss_per_idle_conn_kib']} KiB")
        for n in bench.scales:
            probe = CpuProbe(pid)
            res = await run_json_proc(
                [
                    PY,
                    str(HERE / "echo_baseline.py"),
                    "client",
                    url,
                    "--clients",
                    str(n),
                    *bench.win_args(),
                ],
                120,
                probe,
            )
            echo[str(n)] = {
                "rate": spread(res["rates"], 0),
                "rates": res["rates"],
                "client_cpu": res["client_cpu"],
                "server_cpu": round(probe.cpu, 2),
                "rtt_ms": res["rtt_ms_pooled"],
            }
            log(
                f"echo {n} clients: {fmt(echo[str(n)]['rate'])} round trips/s "
                f"(client cpu {res['client_cpu']}, server cpu {probe.cpu:.2f})"
            )
        bench.out["echo"] = echo
    finally:
        if proc.returncode is None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 30)


async def ceiling_phase(bench: Bench) -> None:
    """The protocol's ceiling: null_hub.py (same frames, no work) under the same load."""
    proc = await asyncio.create_subprocess_exec(
        PY, str(HERE / "null_hub.py"), stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL
    )
    assert proc.stdout is not None
    ceiling: dict[str, Any] = {}
    try:
        first = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
        url, pid = first["url"], first["pid"]
        for n in bench.scales:
            probe = CpuProbe(pid)
            argv = [PY, str(HERE / "load_raw.py"), url, "unused", "--agents", str(n), *bench.win_args()]
            res = await run_json_proc(argv, 120, probe)
            ceiling[str(n)] = {
                "rate": spread(res["rates"], 0),
                "rates": res["rates"],
                "client_cpu": res["client_cpu"],
                "server_cpu": round(probe.cpu, 2),
            }
            log(
                f"null hub {n} agents: {fmt(ceiling[str(n)]['rate'])} actions/s "
                f"(client cpu {res['client_cpu']}, server cpu {probe.cpu:.2f})"
            )
        # The latency floor of the protocol and this load at the issue's
        # 1,000 actions/s from 1,000 agents: the "physical limit" of the
        # latency rows (every action allowed: the null hub asks no one).
        probe = CpuProbe(pid)
        argv = [PY, str(HERE / "load_raw.py"), url, "unused", "--agents", "1000", "--env", "prod"]
        argv += ["--mode", "open", "--rate", "1000", "--ask-frac", "0", *bench.win_args()]
        res = await run_json_proc(argv, 120, probe)
        windows = res["allowed_ms_windows"]
        ceiling["latency_1000"] = {
            "offered_rate": 1000,
            "achieved_rate": spread(res["rates"], 0),
            "allowed_ms": {q: spread([w[q] for w in windows], 2) for q in ("p50", "p99", "p99.9")},
            "cpu_cores": {"server": round(probe.cpu, 2), "load": res["client_cpu"]},
        }
        p99 = ceiling["latency_1000"]["allowed_ms"]["p99"]
        log(f"null hub at 1000/s offered: allowed p99 {fmt(p99, ' ms')}")
        bench.out["ceiling"] = ceiling
    finally:
        if proc.returncode is None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 30)
