"""The wire protocol between shims, the hub and operator clients.

Every message is a pydantic model with ``extra="forbid"`` and ``strict=True``:
the hub faces code it does not trust (an agent may be compromised or simply
buggy), so nothing is coerced and nothing unknown is accepted. Each direction
has one discriminated union on ``type`` so that an unknown type is a
validation error with a reason, not a silent drop.

The action digest lives here because it is the contract: an approval is
bound to the digest of the canonical action, and the shim refuses to run
anything whose digest differs.
The models, field types and strict codec live in their own modules
(``protocol_fields``, ``agent_messages``, ``operator_messages``, ``wire``);
this module is the one import path every peer uses, and it builds the four
direction adapters because each needs the whole union of one direction.
"""

from __future__ import annotations

from pydantic import TypeAdapter

from agent_shim.agent_messages import (
    Ack,
    Action,
    AgentHello,
    AgentMessage,
    Control,
    Decision,
    DecisionRefused,
    ErrorMsg,
    HubToAgent,
    PolicyUpdate,
    Propose,
    Report,
    SelfPaused,
    Started,
    Welcome,
)
from agent_shim.operator_messages import (
    ActionEvent,
    ActionInfo,
    ActivityEvent,
    Alert,
    Decide,
    Freeze,
    FreezeEvent,
    HubToOperator,
    OperatorHello,
    OperatorMessage,
    OperatorsEvent,
    OperatorWelcome,
    PolicyEvent,
    PolicyInfo,
    ReqId,
    Result,
    SessionActivity,
    SessionControl,
    SessionEvent,
    SessionInfo,
    SessionStatus,
    SetPolicy,
    Snapshot,
    apply_activity,
)
from agent_shim.protocol_fields import (
    DECISION_SIG_TAG,
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
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
from agent_shim.types import ActionState
from agent_shim.wire import ProtocolError, decode, encode

__all__ = [
    "DECISION_SIG_TAG",
    "MAX_MESSAGE_BYTES",
    "PROTOCOL_VERSION",
    "Ack",
    "Action",
    "ActionEvent",
    "ActionInfo",
    "ActionState",
    "ActivityEvent",
    "AgentHello",
    "AgentMessage",
    "AgentMessageAdapter",
    "Alert",
    "Control",
    "Count",
    "Decide",
    "Decision",
    "DecisionRefused",
    "Digest",
    "EnvName",
    "ErrorMsg",
    "ExitCode",
    "Freeze",
    "FreezeEvent",
    "HubToAgent",
    "HubToAgentAdapter",
    "HubToOperator",
    "HubToOperatorAdapter",
    "Id",
    "KeyId",
    "LongText",
    "Millis",
    "Name",
    "OperatorHello",
    "OperatorMessage",
    "OperatorMessageAdapter",
    "OperatorWelcome",
    "OperatorsEvent",
    "Pid",
    "PolicyEvent",
    "PolicyInfo",
    "PolicyUpdate",
    "Propose",
    "ProtocolError",
    "PublicKeyHex",
    "Report",
    "ReqId",
    "Result",
    "SelfPaused",
    "SessionActivity",
    "SessionControl",
    "SessionEvent",
    "SessionInfo",
    "SessionStatus",
    "SetPolicy",
    "Signature",
    "Snapshot",
    "Started",
    "Text",
    "Welcome",
    "apply_activity",
    "decode",
    "encode",
]

# --------------------------------------------------------------------------
# parsing

AgentMessageAdapter: TypeAdapter[AgentMessage] = TypeAdapter(AgentMessage)
HubToAgentAdapter: TypeAdapter[HubToAgent] = TypeAdapter(HubToAgent)
OperatorMessageAdapter: TypeAdapter[OperatorMessage] = TypeAdapter(OperatorMessage)
HubToOperatorAdapter: TypeAdapter[HubToOperator] = TypeAdapter(HubToOperator)
