"""The shim's pure decision: classifier + policy + rate window, no I/O.

Kept apart from the transport so that the same judgement can be tested
table-driven and reused by the hub, which judges every proposal again.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent_shim.policy import EnvPolicy, Evaluation, RateWindow, evaluate, policy_for
from agent_shim.protocol import Action, Propose
from agent_shim.risk import classify
from agent_shim.types import Verdict


@dataclass(frozen=True, slots=True)
class Ruling:
    """A judgement on one action, ready to be proposed."""

    action: Action
    digest: str
    evaluation: Evaluation
    timeout_s: int

    @property
    def verdict(self) -> Verdict:
        return self.evaluation.verdict

    @property
    def explanation(self) -> str:
        return self.evaluation.explanation

    def propose(self, now_ms: int) -> Propose:
        ev = self.evaluation
        return Propose(
            action=self.action,
            digest=self.digest,
            risk=ev.risk,
            reasons=tuple(r[:4096] for r in ev.reasons),
            verdict=ev.verdict,
            rule=ev.rule,
            explanation=ev.explanation[:4096],
            proposed_at=now_ms,
        )


def judge(policy: EnvPolicy, env: str, action: Action) -> Ruling:
    """Classify ``action`` and apply ``policy``: the one judgement both sides make."""
    return Ruling(
        action=action,
        digest=action.digest(),
        evaluation=assess(policy, env, action),
        timeout_s=policy.approval_timeout_s,
    )


def assess(policy: EnvPolicy, env: str, action: Action) -> Evaluation:
    """:func:`judge` without the digest, for the hub: it has just computed the
    digest from the dump it stores, and a second one cost ~15 us per action."""
    assessment = classify(action.kind, action.command, declared=action.declared_risk)
    return evaluate(
        policy,
        env,
        action.kind,
        action.command,
        assessment.risk,
        assessment.reasons,
        assessment.segments,
    )


class Gate:
    """Per-session judge: the environment, its current policy and its rate window."""

    def __init__(self, env: str, policy: EnvPolicy | None = None) -> None:
        self.env = env
        self.policy = policy if policy is not None else policy_for(None, env)
        self._rate = RateWindow(self.policy.max_actions_per_minute)

    def set_policy(self, policy: EnvPolicy) -> None:
        if policy.max_actions_per_minute != self.policy.max_actions_per_minute:
            self._rate = RateWindow(policy.max_actions_per_minute)
        self.policy = policy

    def rate_exceeded(self, now: float) -> bool:
        return self._rate.hit(now)

    def reset_rate(self) -> None:
        """An operator resumed the session: the burst that paused it is forgiven."""
        self._rate.reset()

    def rate(self, now: float) -> int:
        return self._rate.rate(now)

    def judge(self, action: Action) -> Ruling:
        return judge(self.policy, self.env, action)
