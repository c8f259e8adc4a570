"""The hub's in-memory view: live sessions, pending actions, policies, freezes.

The store is the truth; this is the working set the hub needs at wire speed
(who is connected, which actions wait, which timers run). It is rebuilt from
the store at start-up, so a restarted hub offers pending actions again.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Final

from websockets.asyncio.server import ServerConnection

from agent_shim.gate import Assessor
from agent_shim.policy import EnvPolicy, RateWindow, Rule, policy_for
from agent_shim.protocol import (
    Action,
    ActionInfo,
    PolicyInfo,
    SessionActivity,
    SessionInfo,
    SessionStatus,
)
from agent_shim.types import ActionState, Risk, Verdict

RECENT_ACTIONS: Final = 500
#: Actions kept in memory until they finish. Beyond this the oldest are dropped
#: and a late started/report for them is checked against the store instead.
LIVE_LIMIT: Final = 100_000
#: Operators see at most this much of a session's current command.
CURRENT_ACTION_CHARS: Final = 200


@dataclass(slots=True)
class LiveSession:
    session_id: str
    agent: str
    env: str
    host: str
    pid: int | None
    status: SessionStatus
    started_at: int
    last_seen: int
    token_id: str = ""
    conn: ServerConnection | None = None
    rate: RateWindow = field(default_factory=lambda: RateWindow(None))
    current_action: str = ""
    pending: set[str] = field(default_factory=set)
    #: Why the session is paused: "operator", "freeze", "rate". Resuming by an
    #: operator clears all; unfreezing clears only "freeze".
    pause_reasons: set[str] = field(default_factory=set)

    def info(self, now_rate: int = 0) -> SessionInfo:
        # Validated, not model_construct: pydantic's construct is pure Python
        # and takes twice as long as its compiled validation (10 vs 6 us).
        return SessionInfo(
            session_id=self.session_id,
            agent=self.agent,
            env=self.env,
            host=self.host,
            pid=self.pid,
            status=self.status,
            connected=self.conn is not None,
            started_at=self.started_at,
            last_seen=self.last_seen,
            current_action=self.current_action[:CURRENT_ACTION_CHARS],
            pending=len(self.pending),
            rate=now_rate,
        )

    def activity(self, now_rate: int = 0) -> SessionActivity:
        """The part of :meth:`info` that changes with every action."""
        return SessionActivity(
            session_id=self.session_id,
            last_seen=self.last_seen,
            current_action=self.current_action[:CURRENT_ACTION_CHARS],
            rate=now_rate,
        )


@dataclass(slots=True)
class PendingAction:
    info: ActionInfo
    timer: asyncio.TimerHandle | None = None


@dataclass(slots=True)
class ProposedAction:
    """A proposal's ActionInfo, its fields held and the model built only when
    an operator is sent it (a snapshot, a flush, an action that waits).

    Validating an ActionInfo was ~4 % of the serve process's own work per
    action (``bench/serve_path.py``), and an allowed action is usually
    reported, and forgotten, before any console asks for it. Every field
    comes from a validated message, the session's validated hello or the
    hub's own judgement, so building the model later cannot fail where
    building it at once would not; a test holds the two equal."""

    action: Action
    session_id: str
    agent: str
    env: str
    digest: str
    risk: Risk
    reasons: tuple[str, ...]
    policy_verdict: Verdict
    rule: Rule | None
    explanation: str
    state: ActionState
    created_at: int
    expires_at: int | None

    def action_info(
        self,
        state: ActionState | None = None,
        exit_code: int | None = None,
        duration_ms: int | None = None,
        output_tail: str = "",
    ) -> ActionInfo:
        """The model, in its proposed state or (from a FinishedAction) its outcome's."""
        return ActionInfo(
            action=self.action,
            session_id=self.session_id,
            agent=self.agent,
            env=self.env,
            digest=self.digest,
            risk=self.risk,
            reasons=self.reasons,
            policy_verdict=self.policy_verdict,
            rule=self.rule,
            explanation=self.explanation,
            state=self.state if state is None else state,
            created_at=self.created_at,
            expires_at=self.expires_at,
            exit_code=exit_code,
            duration_ms=duration_ms,
            output_tail=output_tail,
        )


@dataclass(slots=True)
class LiveAction:
    """An action that may still start or finish. ``started`` and ``report``
    are checked against this, not against the store: no read on the hot path."""

    info: ActionInfo | ProposedAction
    state: str


@dataclass(slots=True)
class FinishedAction:
    """An action's state after its report: the proposal's ActionInfo and the
    report's figures, made into one ActionInfo only when an operator is sent it
    (a snapshot, or a coalesced flush). Copying the model at every report was
    ~2.5 % of the serve process under cProfile, and a hub spends much of its
    life with no console attached."""

    info: ActionInfo | ProposedAction
    state: ActionState
    exit_code: int | None
    duration_ms: int | None
    output_tail: str

    @property
    def action_id(self) -> str:
        return self.info.action.action_id

    def action_info(self) -> ActionInfo:
        if isinstance(self.info, ProposedAction):
            return self.info.action_info(self.state, self.exit_code, self.duration_ms, self.output_tail)
        return self.info.model_copy(
            update={
                "state": self.state,
                "exit_code": self.exit_code,
                "duration_ms": self.duration_ms,
                "output_tail": self.output_tail,
            }
        )


#: What the hub remembers of an action it announced.
Announced = ActionInfo | ProposedAction | FinishedAction


def as_info(entry: Announced) -> ActionInfo:
    return entry if isinstance(entry, ActionInfo) else entry.action_info()


def announced_id(entry: Announced) -> str:
    return entry.action_id if isinstance(entry, FinishedAction) else entry.action.action_id


class Registry:
    def __init__(self) -> None:
        self.sessions: dict[str, LiveSession] = {}
        self.pending: dict[str, PendingAction] = {}
        #: Actions being decided right now, and by whom: the first decision wins
        #: synchronously, before any await, so a second operator is told at once.
        self.deciding: dict[str, str] = {}
        self.recent: deque[Announced] = deque(maxlen=RECENT_ACTIONS)
        self.live: dict[str, LiveAction] = {}
        self.policies: dict[str, tuple[int, EnvPolicy]] = {}
        self.frozen: set[str] = set()
        #: The hub's own judgement of each proposal, remembered per command.
        self.assess = Assessor()

    def policy(self, env: str) -> tuple[int, EnvPolicy]:
        """The hub's policy for ``env``: the stored one, else the built-in (version 0)."""
        found = self.policies.get(env)
        if found is not None:
            return found
        return 0, policy_for(None, env)

    def policy_infos(self) -> dict[str, PolicyInfo]:
        envs = set(self.policies) | {"dev", "staging", "prod"} | {s.env for s in self.sessions.values()}
        out: dict[str, PolicyInfo] = {}
        for env in sorted(envs):
            version, pol = self.policy(env)
            out[env] = PolicyInfo(version=version, policy=pol)
        return out

    def sessions_in(self, env: str) -> list[LiveSession]:
        return [s for s in self.sessions.values() if s.env == env]

    def remember(self, entry: Announced) -> None:
        self.recent.append(entry)

    def recent_infos(self, n: int) -> tuple[ActionInfo, ...]:
        """The last ``n`` announcements, oldest first, as operators are sent them."""
        entries = list(self.recent)[-n:] if n > 0 else []
        return tuple(as_info(e) for e in entries)

    def track(self, info: ActionInfo | ProposedAction, state: str) -> LiveAction:
        live = self.live[info.action.action_id] = LiveAction(info, state)
        if len(self.live) > LIVE_LIMIT:
            del self.live[next(iter(self.live))]
        return live

    def forget_session(self, session_id: str) -> None:
        for aid in [a for a, live in self.live.items() if live.info.session_id == session_id]:
            del self.live[aid]
