"""The shim's pure decision: classifier + policy + rate window, no I/O.

Kept apart from the transport so that the same judgement can be tested
table-driven and reused by the hub, which judges every proposal again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

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


def judge(
    policy: EnvPolicy,
    env: str,
    action: Action,
    assessed_by: Callable[[EnvPolicy, str, Action], Evaluation] | None = None,
) -> Ruling:
    """Classify ``action`` and apply ``policy``: the one judgement both sides
    make. ``assessed_by``: an :class:`Assessor` (or :func:`assess`, the default)."""
    return Ruling(
        action=action,
        digest=action.digest(),
        evaluation=(assess if assessed_by is None else assessed_by)(policy, env, action),
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


#: Commands longer than this are judged every time: a memo of long, unique
#: commands would hold megabytes and never hit.
MEMO_COMMAND_CHARS: Final = 512
#: Judgements remembered per :class:`Assessor` (the oldest goes first).
MEMO_ENTRIES: Final = 4096


class Assessor:
    """:func:`assess`, remembering the last ``MEMO_ENTRIES`` judgements.

    Why: a fleet runs the same few hundred commands over and over, and the hub
    judges every proposal again (~9 us of classifying and policy matching per
    action, the largest pure step on its path). A judgement depends on nothing
    but the policy, the environment and the action's kind, command and
    declared risk (never on its id, target or reason; see :func:`assess`), so
    that is the key. The policy is keyed by identity and kept in the entry,
    so a replaced policy (a new object) can never match an entry made under
    the old one, and the old one's id cannot be reused while an entry holds it.
    """

    def __init__(self, max_entries: int = MEMO_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max = max_entries
        self._memo: dict[tuple[int, str, str, str, str | None], tuple[EnvPolicy, Evaluation]] = {}

    def __len__(self) -> int:
        return len(self._memo)

    def __call__(self, policy: EnvPolicy, env: str, action: Action) -> Evaluation:
        if len(action.command) > MEMO_COMMAND_CHARS:
            return assess(policy, env, action)
        key = (id(policy), env, action.kind, action.command, action.declared_risk)
        memo = self._memo
        hit = memo.get(key)
        if hit is not None and hit[0] is policy:
            return hit[1]
        evaluation = assess(policy, env, action)
        if len(memo) >= self._max and key not in memo:
            del memo[next(iter(memo))]
        memo[key] = (policy, evaluation)
        return evaluation


class Gate:
    """Per-session judge: the environment, its current policy and its rate window."""

    def __init__(self, env: str, policy: EnvPolicy | None = None) -> None:
        self.env = env
        self.policy = policy if policy is not None else policy_for(None, env)
        self._rate = RateWindow(self.policy.max_actions_per_minute)
        self._assess = Assessor()

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
        """:func:`judge`, with this session's judgements remembered (an agent
        repeats itself: the shim's cost per allowed action is mostly this)."""
        return judge(self.policy, self.env, action, self._assess)
