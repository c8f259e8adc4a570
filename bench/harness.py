"""Shared pieces of the benchmarks: a real hub in its own process, and its tokens.

The hub runs as `towerctl serve` in a separate process so that what a
benchmark measures in its own process (the TUI, the load generator) does not
share an event loop or a core's time slice with it by accident.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import os
import resource
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

BENCH_POLICY: Final = """
[environments.dev]
read = "allow"
write = "allow"
destructive = "allow"
approval_timeout = "5m"

[environments.prod]
read = "allow"
write = "ask"
destructive = "ask"
approval_timeout = "5m"
"""


@dataclass
class ServedHub:
    proc: asyncio.subprocess.Process
    url: str
    home: Path
    #: The home was made for this hub (no ``home`` given to start_hub), so
    #: stop() removes it: a probe's log is hundreds of MB, and probes run by
    #: the dozen (they filled /tmp once, 80 GB of them).
    owns_home: bool = False

    def token(self, role: str) -> str:
        return (self.home / "tokens" / f"{role}.token").read_text().strip()

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            await asyncio.wait_for(self.proc.wait(), 30)
        if self.owns_home:
            shutil.rmtree(self.home, ignore_errors=True)


def child_env() -> dict[str, str]:
    """The environment for the processes a bench starts: no ``TOWER_*`` of the
    caller's, and bytecode caching on. With ``PYTHONDONTWRITEBYTECODE`` set
    (some shells and CI images set it) a module never imported before is
    compiled on every start, ~7 ms for ``towerctl exec``'s client alone, which
    a user's install pays once; the benches' warm-up runs write the caches."""
    return {
        k: v for k, v in os.environ.items() if not k.startswith("TOWER_") and k != "PYTHONDONTWRITEBYTECODE"
    }


async def start_hub(home: Path | None = None, *, sync: str = "full", writer: str = "process") -> ServedHub:
    owns_home = home is None
    home = home or Path(tempfile.mkdtemp(prefix="towerctl-bench-"))
    home.mkdir(parents=True, exist_ok=True)
    policy = home / "bench-policy.toml"
    policy.write_text(BENCH_POLICY)
    env = child_env()
    env["TOWER_HOME"] = str(home)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "towerctl.cli", "serve", "--port", "0", "--policy", str(policy),
        "--sync", sync, "--writer", writer,
        env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    try:
        while True:
            line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
            if not line:
                raise RuntimeError("towerctl serve exited during start-up")
            if "listening on" in line:
                url = line.split("listening on ", 1)[1].split()[0]
                return ServedHub(proc, url, home, owns_home)
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if owns_home:
            shutil.rmtree(home, ignore_errors=True)
        raise


def proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a live process has used so far; 0 where /proc is not there."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_wait_s(pid: int) -> float:
    """Seconds a live process has spent runnable but waiting for a CPU (the
    second field of /proc/PID/schedstat); 0 where the kernel does not keep it.

    Why beside its CPU time: a one-thread stage at 0.85 of a core may be idle
    15 % of the time or starved of a core 15 % of the time; only this says which."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def pin(pid: int, cpus: set[int]) -> None:
    """Confine every thread of a live process to ``cpus`` (threads it starts
    later inherit it). ``os.sched_setaffinity`` takes one thread id: the
    serve process also has its read and executor threads."""
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(task.name), cpus)


def serve_alone(serve_pid: int, load_pid: int) -> Callable[[], None]:
    """The serve process alone on the first CPU, its children (the writer
    process) and the load on the others, as when agents run on other
    machines; returns what undoes it for the hub's processes (the load exits)."""
    first, *rest = sorted(os.sched_getaffinity(0))
    pin(serve_pid, {first})
    for pid in (*children(serve_pid), load_pid):
        pin(pid, set(rest))

    def undo() -> None:
        for pid in (serve_pid, *children(serve_pid)):
            pin(pid, {first, *rest})

    return undo


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (the hub's forked store writer), from /proc."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process and its children (the hub's writer process counts as the hub's)."""
    return sum(proc_cpu_s(p) for p in (pid, *children(pid)))


def self_cpu_s() -> float:
    """CPU seconds (user + system) this process has used so far."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def machine_busy_s() -> float:
    """CPU seconds all cores have spent busy since boot (/proc/stat); 0 where it is not there."""
    try:
        cpu = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in cpu[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


#: ``towerctl serve``'s young-generation threshold
#: (``towerctl.hub.server.YOUNG_GC_THRESHOLD``, not imported: the load stays light).
HUB_YOUNG_GC_THRESHOLD: Final = 50_000


def collect_as_the_hub() -> None:
    """The baseline servers (echo, null hub) collect garbage as ``towerctl
    serve`` does, as they run on its event loop: the physical limit is measured
    with the hub's runtime settings, not CPython's defaults."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(HUB_YOUNG_GC_THRESHOLD, older, oldest)


def quiet_gc() -> None:
    """Keep the instruments' own garbage collector out of the figures; call once
    connected, before measuring.

    The load takes the timestamps of every latency figure, so a pause in it
    adds to every action in flight. Timed with ``gc.callbacks`` under
    ``hub_probe.py --rate 1000`` (1,000 agents), the load ran full collections
    of 27-65 ms inside the measuring windows (nothing to free: it walked the
    1,000 connections it holds) and the orchestrator's operator client
    12-23 ms; those were the runs' 55-78 ms maxima. Everything alive once
    connected is frozen out of the collector's walks, and young objects are
    collected every 50,000 allocations, as in ``towerctl serve``."""
    gc.collect()
    gc.freeze()
    collect_as_the_hub()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": float(len(values)),
        "p50": pct(values, 50),
        "p95": pct(values, 95),
        "p99": pct(values, 99),
        "max": max(values) if values else float("nan"),
        "stdev": statistics.pstdev(values) if len(values) > 1 else 0.0,
    }


def spread(values: list[float]) -> dict[str, float]:
    """Median and min-max of per-window figures."""
    if not values:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan")}
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def windowed(
    samples: list[tuple[float, float]], window_s: float, span_s: float | None = None
) -> dict[str, object]:
    """``(t, value)`` samples: pooled summary, and p50/p99 per window as median and min-max.

    A window's figures count only when it holds a sample; ``windows`` lists each
    window's n, p50 and p99, so that one bad window shows as one bad window.
    Samples past ``span_s`` (a round that began before the end) count in the
    last window rather than making a window of their own.
    """
    last = max(0, math.ceil(span_s / window_s) - 1) if span_s else None
    buckets: dict[int, list[float]] = {}
    for t, value in samples:
        k = int(t // window_s)
        buckets.setdefault(k if last is None else min(k, last), []).append(value)
    per = [
        {"window": k, "n": len(v), "p50": pct(v, 50), "p99": pct(v, 99)} for k, v in sorted(buckets.items())
    ]
    return {
        "all": summary([v for _, v in samples]),
        "window_s": window_s,
        "window_p50": spread([float(w["p50"]) for w in per]),
        "window_p99": spread([float(w["p99"]) for w in per]),
        "windows": per,
    }


def gc_pause_buckets(url: str) -> dict[float, float]:
    """The hub's ``towerctl_gc_pause_seconds`` histogram over all generations,
    as {upper bound in seconds: collections at most that long}, read from its
    ``/metrics`` (blocking: call it in a thread)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    http = url.replace("wss://", "https://").replace("ws://", "http://").rstrip("/") + "/metrics"
    with urllib.request.urlopen(http, timeout=10) as resp:
        text = resp.read().decode()
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "towerctl_gc_pause_seconds":
            continue
        for s in family.samples:
            if s.name.endswith("_bucket"):
                le = float(s.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + s.value
    return buckets


def gc_pauses_between(before: dict[float, float], after: dict[float, float]) -> dict[str, float]:
    """What the hub's collector did between two ``gc_pause_buckets`` readings:
    how many collections, how many took over 10 ms, and the bound of the longest
    (ms; ``inf`` past the histogram's last bucket)."""
    delta = {le: after.get(le, 0.0) - before.get(le, 0.0) for le in after}
    total = delta.get(math.inf, 0.0)
    over_10ms = total - delta.get(0.01, total)
    longest = min((le for le, n in delta.items() if n >= total), default=0.0) if total else 0.0
    return {"collections": total, "over_10ms": over_10ms, "longest_le_ms": round(longest * 1000, 1)}
