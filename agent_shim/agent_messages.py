"""The action and the messages between a shim and the hub.

Kept apart from the operator side because this is the half of the protocol an
untrusted agent speaks, and the half the shim imports: ``Action.digest`` and
``Decision.signing_bytes`` are the contract an approval is bound to.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from agent_shim.canonical import ACTION_DIGEST_TAG, canonical_json, canonical_text
from agent_shim.policy import EnvPolicy, Rule
from agent_shim.protocol_fields import (
    _STRICT,
    DECISION_SIG_TAG,
    Count,
    Digest,
    EnvName,
    ExitCode,
    Id,
    KeyId,
    LongText,
    Millis,
    Name,
    Pid,
    PublicKeyHex,
    Signature,
    Text,
)
from agent_shim.types import Kind, Risk, Verdict


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

        Not cached on the instance: a ``model_copy(update=...)`` would carry a
        stale digest."""
        return self.text_and_digest()[1]

    def text_and_digest(self) -> tuple[str, str]:
        """The canonical JSON text of the action and its digest, made once: the
        hub stores that text (row and audit record) as well as checking the digest.

        Encoded straight from the instance's field values, not from
        ``model_dump``: every field is a string or None (strict model, no
        nested model, no extra fields), so the values held are already what
        the dump would give, and canonical_json's walk looking for floats has
        nothing to find. Skipping the dump is ~0.8 us of the ~3 this costs,
        for every action on the hub and in the shim. test_action_digest holds
        it equal to ``tagged_digest(ACTION_DIGEST_TAG, model_dump())`` for any
        text an agent can send."""
        return body_text_and_digest(self.__dict__)


def body_digest(body: Mapping[str, object]) -> str:
    """:meth:`Action.digest` of the action whose ``model_dump(mode="json")`` is
    ``body``: for a caller that needs the dump anyway."""
    return body_text_and_digest(body)[1]


def body_text_and_digest(body: Mapping[str, object]) -> tuple[str, str]:
    """The canonical JSON text of ``body`` (unchecked: see :meth:`Action.digest`)
    and the action digest over it, made once: the hub stores that text (row and
    audit record) as well as checking the digest."""
    text = canonical_text(body, checked=False)
    return text, hashlib.sha256(ACTION_DIGEST_TAG + text.encode("utf-8")).hexdigest()


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


#: What the hub's ack says became of a proposal.
AckState = Literal["allowed", "denied", "pending", "cancelled"]


class Ack(BaseModel):
    """The hub recorded a proposal; ``state`` is what it decided."""

    model_config = _STRICT
    type: Literal["ack"] = "ack"
    action_id: Id
    state: AckState
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
