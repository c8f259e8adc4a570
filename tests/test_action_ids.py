"""Action ids: UUIDv7, ordered by time, unguessable, and named by either end.

No I/O: the clock is replaced where order is checked, so nothing depends on
how fast the machine makes ids.
"""

from __future__ import annotations

import re
import uuid

import pytest

from agent_shim import action_ids
from agent_shim.action_ids import SHORT_ID_CHARS, id_matches, new_action_id, short_id
from agent_shim.protocol import Action
from towerctl.operator import OperatorClient, OperatorError


def test_an_id_is_a_uuid7_in_32_hex_digits_that_the_protocol_accepts() -> None:
    for _ in range(200):
        aid = new_action_id()
        assert re.fullmatch(r"[0-9a-f]{32}", aid), aid
        u = uuid.UUID(aid)
        assert u.version == 7 and u.variant == uuid.RFC_4122
        assert Action(action_id=aid, kind="shell", command="ls").action_id == aid


@pytest.mark.parametrize(
    "ms", [0, 1, 1_795_936_416_268, 1_795_936_416_269, 2**47, 2**48 - 1], ids=lambda ms: f"ms={ms}"
)
def test_the_id_starts_with_the_milliseconds_it_was_made_in(monkeypatch: pytest.MonkeyPatch, ms: int) -> None:
    monkeypatch.setattr(action_ids.time, "time_ns", lambda: ms * 1_000_000 + 999_999)
    aid = new_action_id()
    assert int(aid[:12], 16) == ms
    assert aid[12] == "7" and aid[16] in "89ab"


def test_ids_sort_in_the_order_they_were_made_across_milliseconds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Why they exist: the store's index appends instead of scattering."""
    made = []
    for ms in [1_795_936_416_000 + k for k in (0, 1, 2, 10, 1000, 86_400_000)]:
        monkeypatch.setattr(action_ids.time, "time_ns", lambda ms=ms: ms * 1_000_000)
        made += [new_action_id() for _ in range(5)]
    by_time = [aid[:12] for aid in made]
    assert by_time == sorted(by_time)
    # Within one millisecond the order is random, and every id is different.
    assert len(set(made)) == len(made)


def test_ids_made_in_the_same_millisecond_differ_in_74_random_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(action_ids.time, "time_ns", lambda: 1_795_936_416_000_000_000)
    ids = {new_action_id() for _ in range(5000)}
    assert len(ids) == 5000
    tails = {aid[-SHORT_ID_CHARS:] for aid in ids}
    assert len(tails) == 5000  # the shown end tells them apart


@pytest.mark.parametrize(
    ("action_id", "typed", "hit"),
    [
        ("01a2262a32937be2aee5c01b7f36f388", "01a2262a32937be2aee5c01b7f36f388", True),
        ("01a2262a32937be2aee5c01b7f36f388", "01a2262a", True),
        ("01a2262a32937be2aee5c01b7f36f388", "c01b7f36f388", True),
        ("01a2262a32937be2aee5c01b7f36f388", "f388", True),
        ("01a2262a32937be2aee5c01b7f36f388", "7be2ae", False),  # the middle is not a name
        ("01a2262a32937be2aee5c01b7f36f388", "", False),
        ("01a2262a32937be2aee5c01b7f36f388", "01a2262a32937be2aee5c01b7f36f3880", False),
        ("hook-1234", "1234", True),
    ],
)
def test_either_end_of_an_id_names_it(action_id: str, typed: str, hit: bool) -> None:
    assert id_matches(action_id, typed) is hit


@pytest.mark.parametrize(
    ("action_id", "shown"),
    [("01a2262a32937be2aee5c01b7f36f388", "c01b7f36f388"), ("abc", "abc"), ("", "")],
)
def test_people_are_shown_the_end_of_an_id(action_id: str, shown: str) -> None:
    assert short_id(action_id) == shown


def _client_with_pending(*ids: str) -> OperatorClient:
    from agent_shim.protocol import ActionInfo

    client = OperatorClient("ws://127.0.0.1:9", "token")
    for aid in ids:
        client.pending[aid] = ActionInfo.model_validate(
            {
                "action": {"action_id": aid, "kind": "shell", "command": "rm -rf /srv"},
                "session_id": "s-1",
                "agent": "bot",
                "env": "prod",
                "digest": "0" * 64,
                "risk": "destructive",
                "policy_verdict": "ask",
                "state": "pending",
                "created_at": 1,
            }
        )
    return client


def test_the_cli_resolves_a_pending_action_by_the_end_it_shows() -> None:
    """Two ids of the same second share their start; their ends tell them apart."""
    a, b = "01a2262a32937be2aee5c01b7f36f388", "01a2262a329373c4b0fd2e6a90c1d7a5"
    client = _client_with_pending(a, b)
    assert client.resolve_action(short_id(a)).action.action_id == a
    assert client.resolve_action(short_id(b)).action.action_id == b
    assert client.resolve_action(b).action.action_id == b
    with pytest.raises(OperatorError) as ambiguous:
        client.resolve_action("01a2262a3293")
    assert ambiguous.value.code == "ambiguous" and "2 actions" in str(ambiguous.value)
    with pytest.raises(OperatorError) as missing:
        client.resolve_action("7be2ae")
    assert missing.value.code == "not_found"
