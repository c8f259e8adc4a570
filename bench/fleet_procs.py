"""Process and machine helpers of the fleet benchmark (fleet_bench.py).

Every figure the fleet bench compares is read from outside the process that
earns it: CPU and RSS from /proc, results as JSON lines on a child's stdout.
Kept apart from the phases so that each phase reads as what it runs and what
it records, not how /proc is parsed.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from harness import machine_busy_s, proc_cpu_s, proc_wait_s, self_cpu_s, tree_cpu_s

HERE = Path(__file__).resolve().parent
PY = sys.executable

EventHook = Callable[[dict[str, Any]], Awaitable[None]]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def nofile_limit(pid: int) -> str:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return " ".join(line.split()[3:5])
    return "?"


def machine() -> dict[str, Any]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "loadavg_at_start": os.getloadavg(),
    }


async def run_json_proc(
    argv: list[str],
    timeout: float,
    hook: EventHook | None = None,
    on_start: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Run a bench process; hand each JSON event line to ``hook``; return the
    ``done`` event. ``on_start`` gets its pid as soon as it runs."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None and proc.stderr is not None
    if on_start is not None:
        on_start(proc.pid)
    done: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{argv[1]} took longer than {timeout}s")
            line = await asyncio.wait_for(proc.stdout.readline(), left)
            if not line:
                break
            with contextlib.suppress(ValueError):
                ev = json.loads(line)
                if hook is not None:
                    await hook(ev)
                if ev.get("event") == "done":
                    done = ev
        await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if not done:
        err = (await proc.stderr.read()).decode()[-2000:]
        raise RuntimeError(f"{argv[1]} gave no result (exit {proc.returncode}): {err}")
    return done


class CpuProbe:
    """Hook that samples a process's CPU time and RSS at measuring/measured."""

    def __init__(self, pid: int, on_measuring: Callable[[], Awaitable[None]] | None = None) -> None:
        self.pid = pid
        self.on_measuring = on_measuring
        self.c0 = self.t0 = self.busy0 = self.self0 = self.own0 = self.wait0 = 0.0
        self.cpu = float("nan")
        #: The process alone, without its children: the hub's serve process is
        #: one thread, so this near 1.0 means it is the stage that saturates.
        self.own_cpu = float("nan")
        #: Cores' worth of time the process was runnable but waited for a CPU:
        #: ``own_cpu + own_wait`` near 1.0 means it always had work.
        self.own_wait = float("nan")
        #: Cores busy on the whole machine, and in this process (the bench's
        #: operator client runs here), over the same windows.
        self.machine = self.self_cpu = float("nan")
        self.rss_during = 0

    async def __call__(self, ev: dict[str, Any]) -> None:
        if ev.get("event") == "measuring":
            self.c0, self.t0 = tree_cpu_s(self.pid), time.monotonic()
            self.own0, self.wait0 = proc_cpu_s(self.pid), proc_wait_s(self.pid)
            self.busy0, self.self0 = machine_busy_s(), self_cpu_s()
            self.rss_during = rss_kib(self.pid)
            if self.on_measuring is not None:
                await self.on_measuring()
        elif ev.get("event") == "measured":
            wall = max(1e-9, time.monotonic() - self.t0)
            self.cpu = (tree_cpu_s(self.pid) - self.c0) / wall
            self.own_cpu = (proc_cpu_s(self.pid) - self.own0) / wall
            self.own_wait = (proc_wait_s(self.pid) - self.wait0) / wall
            self.machine = (machine_busy_s() - self.busy0) / wall
            self.self_cpu = (self_cpu_s() - self.self0) / wall
            self.rss_during = max(self.rss_during, rss_kib(self.pid))
