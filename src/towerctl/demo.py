"""Simulated agents for ``towerctl up --demo``: the real shim, nothing executed.

A newcomer should see the product work in the first minute: sessions in dev,
staging and prod, reads flowing through, writes and deletions waiting in the
approval queue, a policy rule refusing something, a runaway loop paused by the
rate limit. So each demo agent is a real :class:`agent_shim.Shim` with a real
agent token over the real websocket, judged by the real classifier and policy;
only the *running* is fake. Inside ``shim.guard(action)`` the agent records a
made-up outcome with ``approved.set_result(...)`` and never starts a process:
this module imports nothing that can (a test reads its source to keep it so).

What the agents say and do lives in :mod:`towerctl.demo_script`; this module
is the loop: pick an episode, propose its steps with a pause between them,
carry on after a denial (running the episode's re-plan, as a real agent
would), stop when killed or when ``stop`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass, field
from typing import Any, Final

from agent_shim import Action, ActionDenied, SessionKilled, Shim, new_action_id
from agent_shim.policy import PolicyDoc, default_policies
from towerctl.demo_script import Episode, Persona, Step, episode_values, fill, persona

__all__ = ["DEFAULT_AGENTS", "DEFAULT_PACE", "AgentRecord", "demo_policy", "run_demo_agents"]

log = logging.getLogger("towerctl.demo")

DEFAULT_AGENTS: Final = 6
#: Seconds between two actions of one agent: slow enough to follow, fast enough
#: that something happens every second or so across six agents.
DEFAULT_PACE: Final = (0.5, 4.0)
#: How far past the rate limit a burst goes: enough to trip it, not a flood.
BURST_OVERSHOOT: Final = 3
#: How long stopping waits for the agents to close their shims before cancelling them.
SHUTDOWN_GRACE_S: Final = 5.0
#: Approval timeouts for the demo database: long enough to read the approval
#: view, short enough that an unattended demo does not sit blocked for ten minutes.
DEMO_APPROVAL_TIMEOUT_S: Final = {"prod": 120, "staging": 180, "dev": 180}


@dataclass(slots=True)
class AgentRecord:
    """What one demo agent did, for tests and for the exit summary."""

    agent: str
    env: str
    session_id: str = ""
    proposed: int = 0
    ran: int = 0
    denied: list[str] = field(default_factory=list)
    killed: bool = False
    error: str = ""


def demo_policy() -> PolicyDoc:
    """The built-in policies with demo-sized approval timeouts (rules and limits unchanged)."""
    envs = default_policies().environments
    return PolicyDoc(
        environments={
            name: pol.model_copy(update={"approval_timeout_s": DEMO_APPROVAL_TIMEOUT_S.get(name, 120)})
            for name, pol in envs.items()
        }
    )


async def _nap(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to ``seconds``; True when ``stop`` was set meanwhile (wake at once)."""
    if stop.is_set():
        return True
    if seconds <= 0:
        await asyncio.sleep(0)
        return stop.is_set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


class _DemoAgent:
    """One persona on one shim; everything random comes from its own generator."""

    def __init__(
        self,
        who: Persona,
        record: AgentRecord,
        rng: random.Random,
        *,
        seeded: bool,
        pace: tuple[float, float],
        max_actions: int | None,
    ) -> None:
        self.who = who
        self.record = record
        self.rng = rng
        self.seeded = seeded
        #: Set when the demo stops or this session is killed: naps end, waits are cancelled.
        self.halt = asyncio.Event()
        self.pace = pace
        self.max_actions = max_actions

    def _action_id(self) -> str:
        # Seeded runs (tests, screenshots) replay the same ids; live demos use real ones.
        return f"{self.rng.getrandbits(128):032x}" if self.seeded else new_action_id()

    def _budget_left(self) -> bool:
        return self.max_actions is None or self.record.proposed < self.max_actions

    def _killed(self, exc: SessionKilled) -> None:
        """Called by the shim the moment a kill arrives, even while this agent is idle."""
        self.record.killed = True
        self.halt.set()
        log.info("%s: killed by %s: %s", self.who.agent, exc.by or "an operator", exc.reason)

    async def run(self, url: str, token: str) -> None:
        """Connect, work until halted (stop or kill), then close the shim without hurrying it.

        The work runs in its own task so that an agent blocked in ``admit``
        (waiting for an approval, or paused) can be cancelled, while the shim's
        ``close()`` still runs to completion: a cancelled close would leave the
        shim's connection task alive and reconnecting.
        """
        session_id = f"s-{self.rng.getrandbits(64):016x}" if self.seeded else None
        async with Shim(
            url,
            token,
            agent=self.who.agent,
            env=self.who.env,
            host=self.who.host,
            session_id=session_id,
            on_kill=self._killed,
        ) as shim:
            self.record.session_id = shim.session_id
            work = asyncio.create_task(self._work(shim))
            halted = asyncio.create_task(self.halt.wait())
            try:
                await asyncio.wait([work, halted], return_when=asyncio.FIRST_COMPLETED)
            finally:
                work.cancel()
                halted.cancel()
                await asyncio.gather(work, halted, return_exceptions=True)
            failure = None if work.cancelled() else work.exception()
            if failure is not None:
                raise failure

    async def _work(self, shim: Shim) -> None:
        try:
            while self._budget_left() and not await _nap(self.halt, self.rng.uniform(*self.pace)):
                episode = self.rng.choices(self.who.episodes, [e.weight for e in self.who.episodes])[0]
                await self._episode(shim, episode)
            # Out of budget (a scripted run): stay connected, so the session stays on screen.
            await self.halt.wait()
        except SessionKilled:
            self.record.killed = True

    async def _episode(self, shim: Shim, episode: Episode) -> None:
        values = episode_values(self.rng)
        steps = episode.steps
        if episode.burst:
            limit = shim.policy.max_actions_per_minute
            steps = steps[:1] * ((limit or 0) + BURST_OVERSHOOT)
        for i, step in enumerate(steps):
            if i and await _nap(self.halt, self._gap(episode)):
                return
            if not self._budget_left():
                return
            try:
                ok = await self._act(shim, step, values)
            except ActionDenied as exc:
                self.record.denied.append(exc.reason)
                log.info("%s: denied (%s): %s", self.who.agent, exc.by or "policy", exc.reason)
                await self._replan(shim, episode, values)
                return
            if not ok:
                return  # a failed step (tests, an upgrade): the rest of the plan no longer holds

    def _gap(self, episode: Episode) -> float:
        """A runaway loop does not stop to think; everyone else does."""
        if episode.burst:
            return self.rng.uniform(0.02, 0.1) * min(1.0, self.pace[1])
        return self.rng.uniform(*self.pace)

    async def _replan(self, shim: Shim, episode: Episode, values: dict[str, str]) -> None:
        for step in episode.replan:
            if await _nap(self.halt, self.rng.uniform(*self.pace)) or not self._budget_left():
                return
            try:
                if not await self._act(shim, step, values):
                    return
            except ActionDenied as exc:
                self.record.denied.append(exc.reason)
                return

    async def _act(self, shim: Shim, step: Step, values: dict[str, str]) -> bool:
        """Propose ``step``; once admitted, pretend to run it. True when the pretend run succeeded."""
        action = Action(
            action_id=self._action_id(),
            kind=step.kind,
            command=fill(step.command, values),
            target=step.target or self.who.target,
            reason=fill(step.reason, values),
            rollback=fill(step.rollback, values),
            dry_run=fill(step.dry_run, values),
            declared_risk=step.declared,
        )
        self.record.proposed += 1
        async with shim.guard(action) as approved:
            approved.verify()
            # Simulated work: a short wait and a made-up result. Nothing runs.
            await _nap(self.halt, self.rng.uniform(0.05, 0.5) * min(1.0, self.pace[1]))
            failed = self.rng.random() < step.fail_rate
            if failed:
                approved.set_result(1, fill(step.fail_output, values))
            else:
                approved.set_result(0, fill(step.output, values))
        self.record.ran += 1
        return not failed


async def run_demo_agents(
    url: str,
    token: str,
    *,
    count: int,
    stop: asyncio.Event,
    seed: int | None = None,
    pace: tuple[float, float] = DEFAULT_PACE,
    max_actions: int | None = None,
) -> list[AgentRecord]:
    """Run ``count`` demo agents against the hub at ``url`` until ``stop`` is set.

    ``token`` must be an agent token valid for dev, staging and prod. A fixed
    ``seed`` replays the same choices, action ids and session ids for each agent
    (timing still depends on the machine); ``pace`` is the pause range between
    actions in seconds; ``max_actions`` makes each agent go quiet, still
    connected, after that many proposals (for screenshots). Returns when
    ``stop`` is set or every agent has ended (killed), with what each one did.
    """
    if count < 1:
        return []
    agents: list[_DemoAgent] = []
    for i in range(count):
        who = persona(i)
        rng = random.Random(f"towerctl-demo:{seed}:{i}") if seed is not None else random.Random()
        record = AgentRecord(agent=who.agent, env=who.env)
        agents.append(
            _DemoAgent(who, record, rng, seeded=seed is not None, pace=pace, max_actions=max_actions)
        )
    tasks = [asyncio.create_task(_guarded(a, url, token), name=f"demo-{a.who.agent}") for a in agents]
    everyone = asyncio.gather(*tasks)
    stopped = asyncio.create_task(stop.wait())
    try:
        waiters: list[asyncio.Future[Any]] = [everyone, stopped]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for agent in agents:
            agent.halt.set()
        # Each agent closes its own shim (delivering its last reports); only one
        # that is stuck past the grace period is cancelled.
        await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE_S)
    finally:
        stopped.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, stopped, return_exceptions=True)
        with contextlib.suppress(asyncio.CancelledError):
            await everyone
    return [a.record for a in agents]


async def _guarded(agent: _DemoAgent, url: str, token: str) -> None:
    """One agent's failure (a bug, a refused token) is logged; it never takes the others down."""
    try:
        await agent.run(url, token)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        agent.record.error = f"{type(exc).__name__}: {exc}"
        log.warning("demo agent %s stopped: %s", agent.who.agent, agent.record.error)
