"""The messages between operator clients and the hub.

Separate from the agent side: operators are authenticated people, agents are
untrusted code, and the two halves change for different reasons. The models
are just as strict all the same (``extra="forbid"``, nothing coerced).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated, Final, Literal

from pydantic import BaseModel, Field

from agent_shim.agent_messages import Action, ErrorMsg
from agent_shim.policy import EnvPolicy, Rule
from agent_shim.protocol_fields import (
    _STRICT,
    Count,
    Digest,
    EnvName,
    ExitCode,
    Id,
    Millis,
    Name,
    Pid,
    Text,
)
from agent_shim.types import ActionState, Risk, Verdict

# --------------------------------------------------------------------------
# operator -> hub

ReqId = Annotated[str, Field(min_length=1, max_length=64)]


class OperatorHello(BaseModel):
    model_config = _STRICT
    type: Literal["hello"] = "hello"
    protocol: Count
    client: Annotated[str, Field(max_length=64)] = ""


class Decide(BaseModel):
    """An operator's decision, bound to the digest the operator was shown."""

    model_config = _STRICT
    type: Literal["decide"] = "decide"
    req: ReqId
    action_id: Id
    digest: Digest
    approve: bool
    reason: Text = ""


class SessionControl(BaseModel):
    model_config = _STRICT
    type: Literal["session_control"] = "session_control"
    req: ReqId
    session_id: Id
    op: Literal["pause", "resume", "kill"]
    reason: Text = ""


class Freeze(BaseModel):
    model_config = _STRICT
    type: Literal["freeze"] = "freeze"
    req: ReqId
    env: EnvName
    frozen: bool
    reason: Text = ""


class SetPolicy(BaseModel):
    model_config = _STRICT
    type: Literal["set_policy"] = "set_policy"
    req: ReqId
    env: EnvName
    policy: EnvPolicy


OperatorMessage = Annotated[
    OperatorHello | Decide | SessionControl | Freeze | SetPolicy, Field(discriminator="type")
]

# --------------------------------------------------------------------------
# hub -> operator

SessionStatus = Literal["active", "paused", "killed", "disconnected", "ended"]


class SessionInfo(BaseModel):
    model_config = _STRICT
    session_id: Id
    agent: Name
    env: EnvName
    host: str = ""
    pid: Pid | None = None
    status: SessionStatus
    connected: bool
    started_at: Millis
    last_seen: Millis
    current_action: str = ""
    pending: Count = 0
    rate: Count = 0


class ActionInfo(BaseModel):
    model_config = _STRICT
    action: Action
    session_id: Id
    agent: Name
    env: EnvName
    digest: Digest
    risk: Risk
    reasons: tuple[str, ...] = ()
    policy_verdict: Verdict
    rule: Rule | None = None
    explanation: str = ""
    state: ActionState
    created_at: Millis
    expires_at: Millis | None = None
    decided_by: str = ""
    decision_reason: str = ""
    exit_code: ExitCode | None = None
    duration_ms: Millis | None = None
    output_tail: str = ""


class PolicyInfo(BaseModel):
    model_config = _STRICT
    version: Count
    policy: EnvPolicy


class OperatorWelcome(BaseModel):
    model_config = _STRICT
    type: Literal["welcome"] = "welcome"
    protocol: Count
    operator: Name
    role: Literal["viewer", "approver", "admin"]


class Snapshot(BaseModel):
    model_config = _STRICT
    type: Literal["snapshot"] = "snapshot"
    sessions: tuple[SessionInfo, ...]
    pending: tuple[ActionInfo, ...]
    recent: tuple[ActionInfo, ...] = ()
    policies: dict[str, PolicyInfo]
    frozen: tuple[str, ...] = ()
    operators: tuple[str, ...] = ()
    hub_time: Millis


class SessionEvent(BaseModel):
    model_config = _STRICT
    type: Literal["session"] = "session"
    session: SessionInfo


class SessionActivity(BaseModel):
    """The fields of a :class:`SessionInfo` that change with every action."""

    model_config = _STRICT
    session_id: Id
    last_seen: Millis
    current_action: str = ""
    rate: Count = 0


#: Sessions per ``activity`` message: 128 entries stay under MAX_MESSAGE_BYTES
#: even with every current action at 200 characters escaped six bytes each.
MAX_ACTIVITY_ENTRIES: Final = 128


class ActivityEvent(BaseModel):
    """What sessions did since the last one, sent instead of a ``session``
    message per session to operators on ``towerctl.lines.v2``. At fleet load
    every session acts every second or so; as one ``session`` message each
    that was half of all operator traffic (the other half being the actions
    themselves, which already name their session). Status, connection and
    pending count still travel in ``session`` messages, at once."""

    model_config = _STRICT
    type: Literal["activity"] = "activity"
    sessions: Annotated[tuple[SessionActivity, ...], Field(min_length=1, max_length=MAX_ACTIVITY_ENTRIES)]


def apply_activity(
    sessions: Mapping[str, SessionInfo], activity: Iterable[SessionActivity]
) -> dict[str, SessionInfo]:
    """The sessions of ``sessions`` that ``activity`` names (an ``activity``
    message's entries), with it applied. A session not known here (ended, or
    not yet in a snapshot) is skipped: activity never creates a session,
    ``session`` messages do."""
    updated: dict[str, SessionInfo] = {}
    for e in activity:
        known = sessions.get(e.session_id)
        if known is not None:
            # A literal update, not a dump of ``e``: 6 us a session instead of 9.
            changes = {"last_seen": e.last_seen, "current_action": e.current_action, "rate": e.rate}
            updated[e.session_id] = known.model_copy(update=changes)
    return updated


class ActionEvent(BaseModel):
    model_config = _STRICT
    type: Literal["action"] = "action"
    action: ActionInfo


class PolicyEvent(BaseModel):
    model_config = _STRICT
    type: Literal["policy"] = "policy"
    env: EnvName
    info: PolicyInfo
    by: str = ""


class FreezeEvent(BaseModel):
    model_config = _STRICT
    type: Literal["frozen"] = "frozen"
    env: EnvName
    frozen: bool
    by: str


class Alert(BaseModel):
    model_config = _STRICT
    type: Literal["alert"] = "alert"
    level: Literal["info", "warning", "critical"]
    message: Text
    session_id: Id | None = None


class OperatorsEvent(BaseModel):
    model_config = _STRICT
    type: Literal["operators"] = "operators"
    operators: tuple[str, ...]


class Result(BaseModel):
    model_config = _STRICT
    type: Literal["result"] = "result"
    req: ReqId
    ok: bool
    code: str = ""
    message: Text = ""


HubToOperator = Annotated[
    OperatorWelcome
    | Snapshot
    | SessionEvent
    | ActivityEvent
    | ActionEvent
    | PolicyEvent
    | FreezeEvent
    | Alert
    | OperatorsEvent
    | Result
    | ErrorMsg,
    Field(discriminator="type"),
]
