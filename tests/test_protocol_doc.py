"""docs/protocol.md stays true: every example decodes, every message type is shown,
the worked digest is right; and ``decode`` rejects bad frames with the right code."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import BaseModel, TypeAdapter

from agent_shim import protocol
from agent_shim.canonical import ACTION_DIGEST_TAG, canonical_json
from agent_shim.protocol import (
    PROTOCOL_VERSION,
    Action,
    ActionInfo,
    AgentMessageAdapter,
    HubToAgentAdapter,
    HubToOperatorAdapter,
    OperatorMessageAdapter,
    ProtocolError,
    decode,
)

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"

ADAPTERS: dict[str, tuple[TypeAdapter[Any], Any]] = {
    "agent->hub": (AgentMessageAdapter, protocol.AgentMessage),
    "hub->agent": (HubToAgentAdapter, protocol.HubToAgent),
    "operator->hub": (OperatorMessageAdapter, protocol.OperatorMessage),
    "hub->operator": (HubToOperatorAdapter, protocol.HubToOperator),
}

_FENCE = re.compile(r"^```([A-Za-z0-9_+-]*)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def _doc() -> str:
    return DOC.read_text(encoding="utf-8")


def _blocks(lang: str) -> list[str]:
    return [body for tag, body in _FENCE.findall(_doc()) if tag == lang]


def _json_blocks() -> list[str]:
    return _blocks("json")


def _union_types(union: Any) -> set[str]:
    """The ``type`` tags of a discriminated union ``Annotated[A | B | ..., Field(...)]``."""
    members = get_args(get_args(union)[0])
    return {m.model_fields["type"].default for m in members}


def _accepting(block: str) -> dict[str, BaseModel]:
    """Every direction whose adapter accepts ``block``, with the parsed message."""
    out: dict[str, BaseModel] = {}
    for direction, (adapter, _) in ADAPTERS.items():
        try:
            out[direction] = decode(adapter, block)
        except ProtocolError:
            continue
    return out


def _marked_block(marker: str) -> str:
    """The body of the fenced block right after ``<!-- digest-example:MARKER -->``."""
    m = re.search(rf"<!-- digest-example:{marker} -->\s*\n```[a-z]*\n(.*?)\n```", _doc(), re.DOTALL)
    assert m is not None, f"no block marked digest-example:{marker} in {DOC}"
    return m.group(1)


# ------------------------------------------------------------------ the doc


def test_doc_has_json_examples() -> None:
    assert len(_json_blocks()) >= sum(len(_union_types(u)) for _, u in ADAPTERS.values())


@pytest.mark.parametrize("index", range(len(_json_blocks())))
def test_every_json_block_is_a_valid_message(index: int) -> None:
    block = _json_blocks()[index]
    accepted = _accepting(block)
    assert accepted, f"json block #{index} is not a valid message in any direction:\n{block}"
    for msg in accepted.values():
        # What the doc shows is exactly what the models emit (no hand edits).
        assert json.loads(block) == json.loads(msg.model_dump_json())
        if hasattr(msg, "protocol"):
            assert msg.protocol == PROTOCOL_VERSION


def test_every_message_type_of_every_union_is_shown() -> None:
    seen: dict[str, set[str]] = {d: set() for d in ADAPTERS}
    for block in _json_blocks():
        for direction, msg in _accepting(block).items():
            seen[direction].add(msg.type)  # type: ignore[attr-defined]
    for direction, (_, union) in ADAPTERS.items():
        missing = _union_types(union) - seen[direction]
        assert not missing, f"{direction}: no example of {sorted(missing)} in {DOC.name}"


def test_example_digests_match_their_actions() -> None:
    """Every digest next to an action is that action's digest; the rest name the worked example."""
    worked = Action.model_validate_json(_marked_block("canonical"))
    checked = 0
    for block in _json_blocks():
        for msg in _accepting(block).values():
            infos: list[ActionInfo] = []
            if isinstance(msg, protocol.Propose):
                assert msg.digest == msg.action.digest()
                checked += 1
            elif isinstance(msg, protocol.ActionEvent):
                infos = [msg.action]
            elif isinstance(msg, protocol.Snapshot):
                infos = [*msg.pending, *msg.recent]
            elif getattr(msg, "action_id", None) == worked.action_id and hasattr(msg, "digest"):
                assert msg.digest == worked.digest()  # type: ignore[attr-defined]
                checked += 1
            for info in infos:
                assert info.digest == info.action.digest()
                checked += 1
    assert checked >= 5


def test_worked_digest_example() -> None:
    canonical = _marked_block("canonical")
    shown = _marked_block("digest").strip()
    action = Action.model_validate_json(canonical)
    # The shown bytes are the canonical form of the action they describe...
    assert canonical.encode("utf-8") == canonical_json(action.model_dump(mode="json"))
    # ...the digest is what the code computes...
    assert shown == action.digest()
    # ...and the definition the doc gives by hand is the same thing.
    assert ACTION_DIGEST_TAG == b"towerctl/action/v1\x00"
    assert shown == hashlib.sha256(b"towerctl/action/v1\0" + canonical.encode("utf-8")).hexdigest()


@pytest.mark.parametrize(
    "code",
    [
        "bad_encoding", "bad_json", "unknown_type", "invalid", "expected_hello",
        "protocol_version", "forbidden", "digest_mismatch", "conflict", "unknown_action",
        "illegal_transition", "too_many_errors", "timeout", "store_unavailable",
        "session_conflict", "not_pending", "already_decided", "policy_denies", "not_found",
        "killed", "frozen",
    ],
)  # fmt: skip
def test_error_code_is_documented(code: str) -> None:
    assert f"`{code}`" in _doc()


# ------------------------------------------------------------------ decode

DIGEST = "0" * 64
HELLO: dict[str, Any] = {"type": "hello", "protocol": PROTOCOL_VERSION, "agent": "bot", "env": "prod"}
ACTION: dict[str, Any] = {"action_id": "a1", "kind": "shell", "command": "ls -l"}
PROPOSE: dict[str, Any] = {
    "type": "propose",
    "action": ACTION,
    "digest": DIGEST,
    "risk": "read",
    "verdict": "allow",
    "proposed_at": 1,
}
REPORT: dict[str, Any] = {
    "type": "report",
    "action_id": "a1",
    "digest": DIGEST,
    "status": "succeeded",
    "duration_ms": 812,
    "finished_at": 2,
}


def _with(base: dict[str, Any], **changes: Any) -> str:
    return json.dumps({**base, **changes})


def _without(base: dict[str, Any], key: str) -> str:
    return json.dumps({k: v for k, v in base.items() if k != key})


@pytest.mark.parametrize("message", [HELLO, PROPOSE, REPORT])
def test_decode_accepts_the_valid_bases(message: dict[str, Any]) -> None:
    assert decode(AgentMessageAdapter, json.dumps(message)).type == message["type"]  # type: ignore[union-attr]
    assert decode(AgentMessageAdapter, json.dumps(message).encode("utf-8")).type == message["type"]  # type: ignore[union-attr]


AG = AgentMessageAdapter
OP = OperatorMessageAdapter
DECIDE: dict[str, Any] = {"type": "decide", "req": "r1", "action_id": "a1", "digest": DIGEST}


@pytest.mark.parametrize(
    ("name", "adapter", "frame", "code", "mentions"),
    [
        ("non-JSON", AG, "this is not json", "bad_json", "JSON"),
        ("truncated JSON", AG, json.dumps(HELLO)[:-1], "bad_json", "JSON"),
        ("non-UTF-8 bytes", AG, b'{"type": "hello", "agent": "\xff"}', "bad_encoding", "UTF-8"),
        ("unknown type", AG, _with(HELLO, type="launch_missiles"), "unknown_type", "launch_missiles"),
        ("missing type", AG, _without(HELLO, "type"), "unknown_type", "type"),
        ("type of the other endpoint", AG, _with(DECIDE, approve=True), "unknown_type", "decide"),
        ("extra field", AG, _with(HELLO, admin=True), "invalid", "admin"),
        ("extra nested field", AG, _with(PROPOSE, action={**ACTION, "sudo": True}), "invalid", "sudo"),
        ("wrong type: protocol as string", AG, _with(HELLO, protocol="1"), "invalid", "protocol"),
        ("no coercion: float for int", AG, _with(HELLO, protocol=1.0), "invalid", "protocol"),
        ("no coercion: bool for int", AG, _with(HELLO, protocol=True), "invalid", "protocol"),
        ("missing field", AG, _without(HELLO, "env"), "invalid", "env"),
        ("string where an int is required", AG, _with(REPORT, duration_ms="812"), "invalid", "duration_ms"),
        ("oversize command", AG, _with(PROPOSE, action={**ACTION, "command": "x" * 16385}), "invalid",
         "command"),
        ("digest not lowercase hex", AG, _with(REPORT, digest="A" * 64), "invalid", "digest"),
        ("unknown verdict", AG, _with(PROPOSE, verdict="maybe"), "invalid", "verdict"),
        ("not an object", AG, "[]", "invalid", "object"),
        ("decide without digest", OP, _without({**DECIDE, "approve": True}, "digest"), "invalid", "digest"),
        ("no coercion: string for bool", OP, _with(DECIDE, approve="yes"), "invalid", "approve"),
    ],
)  # fmt: skip
def test_decode_rejects(
    name: str, adapter: TypeAdapter[Any], frame: str | bytes, code: str, mentions: str
) -> None:
    with pytest.raises(ProtocolError) as info:
        decode(adapter, frame)
    assert info.value.code == code, name
    assert mentions in info.value.message, (name, info.value.message)


def test_oversize_command_limit_is_exact() -> None:
    at_limit = _with(PROPOSE, action={**ACTION, "command": "x" * 16384})
    assert decode(AgentMessageAdapter, at_limit).type == "propose"  # type: ignore[union-attr]
