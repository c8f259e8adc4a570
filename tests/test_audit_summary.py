"""A record's data in a few words (``towerctl.audit.summary``): table-driven,
no I/O. The data comes from a database that may have been tampered with, so
odd shapes are shown as they are and never raise."""

from __future__ import annotations

import pytest

from towerctl.audit.summary import record_detail, record_gist


@pytest.mark.parametrize(
    ("data", "shown"),
    [
        (
            {"states": ["allowed", "running"], "body": {"command": "ls"}},
            '→ allowed → running · ls · {"body":{"command":"ls"},"states":["allowed","running"]}',
        ),
        ({"states": ["pending"]}, '→ pending · {"states":["pending"]}'),
        ({"from": "running", "exit_code": 0}, 'exit 0 · {"exit_code":0,"from":"running"}'),
        ({"from": "running", "exit_code": None}, '{"exit_code":null,"from":"running"}'),
        ({"states": []}, '{"states":[]}'),
        ({"states": ["x", 1]}, '{"states":["x",1]}'),
        ({"states": "running"}, '{"states":"running"}'),
        ("not json at all", "not json at all"),
    ],
)
def test_a_proposals_record_shows_where_it_left_the_action_first(data: object, shown: str) -> None:
    assert record_detail(data) == shown


@pytest.mark.parametrize(
    ("data", "gist"),
    [
        ({"states": ["allowed", "running"], "body": {"command": "ls /srv"}}, "→ allowed → running · ls /srv"),
        ({"states": ["pending"], "body": {"command": "rm -rf /x"}}, "→ pending · rm -rf /x"),
        ({"operator": "alice", "reason": "", "from": "pending"}, "alice"),
        ({"reason": "session killed", "from": "pending"}, "session killed"),
        ({"exit_code": 0, "from": "running"}, "exit 0"),
        ({"decision_id": "d-1", "code": "replayed", "message": "the approval was already used"},
         "replayed: the approval was already used"),
        ({"decision_id": "d-1", "code": "approval_used", "message": ""}, "approval_used"),
        ({"decision_id": "d-1", "code": 7, "message": "x"}, ""),
        ({"exit_code": None, "from": "running"}, ""),
        ({"exit_code": True, "from": "running"}, ""),
        ({"body": "not an object", "states": "x"}, ""),
        ("a string", ""),
        ([1, 2], ""),
    ],
)
def test_a_records_gist_names_the_command_and_where_the_proposal_left_it(data: object, gist: str) -> None:
    assert record_gist(data) == gist
