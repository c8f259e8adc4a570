"""What tui_bench.py measures the console with, and how it steers the load.

The bench times and counts at the console's own client (``TimedClient``), not
by polling the screen, so a figure is the moment the client sent or received,
not the moment a poll noticed. The pace of the load is set from the same count
(``Pacer``): events per action are the hub's business, so the bench asks for
hub events/s, not actions/s. ``Samplers`` run beside the operator in the same
event loop, so what they see (lag, backlog) is what a keypress meets.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from agent_shim.protocol import Decide, Result
from towerctl.tui.app import TowerApp
from towerctl.tui.hub_link import ConsoleClient

#: The pace aims this much above the target, so that the noise stays above it.
AIM = 1.06


class TimedClient(ConsoleClient):
    """The console's client; notes when a decision leaves and comes back, and counts events."""

    #: Hub events received (as they arrive off the socket; replies to requests not counted).
    received = 0
    #: (sent, answered) futures for the next decision, resolved with perf_counter() stamps.
    waiter: tuple[asyncio.Future[float], asyncio.Future[float]] | None = None

    def _apply(self, msg: Any) -> None:
        if not isinstance(msg, Result):
            TimedClient.received += 1
        super()._apply(msg)

    async def _request(self, build: Any, **fields: object) -> Any:
        waiter = TimedClient.waiter if build is Decide else None
        if waiter is not None:
            TimedClient.waiter = None
            waiter[0].set_result(time.perf_counter())
        try:
            return await super()._request(build, **fields)
        finally:
            if waiter is not None and not waiter[1].done():
                waiter[1].set_result(time.perf_counter())


class Pacer:
    """Sets the load's actions/s so that the console receives the target hub events/s."""

    def __init__(self, load: asyncio.subprocess.Process, target: float, actions_per_s: float) -> None:
        self.load, self.target, self.actions_per_s = load, target, actions_per_s
        self.ceiling = actions_per_s * 6  # a console that cannot read faster is a finding, not a reason
        #: (seconds since the bench started, actions/s asked, events/s received at that pace)
        self.history: list[tuple[float, float, float]] = []
        self.events_per_action = float("nan")
        self.t_start = time.perf_counter()
        self.running = True

    async def measure(self, span: float) -> float:
        n0, t = TimedClient.received, time.perf_counter()
        await asyncio.sleep(span)
        rate = (TimedClient.received - n0) / (time.perf_counter() - t)
        self.events_per_action = rate / self.actions_per_s
        self.history.append((round(t - self.t_start, 1), round(self.actions_per_s, 1), round(rate, 1)))
        return rate

    async def pace(self, actions_per_s: float) -> None:
        self.actions_per_s = max(1.0, min(actions_per_s, self.ceiling))
        assert self.load.stdin is not None
        self.load.stdin.write(json.dumps({"actions_per_s": round(self.actions_per_s, 1)}).encode() + b"\n")
        await self.load.stdin.drain()

    async def calibrate(self, rounds: int = 5, settle: float = 1.5, span: float = 2.5) -> float:
        """Until the events/s received is on target (or ``rounds`` are spent): measure, re-pace."""
        rate = 0.0
        for _ in range(rounds):
            await asyncio.sleep(settle)  # each agent takes up a new pace at its next action
            rate = await self.measure(span)
            print(
                f"calibrating: {self.actions_per_s:.0f} actions/s -> {rate:.0f} events/s "
                f"({self.events_per_action:.2f} per action)",
                file=sys.stderr,
            )
            if self.target <= rate <= self.target * AIM * 1.06:
                break
            await self.pace(self.target * AIM / max(self.events_per_action, 0.1))
        return rate

    async def hold(self, every: float = 3.0) -> None:
        """During the measurement: nudge the pace back when the events/s received drifts off target."""
        while self.running:
            rate = await self.measure(every)
            if self.running and not self.target * 1.01 <= rate <= self.target * AIM * 1.06:
                step = min(1.2, max(0.85, (self.target * AIM / max(rate, 1.0)) ** 0.7))
                await self.pace(self.actions_per_s * step)


class Samplers:
    """Loop lag, backlog and event rate, sampled in the background while the bench runs."""

    def __init__(self, app: TowerApp, t0: float) -> None:
        self.app, self.t0 = app, t0
        self.lag: list[tuple[float, float]] = []
        self.backlog: list[tuple[float, float]] = []
        self.client_queue: list[tuple[float, float]] = []
        self.rate: list[tuple[float, float]] = []
        self.running = True

    async def lag_probe(self) -> None:
        while self.running:
            t = time.perf_counter()
            await asyncio.sleep(0.05)
            now = time.perf_counter()
            self.lag.append((now - self.t0, (now - t - 0.05) * 1000))

    async def backlog_probe(self) -> None:
        last_n, last_t = TimedClient.received, time.perf_counter()
        while self.running:
            await asyncio.sleep(0.1)
            now = time.perf_counter()
            self.backlog.append((now - self.t0, float(self.app.backlog)))
            client = self.app._link.client
            if client is not None:
                self.client_queue.append((now - self.t0, float(client._events.qsize())))
            if now - last_t >= 1.0:
                self.rate.append((now - self.t0, (TimedClient.received - last_n) / (now - last_t)))
                last_n, last_t = TimedClient.received, now
