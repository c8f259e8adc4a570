"""The writes of every action cross to the writer process as plain tuples and
come back as the same operation: every field, every keyword, through pickle."""

from __future__ import annotations

import pickle
from functools import partial

import pytest

from towerctl.store import ops, ops_sessions
from towerctl.store.models import ActionRow, OutcomeRow, StoreError
from towerctl.store.op_wire import FINISHED, PROPOSED, from_wire, to_wire
from towerctl.store.tx import Tx

from .test_writer_process import T0, action, session


def outcome(**change: object) -> OutcomeRow:
    fields: dict[str, object] = dict(
        action_id="a-1",
        status="failed",
        exit_code=3,
        duration_ms=12,
        output_digest="ab" * 32,
        output_tail="out: é\n",
        reported_at=T0 + 5,
    )
    return OutcomeRow(**(fields | change))  # type: ignore[arg-type]


PENDING = ActionRow(
    **{
        **{f: getattr(action("a-2"), f) for f in ActionRow.__dataclass_fields__},
        "state": "pending",
        "policy_verdict": "ask",
        "rule": {"kind": "shell", "match": "rm *", "verdict": "ask"},
        "reasons": ("rm: deletes", "a: b"),
        "expires_at": T0 + 60_000,
        "body": '{"command":"rm -rf /x"}',
    }
)

HOT = [
    (PROPOSED, partial(ops.action_proposed, row=action("a-1"), actor="agent:a", ts_ms=T0, started=True)),
    (PROPOSED, partial(ops.action_proposed, row=PENDING, actor="agent:b", ts_ms=T0 + 1, started=False)),
    (FINISHED, partial(ops.action_finished, outcome=outcome(), actor="agent:a", ts_ms=T0, expect=None)),
    (
        FINISHED,
        partial(
            ops.action_finished,
            outcome=outcome(status="succeeded", exit_code=None, output_digest=None),
            actor="agent:a",
            ts_ms=T0 + 2,
            expect=("s-1", "running"),
        ),
    ),
]


@pytest.mark.parametrize(("code", "op"), HOT)
def test_an_actions_writes_cross_as_tuples_and_come_back_the_same(code: int, op: partial[object]) -> None:
    wire = to_wire(op)
    assert type(wire) is tuple and wire[0] == code
    back = from_wire(pickle.loads(pickle.dumps(wire, protocol=pickle.HIGHEST_PROTOCOL)))
    assert isinstance(back, partial)
    assert back.func is op.func and back.args == () and back.keywords == op.keywords


OTHER = [
    partial(ops_sessions.session_started, row=session(), resumed=False, ts_ms=T0),
    partial(ops.action_state, action_id="a-1", new_state="running", actor="a", ts_ms=T0, data=None),
    # The hot functions with other keywords than the store passes: left as they are.
    partial(ops.action_proposed, row=action("a-1"), actor="agent:a", ts_ms=T0),
    partial(ops.action_finished, outcome=outcome(), actor="agent:a", ts_ms=T0),
    Tx.checkpoint,
]


@pytest.mark.parametrize("op", OTHER)
def test_other_operations_cross_as_they_are(op: object) -> None:
    assert to_wire(op) is op  # type: ignore[arg-type]
    assert from_wire(op) is op


@pytest.mark.parametrize(
    ("item", "why"),
    [
        ((PROPOSED, ("too", "few"), "agent:a", T0, True), "malformed"),
        ((PROPOSED, (), "agent:a"), "malformed"),
        ((99, (), "agent:a", T0, None), "unknown write operation 99"),
        ("not an op", "not a write operation"),
    ],
)
def test_what_is_not_an_operation_is_refused_with_a_reason(item: object, why: str) -> None:
    with pytest.raises(StoreError, match=why):
        from_wire(item)
