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

import hashlib
import json
from types import UnionType
from typing import Annotated, Final, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from agent_shim.canonical import ACTION_DIGEST_TAG, canonical_json
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
#: canonical_json's settings, for values known to hold only strings and None.
_ACTION_JSON: Final = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


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
        """SHA-256 over the domain tag and the canonical JSON of every field.

        Every field is a string or None (strict model), so canonical_json's
        walk looking for floats is skipped here: this runs for every action on
        the hub and in the shim. test_protocol checks it equals
        ``tagged_digest(ACTION_DIGEST_TAG, model_dump())``. Not cached on the
        instance: a ``model_copy(update=...)`` would carry a stale digest.
        """
        body = _ACTION_JSON.encode(self.model_dump(mode="json")).encode("utf-8")
        return hashlib.sha256(ACTION_DIGEST_TAG + body).hexdigest()


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


class _Rejected(Exception):
    """Raised inside the stdlib JSON pre-check; carries the ``ProtocolError`` code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


#: Largest integer the pre-check lets through; every integer field of every
#: model is bounded well below it (``Millis`` at 2**53), so anything larger
#: is hostile or broken, not merely out of range.
_MAX_INT: Final = 2**63


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Rejected("duplicate_key", f"duplicate key {key[:64]!r} in a JSON object")
            seen.add(key)
    return obj


def _no_constant(name: str) -> object:
    raise _Rejected("bad_number", f"{name} is not a valid JSON number")


def _bounded_int(text: str) -> int:
    # ``int()`` itself refuses more than 4300 digits (ValueError -> bad_json).
    value = int(text)
    if not -_MAX_INT <= value <= _MAX_INT:
        raise _Rejected("number_too_large", f"integer with {len(text)} digits is beyond any field's range")
    return value


def _no_float(text: str) -> object:
    # No field of the protocol is a float (canonical JSON has none); a float
    # that looks like a huge number (1e400 -> inf) is reported as such.
    if "e" in text.lower() and abs(float(text)) == float("inf"):
        raise _Rejected("bad_number", f"{text[:32]} overflows to infinity")
    return float(text)


_STRICT_JSON = json.JSONDecoder(
    object_pairs_hook=_no_duplicates,
    parse_constant=_no_constant,
    parse_int=_bounded_int,
    parse_float=_no_float,
)


def _precheck(text: str) -> None:
    """Stdlib parse with the checks pydantic's parser does not make:
    duplicate keys (pydantic silently keeps the last), NaN/Infinity and
    integers beyond 2**63. Raises ``ProtocolError`` or returns."""
    try:
        _STRICT_JSON.decode(text)
    except _Rejected as exc:
        raise ProtocolError(exc.code, exc.message) from None
    except RecursionError:
        raise ProtocolError("too_deep", "JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, int() digit limit
        raise ProtocolError("bad_json", f"not valid JSON: {exc}"[:400]) from None


def decode(adapter: TypeAdapter[_T], data: str | bytes) -> _T:
    """Parse one frame strictly; every failure is a ``ProtocolError`` with a reason.

    pydantic parses and validates first (one pass, in Rust). It would keep the
    last of two equal keys, so a validated frame is accepted only if it
    provably has none: cheaply when the frame's ``:`` count equals the fields
    pydantic saw set (see ``_pair_count``; true of every frame without a colon
    inside a string), else when re-encoding the result gives back exactly the
    frame (what every peer using ``encode`` sends). Any other frame, and any
    frame that fails validation, also goes through the stdlib pre-check, which
    names duplicate keys, NaN/Infinity and huge integers with their own codes.
    Nesting depth is bounded by pydantic's parser (``too_deep``); frame size by
    the transport's ``max_size``. No field is a float: a model with one gets no
    colon-count fast path, so a NaN in it still reaches the pre-check.
    """
    if isinstance(data, (bytes, bytearray)):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("bad_encoding", f"frame is not UTF-8: {exc.reason}") from None
    try:
        value = adapter.validate_json(data, strict=True)
    except ValidationError as exc:
        first = exc.errors()[0] if exc.errors() else None
        if first is not None and first["type"] == "json_invalid":
            if "recursion limit" in first["msg"]:
                raise ProtocolError("too_deep", "JSON nested too deeply") from None
            if "number out of range" in first["msg"]:
                raise ProtocolError("number_too_large", f"number out of range: {first['msg']}") from None
            raise ProtocolError("bad_json", f"not valid JSON: {first['msg']}") from None
        # Valid JSON the model refuses: say so precisely if the reason is a
        # duplicate key or a bad number rather than a schema mismatch.
        _precheck(data)
        if first is not None and first["type"] in ("union_tag_invalid", "union_tag_not_found"):
            raise ProtocolError("unknown_type", _explain(exc)) from None
        raise ProtocolError("invalid", _explain(exc)) from None
    if isinstance(value, BaseModel):
        pairs = _pair_count(value)
        if pairs is not None and data.count(":") == pairs:
            return value
        if value.model_dump_json() == data:
            return value
    _precheck(data)
    return value


# -- the duplicate-key fast path -------------------------------------------
#
# Every key/value pair of every JSON object in a frame is followed by exactly
# one structural ``:``; colons inside strings only add to the count (an
# escaped ``\u003a`` adds nothing, and is inside a string anyway). So
# ``frame.count(":")`` >= pairs in the frame >= distinct keys per object >= the
# fields pydantic saw set. If the count equals the fields set, every inequality
# is an equality: no object has a repeated key. This holds only when every JSON
# object in the frame became a model (no ``dict`` or list-of-model fields),
# which ``_nested_fields`` checks per class; otherwise the slower paths decide.

_SCALARS: Final = (str, int, bool, type(None))
#: Per model class: its model-typed fields, or None when a field may hold a
#: JSON object that is not a model (a dict, a tuple of models).
_nested_cache: dict[type[BaseModel], tuple[str, ...] | None] = {}


def _is_scalar(tp: object) -> bool:
    origin = get_origin(tp)
    if origin is Annotated:
        return _is_scalar(get_args(tp)[0])
    if origin is Literal or tp in _SCALARS:
        return True
    if origin in (Union, UnionType):
        return all(_is_scalar(a) for a in get_args(tp))
    if origin is tuple:
        return all(a is Ellipsis or _is_scalar(a) for a in get_args(tp))
    return False


def _is_model(tp: object) -> bool:
    origin = get_origin(tp)
    if origin is Annotated:
        return _is_model(get_args(tp)[0])
    if origin in (Union, UnionType):
        return all(a is type(None) or _is_model(a) for a in get_args(tp))
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _nested_fields(cls: type[BaseModel]) -> tuple[str, ...] | None:
    nested: list[str] = []
    for name, info in cls.model_fields.items():
        if _is_scalar(info.annotation):
            continue
        if not _is_model(info.annotation):
            return None
        nested.append(name)
    return tuple(nested)


def _pair_count(value: BaseModel) -> int | None:
    """Fields set across ``value`` and its nested models, or None if the
    model can hold JSON objects that are not models."""
    cls = type(value)
    try:
        nested = _nested_cache[cls]
    except KeyError:
        nested = _nested_cache[cls] = _nested_fields(cls)
    if nested is None:
        return None
    n = len(value.__pydantic_fields_set__)
    for name in nested:
        sub = getattr(value, name)
        if sub is not None:
            inner = _pair_count(sub)
            if inner is None:
                return None
            n += inner
    return n


def encode(message: BaseModel) -> str:
    return message.model_dump_json(exclude_defaults=False)
