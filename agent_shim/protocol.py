"""The wire protocol between shims, the hub and operator clients.

Every message is a pydantic model with ``extra="forbid"`` and ``strict=True``:
the hub faces code it does not trust (an agent may be compromised or simply
buggy), so nothing is coerced and nothing unknown is accepted. Each direction
has one discriminated union on ``type`` so that an unknown type is a
validation error with a reason, not a silent drop.

The action digest lives here because it is the contract: an approval is
bound to the digest of the canonical action, and the shim refuses to run
anything whose digest differs.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from agent_shim.canonical import ACTION_DIGEST_TAG, canonical_json, tagged_digest
from agent_shim.policy import EnvPolicy, Rule
from agent_shim.types import Kind, Risk, Verdict

PROTOCOL_VERSION: Final = 1
#: Largest frame the hub accepts. Actions carry dry-run output, so this is
#: generous, but bounded: memory per connection stays predictable.
MAX_MESSAGE_BYTES: Final = 256 * 1024

Id = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,80}$")]
Name = Annotated[str, Field(min_length=1, max_length=128)]
EnvName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
Digest = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Signature = Annotated[str, Field(pattern=r"^(|[0-9a-f]{128})$")]
KeyId = Annotated[str, Field(pattern=r"^(|[0-9a-f]{16})$")]
PublicKeyHex = Annotated[str, Field(pattern=r"^(|[0-9a-f]{64})$")]
#: Domain tag of a decision signature: never valid as a checkpoint signature
#: (``towerctl/checkpoint/v1``) or anything else the hub's key signs.
DECISION_SIG_TAG: Final = b"towerctl/decision/v1\x00"
Text = Annotated[str, Field(max_length=4096)]
LongText = Annotated[str, Field(max_length=65536)]
Millis = Annotated[int, Field(ge=0, le=2**53)]
Count = Annotated[int, Field(ge=0, le=2**31)]
Pid = Annotated[int, Field(ge=0, le=2**31)]
ExitCode = Annotated[int, Field(ge=-(2**31), le=2**31)]

_STRICT = ConfigDict(extra="forbid", strict=True, frozen=True)


class Action(BaseModel):
    """What an agent wants to do, exactly as it will be run."""

    model_config = _STRICT

    action_id: Id
    kind: Kind
    command: Annotated[str, Field(min_length=1, max_length=16384)]
    target: Annotated[str, Field(max_length=512)] = ""
    cwd: Annotated[str, Field(max_length=4096)] = ""
    reason: Text = ""
    rollback: Text = ""
    dry_run: LongText = ""
    declared_risk: Risk | None = None

    def digest(self) -> str:
        """SHA-256 over the domain tag and the canonical JSON of every field."""
        return tagged_digest(ACTION_DIGEST_TAG, self.model_dump(mode="json"))


# --------------------------------------------------------------------------
# agent -> hub


class AgentHello(BaseModel):
    model_config = _STRICT
    type: Literal["hello"] = "hello"
    protocol: Count
    agent: Name
    env: EnvName
    host: Annotated[str, Field(max_length=255)] = ""
    pid: Pid | None = None
    session_id: Id | None = None
    shim_version: Annotated[str, Field(max_length=64)] = ""


class Propose(BaseModel):
    """An action and the shim's own verdict on it.

    The shim has already applied policy; the hub checks again and the
    stricter verdict wins.
    """

    model_config = _STRICT
    type: Literal["propose"] = "propose"
    action: Action
    digest: Digest
    risk: Risk
    reasons: tuple[Text, ...] = ()
    verdict: Verdict
    rule: Rule | None = None
    explanation: Text = ""
    proposed_at: Millis


class Started(BaseModel):
    model_config = _STRICT
    type: Literal["started"] = "started"
    action_id: Id
    digest: Digest
    started_at: Millis


class Report(BaseModel):
    model_config = _STRICT
    type: Literal["report"] = "report"
    action_id: Id
    digest: Digest
    status: Literal["succeeded", "failed"]
    exit_code: ExitCode | None = None
    duration_ms: Millis = 0
    output_digest: Digest | None = None
    output_tail: Text = ""
    error: Text = ""
    finished_at: Millis


class DecisionRefused(BaseModel):
    """The shim refused a decision it received (bad signature, wrong session,
    wrong digest, expired, replayed); the hub records it in the audit log."""

    model_config = _STRICT
    type: Literal["decision_refused"] = "decision_refused"
    action_id: Id
    decision_id: Id | None = None
    code: Literal["bad_signature", "unsigned", "wrong_session", "wrong_digest", "expired", "replayed"]
    message: Text = ""


class SelfPaused(BaseModel):
    """The shim paused itself (rate limit) and wants operators to know."""

    model_config = _STRICT
    type: Literal["self_paused"] = "self_paused"
    reason: Text


AgentMessage = Annotated[
    AgentHello | Propose | Started | Report | SelfPaused | DecisionRefused, Field(discriminator="type")
]

# --------------------------------------------------------------------------
# hub -> agent


class Welcome(BaseModel):
    model_config = _STRICT
    type: Literal["welcome"] = "welcome"
    protocol: Count
    session_id: Id
    policy: EnvPolicy
    policy_version: Count
    paused: bool = False
    killed: bool = False
    #: The hub's Ed25519 public key (hex of the raw 32 bytes) that signs
    #: decisions. A shim with a pinned key ignores this (it only logs a
    #: mismatch); one without uses it trust-on-first-use.
    hub_key: PublicKeyHex = ""


class PolicyUpdate(BaseModel):
    model_config = _STRICT
    type: Literal["policy"] = "policy"
    env: EnvName
    policy: EnvPolicy
    version: Count


class Ack(BaseModel):
    """The hub recorded a proposal; ``state`` is what it decided."""

    model_config = _STRICT
    type: Literal["ack"] = "ack"
    action_id: Id
    state: Literal["allowed", "denied", "pending", "cancelled"]
    reason: Text = ""
    expires_at: Millis | None = None


class Decision(BaseModel):
    """An operator's (or the hub's timeout's) decision on one pending action.

    ``signature`` is the hub's Ed25519 signature over ``signing_bytes()``;
    the shim runs an approval only if it verifies with the pinned key, names
    this session, this digest, has not expired and was not used before.
    """

    model_config = _STRICT
    type: Literal["decision"] = "decision"
    decision_id: Id
    action_id: Id
    digest: Digest
    verdict: Literal["approved", "denied", "expired"]
    operator: Name
    reason: Text = ""
    session_id: Id | None = None
    expires_at: Millis | None = None
    key_id: KeyId = ""
    signature: Signature = ""

    def signing_bytes(self) -> bytes:
        """Domain tag + canonical JSON of the fields the signature covers.

        ``reason`` is not covered: it is free text shown to people and does
        not change what may run.
        """
        return DECISION_SIG_TAG + canonical_json(
            {
                "decision_id": self.decision_id,
                "action_id": self.action_id,
                "session_id": self.session_id,
                "digest": self.digest,
                "verdict": self.verdict,
                "operator": self.operator,
                "expires_at": self.expires_at,
            }
        )


class Control(BaseModel):
    model_config = _STRICT
    type: Literal["control"] = "control"
    op: Literal["pause", "resume", "kill"]
    by: Name
    reason: Text = ""


class ErrorMsg(BaseModel):
    """A request was rejected. The connection stays open unless ``fatal``."""

    model_config = _STRICT
    type: Literal["error"] = "error"
    code: Annotated[str, Field(max_length=64)]
    message: Text
    ref: Annotated[str, Field(max_length=80)] | None = None
    fatal: bool = False


HubToAgent = Annotated[
    Welcome | PolicyUpdate | Ack | Decision | Control | ErrorMsg, Field(discriminator="type")
]

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
ActionState = Literal[
    "allowed",
    "denied",
    "pending",
    "approved",
    "expired",
    "running",
    "succeeded",
    "failed",
    "cancelled",
]


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
    | ActionEvent
    | PolicyEvent
    | FreezeEvent
    | Alert
    | OperatorsEvent
    | Result
    | ErrorMsg,
    Field(discriminator="type"),
]

# --------------------------------------------------------------------------
# parsing

AgentMessageAdapter: TypeAdapter[AgentMessage] = TypeAdapter(AgentMessage)
HubToAgentAdapter: TypeAdapter[HubToAgent] = TypeAdapter(HubToAgent)
OperatorMessageAdapter: TypeAdapter[OperatorMessage] = TypeAdapter(OperatorMessage)
HubToOperatorAdapter: TypeAdapter[HubToOperator] = TypeAdapter(HubToOperator)


_T = TypeVar("_T")


class ProtocolError(ValueError):
    """A message could not be accepted; ``code`` is machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _explain(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "message"
        parts.append(f"{loc}: {err['msg']}")
    more = len(exc.errors()) - 3
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def decode(adapter: TypeAdapter[_T], data: str | bytes) -> _T:
    """Parse one frame strictly; every failure is a ``ProtocolError`` with a reason."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("bad_encoding", f"frame is not UTF-8: {exc.reason}") from None
    try:
        return adapter.validate_json(data, strict=True)
    except ValidationError as exc:
        first = exc.errors()[0] if exc.errors() else None
        if first is not None and first["type"] == "json_invalid":
            raise ProtocolError("bad_json", f"not valid JSON: {first['msg']}") from None
        if first is not None and first["type"] in ("union_tag_invalid", "union_tag_not_found"):
            raise ProtocolError("unknown_type", _explain(exc)) from None
        raise ProtocolError("invalid", _explain(exc)) from None


def encode(message: BaseModel) -> str:
    return message.model_dump_json(exclude_defaults=False)
