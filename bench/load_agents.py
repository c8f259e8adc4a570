"""Load generator: N real shims, each proposing real actions at a steady rate.

Run by the benchmarks in a separate process:
    python bench/load_agents.py URL TOKEN --sessions 500 --actions-per-s 200 --duration 30 [--control]
Every action goes through the real `Shim.guard` (classify, policy, propose,
started, report); nothing is executed on the machine. Each agent starts its
actions on a schedule (every sessions/actions-per-s seconds, jittered), not a
pause after each one, so the rate offered does not sag with the hub's latency.
With `--control` the rate can be changed while running: a line
`{"actions_per_s": X}` on stdin takes effect from each agent's next action
(the caller calibrates the load in operator events with it). With `--ask-every S`
`--askers K` extra prod sessions (default 1) each propose a destructive
action S seconds after their previous one was decided, and wait for an
operator; several askers keep an approval waiting while one is decided. It stops after
`--duration` or on SIGTERM, and prints its counts either way.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import sys
import time

from agent_shim import Action, ActionDenied, SessionKilled, Shim, new_action_id

READS = ("kubectl get pods -n payments", "git status", "ls -la /srv", "cat /etc/hostname", "df -h")


class Pace:
    """The load's current rate, shared by all agents (changed by ``control``)."""

    def __init__(self, sessions: int, actions_per_s: float) -> None:
        self.sessions = sessions
        self.actions_per_s = actions_per_s

    @property
    def interval(self) -> float:
        return self.sessions / max(self.actions_per_s, 0.01)


async def agent(
    url: str, token: str, i: int, pace: Pace, stop: asyncio.Event, counts: dict[str, int]
) -> None:
    async with Shim(url, token, agent=f"load-{i:04d}", env="dev", connect_timeout=30) as shim:
        due = time.monotonic() + random.uniform(0, pace.interval)
        while not stop.is_set():
            # On schedule: the next action is due an interval after this one was, however
            # long this one took (but a late agent does not burst to catch up).
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if stop.is_set():
                break
            due = max(due, time.monotonic() - pace.interval) + pace.interval * random.uniform(0.8, 1.2)
            action = Action(action_id=new_action_id(), kind="shell", command=random.choice(READS))
            try:
                async with shim.guard(action) as ok:
                    ok.set_result(0, b"ok")
                counts["actions"] += 1
            except (ActionDenied, SessionKilled):
                counts["denied"] += 1


async def asker(
    url: str, token: str, i: int, every: float, stop: asyncio.Event, counts: dict[str, int]
) -> None:
    async with Shim(url, token, agent=f"prod-asker-{i}", env="prod", connect_timeout=30) as shim:
        while not stop.is_set():
            await asyncio.sleep(every)
            command = f"kubectl delete pod web-{counts['asks']}"
            action = Action(action_id=new_action_id(), kind="shell", command=command)
            counts["asks"] += 1
            try:
                async with shim.guard(action) as ok:
                    ok.set_result(0)
                counts["approved"] += 1
            except ActionDenied:
                counts["denied"] += 1


async def control(pace: Pace) -> None:
    """Read ``{"actions_per_s": X}`` lines from stdin until it closes; answer each on stdout."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            pace.actions_per_s = float(json.loads(line)["actions_per_s"])
            print(json.dumps({"event": "pace", "actions_per_s": pace.actions_per_s}), flush=True)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("token")
    ap.add_argument("--sessions", type=int, default=100)
    ap.add_argument("--actions-per-s", type=float, default=100.0)
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--ask-every", type=float, default=0.0)
    ap.add_argument("--askers", type=int, default=1)
    ap.add_argument("--control", action="store_true", help='read {"actions_per_s": X} lines on stdin')
    args = ap.parse_args()
    stop = asyncio.Event()
    counts = {"actions": 0, "denied": 0, "asks": 0, "approved": 0}
    pace = Pace(args.sessions, args.actions_per_s)
    tasks = [
        asyncio.create_task(agent(args.url, args.token, i, pace, stop, counts))
        for i in range(args.sessions)
    ]
    if args.ask_every > 0:
        for i in range(args.askers):
            tasks.append(asyncio.create_task(asker(args.url, args.token, i, args.ask_every, stop, counts)))
    controller = asyncio.create_task(control(pace)) if args.control else None
    print(json.dumps({"event": "started", "sessions": args.sessions}), flush=True)
    t0 = time.monotonic()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), args.duration)
    stop.set()
    # An asker waiting for an operator who has gone would wait for its timeout: don't.
    _, late = await asyncio.wait(tasks, timeout=5)
    for task in late:
        task.cancel()
    if controller is not None:
        controller.cancel()
    counts["actions_per_s_last"] = pace.actions_per_s  # type: ignore[assignment]
    counts["elapsed_s"] = round(time.monotonic() - t0, 2)  # type: ignore[assignment]
    print(json.dumps({"event": "done", **counts}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
