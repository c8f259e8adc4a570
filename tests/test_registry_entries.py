"""What the hub remembers of an announced action, built lazily, equals the model built at once.

The serve process keeps a proposal as a ``ProposedAction`` and makes its
``ActionInfo`` only when an operator is sent it; operators must see exactly
what an eager build would have shown, in the proposed state and after the
report. No I/O: table-driven over the shapes a proposal takes.
"""

from __future__ import annotations

from typing import Any

import pytest

from agent_shim.policy import Rule
from agent_shim.protocol import Action, ActionInfo
from towerctl.hub.registry import FinishedAction, ProposedAction, announced_id, as_info

ACTION = Action(
    action_id="0190abcd-1234-7abc-8def-0123456789ab",
    kind="shell",
    command="kubectl delete ns payments",
    target="payments",
    cwd="/srv",
    reason="clean up: done",
)

CASES: list[dict[str, Any]] = [
    {"risk": "read", "policy_verdict": "allow", "state": "allowed", "rule": None, "expires_at": None},
    {"risk": "write", "policy_verdict": "deny", "state": "denied", "rule": None, "expires_at": None},
    {
        "risk": "destructive",
        "policy_verdict": "ask",
        "state": "pending",
        "rule": Rule(match="kubectl delete *", verdict="ask"),
        "expires_at": 1_700_000_300_000,
    },
]


def _fields(case: dict[str, Any]) -> dict[str, Any]:
    return {
        "action": ACTION,
        "session_id": "s-0123456789abcdef",
        "agent": "deployer",
        "env": "prod",
        "digest": "ab" * 32,
        "reasons": ("kubectl delete: destroys", "namespace"),
        "explanation": "matched a rule",
        "created_at": 1_700_000_000_000,
        **case,
    }


@pytest.mark.parametrize("case", CASES, ids=[c["state"] for c in CASES])
def test_proposed_equals_the_eager_model(case: dict[str, Any]) -> None:
    proposed = ProposedAction(**_fields(case))
    eager = ActionInfo(**_fields(case))
    assert proposed.action_info() == eager
    assert as_info(proposed) == eager
    assert announced_id(proposed) == announced_id(eager) == ACTION.action_id


@pytest.mark.parametrize(
    ("status", "exit_code", "duration_ms", "tail"),
    [("succeeded", 0, 12, "ok"), ("failed", 3, 4500, "boom\nerror: x"), ("failed", None, None, "")],
)
def test_finished_over_a_proposal_equals_the_copied_model(
    status: Any, exit_code: int | None, duration_ms: int | None, tail: str
) -> None:
    case = CASES[0]
    lazy = FinishedAction(ProposedAction(**_fields(case)), status, exit_code, duration_ms, tail)
    eager = FinishedAction(ActionInfo(**_fields(case)), status, exit_code, duration_ms, tail)
    assert lazy.action_info() == eager.action_info()
    assert lazy.action_info().state == status
    assert lazy.action_info().output_tail == tail
    assert announced_id(lazy) == ACTION.action_id
