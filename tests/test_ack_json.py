"""The hub's acks are cut from cached text (towerctl.hub.agents.ack_json):
they must be byte-equal to encoding the Ack model, whatever the id and reason."""

from __future__ import annotations

import pytest

from agent_shim.agent_messages import AckState
from agent_shim.protocol import Ack, HubToAgentAdapter, encode
from towerctl.hub.agents import _ACK_ID_MARK, ack_json

IDS = ["a" * 32, "0f" * 16, "id:with.colons_and-dashes", "x", "Z" * 80]
REASONS = [
    "",
    "prod: read actions are allowed",
    'quotes " and \\ backslashes',
    "new\nline, tab\t, control \x01 and unicode ✓ é",
    f"the marker {_ACK_ID_MARK} inside the reason",
    "x" * 4000,
]
STATES: list[AckState] = ["allowed", "denied", "pending", "cancelled"]


@pytest.mark.parametrize("reason", REASONS)
@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("expires_at", [None, 0, 1_700_000_000_000])
def test_an_ack_is_byte_equal_to_the_encoded_model(
    state: AckState, reason: str, expires_at: int | None
) -> None:
    for action_id in IDS:
        expected = encode(Ack(action_id=action_id, state=state, reason=reason, expires_at=expires_at))
        got = ack_json(action_id, state, reason, expires_at)
        assert got == expected
        msg = HubToAgentAdapter.validate_json(got)
        assert isinstance(msg, Ack) and (msg.action_id, msg.state, msg.reason) == (action_id, state, reason)


def test_the_same_reason_reuses_its_template() -> None:
    from towerctl.hub import agents

    agents._ack_template.cache_clear()
    for n in range(50):
        ack_json(f"id-{n}", "allowed", "prod: reads are allowed", None)
    info = agents._ack_template.cache_info()
    assert (info.misses, info.hits) == (1, 49)
