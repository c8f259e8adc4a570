"""The fleet benchmark's baselines: what this machine allows, before towerctl runs.

The echo server (echo_baseline.py) is the transport's limit and the null hub
(null_hub.py) the protocol's; both run in the same run as the hub phases, so
that the ratios compare figures taken minutes apart on the same machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from fleet_procs import HERE, PY, CpuProbe, log, nofile_limit, rss_kib, run_json_proc
from fleet_report import fmt, spread
from fleet_run import TARGET_SCALES, Bench


@contextlib.asynccontextmanager
async def _echo_server() -> AsyncIterator[tuple[str, int]]:
    """A fresh echo server process: its URL and pid."""
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
        yield first["url"], first["pid"]
    finally:
        if proc.returncode is None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 30)


async def _echo_rate(bench: Bench, url: str, pid: int, n: int, windows: int | None = None) -> dict[str, Any]:
    probe = CpuProbe(pid)
    client = [PY, str(HERE / "echo_baseline.py"), "client", url, "--clients", str(n)]
    res = await run_json_proc([*client, *bench.scale_args(n, windows)], 120, probe)
    return {
        "rate": spread(res["rates"], 0),
        "rates": res["rates"],
        "client_cpu": res["client_cpu"],
        "server_cpu": round(probe.cpu, 2),
        "rtt_ms": res["rtt_ms_pooled"],
    }


async def echo_phase(bench: Bench) -> None:
    """The physical limit: RSS per idle connection on the fresh echo server, then round trips/s."""
    async with _echo_server() as (url, pid):
        echo: dict[str, Any] = {"nofile_server": nofile_limit(pid)}
        await asyncio.sleep(0.5)  # idle memory first, on the fresh server
        base = rss_kib(pid)
        probe = CpuProbe(pid)
        idle = [PY, str(HERE / "echo_baseline.py"), "client", url, "--clients", "1000", "--mode", "idle"]
        await run_json_proc([*idle, "--hold-s", "2"], 120, probe)
        echo["rss_per_idle_conn_kib"] = round((probe.rss_during - base) / 1000, 1)
        log(f"echo RSS per idle connection at 1,000: {echo['rss_per_idle_conn_kib']} KiB")
        for n in bench.scales:
            echo[str(n)] = await _echo_rate(bench, url, pid, n)
            e = echo[str(n)]
            log(
                f"echo {n} clients: {fmt(e['rate'])} round trips/s "
                f"(client cpu {e['client_cpu']}, server cpu {e['server_cpu']})"
            )
        bench.out["echo"] = echo


async def echo_again_phase(bench: Bench) -> None:
    """Echo once more, after the hub, at the scales with a target; the ratios
    then divide by the median of both runs' windows.

    Why: echo's rate moved 15,000-19,100 round trips/s at 1,000 clients across
    runs while the hub's moved 8,700-9,600/s, and the first echo is two
    minutes before the hub's windows. A machine that slowed or sped up in
    between shows here (the table gives both runs), and the pooled windows
    are a fairer limit than either alone. Three windows each, to keep the
    whole run under five minutes."""
    echo = bench.out["echo"]
    async with _echo_server() as (url, pid):
        for n in (n for n in bench.scales if n in TARGET_SCALES):
            before = echo[str(n)]
            after = await _echo_rate(bench, url, pid, n, windows=3)
            windows = [*before["rates"], *after["rates"]]
            before.update(
                rate_before=before["rate"],
                rate_after=after["rate"],
                rates=windows,
                rate=spread(windows, 0),
                # CPU per round trip: the mean of both runs, weighted alike.
                client_cpu=round((before["client_cpu"] + after["client_cpu"]) / 2, 3),
                server_cpu=round((before["server_cpu"] + after["server_cpu"]) / 2, 2),
            )
            log(
                f"echo {n} clients again: {fmt(after['rate'])} round trips/s "
                f"(before the hub {fmt(before['rate_before'])}; pooled {fmt(before['rate'])})"
            )


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
            argv = [PY, str(HERE / "load_raw.py"), url, "unused", "--agents", str(n), *bench.scale_args(n)]
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
