"""The serve process's own work per action, without sockets: a steadier instrument.

    python bench/serve_path.py [--agents 1000] [--actions 200000] [--rounds 5] [--sync full]

A real hub (``Hub``, real SQLite file, the forked writer process, the bench's
policy), started as ``towerctl serve`` starts it (young-generation threshold,
start-up objects frozen, uvloop), and N sessions in its registry. Each session
runs a closed loop of the load's own messages (``load_messages.Templates``:
the proposal of one action, then its report, as the lines of one frame) through
the hub's message entry point (``ConnectionLoops._agent_message``), as
websockets would hand them over. The sessions have no socket, so acks are built
but not written: what is left is everything the serve process does per action
except websockets' framing (which ``null_hub.py`` measures) and the send.

Why: a fleet run's rates move ±20 % between runs on this shared machine, and
its CPU per action ±5-10 %, which hides the few per cent a change to the hot
path is worth. This loop has no load process competing for the cores, so its
CPU per action repeats to a few per cent; it prints the serve process's and
the writer process's CPU per action for each round, and their median.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import BENCH_POLICY, proc_cpu_s, self_cpu_s
from load_messages import READS, Templates

from agent_shim.action_ids import new_action_id
from agent_shim.policy import RateWindow, parse_policy_toml
from towerctl.hub.registry import LiveSession
from towerctl.hub.server import Hub, HubConfig, freeze_startup_objects, tune_gc_for_serving
from towerctl.store.models import SessionRow
from towerctl.store.tx import Tx


async def open_sessions(hub: Hub, n: int) -> list[LiveSession]:
    """Sessions as ``agent_hello`` leaves them, stored first (actions refer to them)."""
    assert hub.service is not None and hub.store is not None
    now = time.time_ns() // 1_000_000
    out = []
    for i in range(n):
        sess = LiveSession(
            session_id=f"s-bench-{i:06d}",
            agent=f"load-{i:04d}",
            env="dev",
            host="bench",
            pid=None,
            status="active",
            started_at=now,
            last_seen=now,
        )
        same = {f.name: getattr(sess, f.name) for f in fields(SessionRow) if f.name != "ended_at"}
        await hub.store.session_started(SessionRow(**same, ended_at=None), resumed=False, ts_ms=now)
        sess.rate = RateWindow(hub.service.reg.policy("dev")[1].max_actions_per_minute)
        hub.service.reg.sessions[sess.session_id] = sess
        out.append(sess)
    return out


def messages(tpl: Templates, count: int) -> list[tuple[str, str]]:
    """One agent's (proposal, report) pairs, made before the clock starts: the
    load's work of building them is not the hub's."""
    out = []
    for i in range(count):
        aid = new_action_id()
        now = time.time_ns() // 1_000_000
        data, digest, _ = tpl.propose(READS[i % len(READS)], aid, now)
        out.append((data, tpl.report_json(aid, digest, now)))
    return out


async def agent(hub: Hub, sess: LiveSession, msgs: list[tuple[str, str]]) -> None:
    """Propose, wait for the hub's answer (after its commit), report, as the load
    does: the report goes with the next proposal."""
    held: str | None = None
    for proposal, report in msgs:
        if held is not None:
            await hub._agent_message(None, sess, held)  # type: ignore[arg-type]
        await hub._agent_message(None, sess, proposal)  # type: ignore[arg-type]
        held = report
    if held is not None:
        await hub._agent_message(None, sess, held)  # type: ignore[arg-type]


async def run(args: argparse.Namespace, home: Path) -> dict[str, object]:
    tune_gc_for_serving()
    hub = Hub(
        HubConfig(
            db_path=home / "tower.db",
            key_path=home / "audit.key",
            synchronous=args.sync.upper(),
            writer_process=True,
        )
    )
    await hub.start(parse_policy_toml(BENCH_POLICY))
    try:
        freeze_startup_objects()
        assert hub.store is not None and hub.service is not None
        writer_pid = hub.store._writer.pid  # type: ignore[attr-defined]
        sessions = await open_sessions(hub, args.agents)
        tpl = Templates(hub.service.reg.policy("dev")[1], "dev")
        per_agent = max(1, args.actions // args.agents)
        rounds: list[dict[str, float]] = []
        for _ in range(args.rounds):
            work = [messages(tpl, per_agent) for _ in sessions]
            cpu0, w0, t0 = self_cpu_s(), proc_cpu_s(writer_pid), time.perf_counter()
            await asyncio.gather(*(agent(hub, s, m) for s, m in zip(sessions, work, strict=True)))
            # The last reports wait (lazily) for a batch: a checkpoint is one.
            await hub.store._writer.submit(Tx.checkpoint)
            cpu1, w1, t1 = self_cpu_s(), proc_cpu_s(writer_pid), time.perf_counter()
            n = per_agent * len(sessions)
            rounds.append(
                {
                    "actions": n,
                    "actions_per_s": round(n / (t1 - t0)),
                    "serve_us": round((cpu1 - cpu0) / n * 1e6, 1),
                    "writer_us": round((w1 - w0) / n * 1e6, 1),
                }
            )
            print(json.dumps(rounds[-1]), flush=True)
    finally:
        await hub.stop()
    with contextlib.closing(sqlite3.connect(f"file:{home / 'tower.db'}?mode=ro", uri=True)) as db:
        (finished,) = db.execute("SELECT count(*) FROM actions WHERE state = 'succeeded'").fetchone()
    return {
        "agents": args.agents,
        "sync": args.sync,
        # Every action the loop ran is in the store with its outcome, or the figures mean nothing.
        "actions": int(sum(r["actions"] for r in rounds)),
        "recorded_with_outcome": finished,
        "serve_us_median": statistics.median(r["serve_us"] for r in rounds),
        "writer_us_median": statistics.median(r["writer_us"] for r in rounds),
        "rounds": rounds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--actions", type=int, default=100_000, help="per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--sync", choices=("full", "normal"), default="full")
    args = ap.parse_args()
    from towerctl.cli.common import loop_factory

    # A round of 100,000 actions leaves ~270 MB of log behind: removed at the end.
    with (
        tempfile.TemporaryDirectory(prefix="serve-path-") as home,
        asyncio.Runner(loop_factory=loop_factory("auto")) as runner,
    ):
        result = runner.run(run(args, Path(home)))
    print(
        f"serve path, {args.agents} sessions, sync {args.sync}: serve {result['serve_us_median']} us, "
        f"writer {result['writer_us_median']} us per allowed action (median of {args.rounds} rounds)"
    )
    print(json.dumps(result))
    if result["recorded_with_outcome"] != result["actions"]:
        sys.exit(f"only {result['recorded_with_outcome']} of {result['actions']} actions were recorded")


if __name__ == "__main__":
    main()
