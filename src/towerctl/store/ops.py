"""The write operations on actions, each one state change plus its audit
records (the sessions' are in ``ops_sessions``).

Plain synchronous functions over a ``Tx``; the writer runs them inside a
SAVEPOINT in the batch transaction, so an exception here undoes exactly this
operation (rows and audit records alike) and nothing else. The action state
machine is enforced here, next to the rows, because only here are the checks
and the write atomic: two operators deciding at once are serialised by the
writer, and the loser sees the winner's decision.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Final

from agent_shim.canonical import canonical_str, canonical_text
from towerctl.audit.chain import CanonicalJSON
from towerctl.store.models import (
    ActionRow,
    AlreadyDecided,
    Conflict,
    DecisionRow,
    InvalidTransition,
    NotFound,
    OutcomeRow,
    StoreError,
)
from towerctl.store.tx import Tx

INITIAL_STATES: Final = frozenset({"allowed", "denied", "pending"})
# new state -> the states it may be reached from (decisions and outcomes have
# their own operations with their own rules).
TRANSITIONS: Final[dict[str, frozenset[str]]] = {
    "running": frozenset({"allowed", "approved"}),
    "cancelled": frozenset({"pending", "allowed", "approved"}),
}
FINISHABLE: Final = frozenset({"running", "allowed", "approved"})


def to_json(value: object) -> str:
    """JSON for a column copy, with canonical_text's rules but not its walk
    for floats and odd keys: values stored this way are either typed (an
    action's body, reasons and rule, from a strict model) or also go into a
    checked audit record, which rolls the operation back."""
    return canonical_text(value, checked=False)


def action_proposed(
    tx: Tx, row: ActionRow, *, actor: str, ts_ms: int, started: bool = False
) -> str | None:
    """Record a new proposal; for the same proposal re-sent (after a reconnect)
    record nothing and return the state it is in now.

    ``started``: an allowed action the agent runs at once (the shim says so by
    proposing it with verdict allow), recorded as allowed and then running in
    this same operation, with no separate message or write for the start.

    The proposal is one audit record, ``action.proposed``, whose ``states``
    name every state it moved the action through (``["allowed", "running"]``,
    ``["pending"]``, ``["denied"]``): those transitions are one operation at
    one instant by one actor, so a record each said nothing this one does not,
    and cost ~30 % of the writer's time per allowed action (docs/security.md)."""
    # Insert first and look only on a clash: a re-sent proposal is rare, and
    # a read before every insert was one statement in nine on this path.
    if started and row.state != "allowed":
        state = _resent(tx, row)
        if state is not None:
            return state
        raise InvalidTransition(f"only an allowed action can start at once, not a {row.state} one")
    # Each JSON value is encoded once, for the row's column and the record
    # (the body by the hub, for the digest).
    body = row.body
    reasons = to_json(list(row.reasons))
    rule = "null" if row.rule is None else to_json(row.rule)
    try:
        _insert_action(tx, row, "running" if started else row.state, body, reasons, rule)
    except sqlite3.IntegrityError as exc:
        if "FOREIGN KEY" in str(exc):
            raise NotFound(f"no session {row.session_id}") from exc
        state = _resent(tx, row)
        if state is None:
            raise
        return state
    tx.audit(
        "action.proposed",
        actor=actor,
        ts_ms=ts_ms,
        session_id=row.session_id,
        action_id=row.action_id,
        data=proposed_data(
            body,
            row.digest,
            row.policy_verdict,
            reasons,
            row.risk,
            rule,
            expires_at=row.expires_at,
            states=_STARTED if started else _STATES[row.state],
        ),
    )
    return None


def _resent(tx: Tx, row: ActionRow) -> str | None:
    """The state of the action already recorded under this id, if it is this
    same proposal; Conflict if the id was used for something else."""
    existing = tx.one("SELECT session_id, digest, state FROM actions WHERE action_id = ?", (row.action_id,))
    if existing is None:
        return None
    if existing[0] != row.session_id:
        raise Conflict(f"action id {row.action_id} already used by another session")
    if existing[1] != row.digest:
        raise Conflict(f"action id {row.action_id} already used for a different action")
    return str(existing[2])


# The ``states`` of a proposal's record, canonical JSON made once.
_STATES: Final = {state: f'["{state}"]' for state in INITIAL_STATES}
_STARTED: Final = '["allowed","running"]'


def proposed_data(
    body: str,
    digest: str,
    verdict: str,
    reasons: str,
    risk: str,
    rule: str,
    *,
    expires_at: int | None,
    states: str,
) -> CanonicalJSON:
    """The data of an ``action.proposed`` record around JSON values already
    encoded by to_json (canonical_text), in sorted key order;
    a test holds it equal to encoding the dict."""
    return CanonicalJSON(
        "".join(
            (
                '{"body":',
                body,
                ',"digest":',
                canonical_str(digest),
                ',"expires_at":',
                "null" if expires_at is None else str(int(expires_at)),
                ',"policy_verdict":',
                canonical_str(verdict),
                ',"reasons":',
                reasons,
                ',"risk":',
                canonical_str(risk),
                ',"rule":',
                rule,
                ',"states":',
                states,
                "}",
            )
        )
    )


def _insert_action(tx: Tx, row: ActionRow, state: str, body: str, reasons: str, rule: str) -> None:
    tx.conn.execute(
        "INSERT INTO actions (action_id, session_id, kind, command, target, digest, risk, reasons,"
        " policy_verdict, rule, state, body, created_at, updated_at, expires_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            row.action_id,
            row.session_id,
            row.kind,
            row.command,
            row.target,
            row.digest,
            row.risk,
            reasons,
            row.policy_verdict,
            None if row.rule is None else rule,
            state,
            body,
            row.created_at,
            row.updated_at,
            row.expires_at,
        ),
    )


def _decision(tx: Tx, action_id: str) -> DecisionRow | None:
    r = tx.one(
        "SELECT decision_id, action_id, verdict, operator, reason, digest, decided_at"
        " FROM decisions WHERE action_id = ?",
        (action_id,),
    )
    if r is None:
        return None
    return DecisionRow(
        decision_id=str(r[0]),
        action_id=str(r[1]),
        verdict=str(r[2]),
        operator=str(r[3]),
        reason=str(r[4]),
        digest=str(r[5]),
        decided_at=int(r[6]),
    )


def action_decided(
    tx: Tx, decision: DecisionRow, *, new_state: str, ts_ms: int, checkpoint: bool = False
) -> DecisionRow:
    existing = _decision(tx, decision.action_id)
    if existing is not None:
        raise AlreadyDecided(existing)
    action = tx.one(
        "SELECT session_id, state, digest, policy_verdict, expires_at FROM actions WHERE action_id = ?",
        (decision.action_id,),
    )
    if action is None:
        raise NotFound(f"no action {decision.action_id}")
    session_id, state, digest, policy_verdict, expires_at = action
    if state != "pending":
        raise InvalidTransition(
            f"action {decision.action_id} is {state}, not pending; it cannot be {new_state}"
        )
    if decision.digest != digest:
        raise StoreError("the decision's digest does not match the action's: not the same action")
    if new_state == "approved":
        if policy_verdict == "deny":
            raise StoreError("policy denies this action; it cannot be approved")
        if isinstance(expires_at, int) and ts_ms > expires_at:
            raise InvalidTransition(f"approval window for {decision.action_id} closed at {expires_at}")
    tx.conn.execute(
        "INSERT INTO decisions (decision_id, action_id, verdict, operator, reason, digest,"
        " decided_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            decision.decision_id,
            decision.action_id,
            decision.verdict,
            decision.operator,
            decision.reason,
            decision.digest,
            decision.decided_at,
        ),
    )
    tx.conn.execute(
        "UPDATE actions SET state = ?, updated_at = ? WHERE action_id = ?",
        (new_state, ts_ms, decision.action_id),
    )
    tx.audit(
        f"action.{new_state}",
        actor=decision.operator,
        ts_ms=ts_ms,
        session_id=str(session_id),
        action_id=decision.action_id,
        data={
            "decision_id": decision.decision_id,
            "operator": decision.operator,
            "reason": decision.reason,
            "digest": decision.digest,
            "from": "pending",
        },
    )
    if checkpoint:
        tx.checkpoint()
    return decision


def action_state(
    tx: Tx,
    action_id: str,
    new_state: str,
    *,
    actor: str,
    ts_ms: int,
    data: Mapping[str, object] | None,
) -> None:
    allowed_from = TRANSITIONS.get(new_state)
    if allowed_from is None:
        raise InvalidTransition(f"{new_state!r} is not a state this operation can set")
    row = tx.one("SELECT session_id, state FROM actions WHERE action_id = ?", (action_id,))
    if row is None:
        raise NotFound(f"no action {action_id}")
    session_id, old = row
    if old not in allowed_from:
        raise InvalidTransition(f"action {action_id} is {old}; it cannot become {new_state}")
    tx.conn.execute(
        "UPDATE actions SET state = ?, updated_at = ? WHERE action_id = ?",
        (new_state, ts_ms, action_id),
    )
    tx.audit(
        f"action.{new_state}",
        actor=actor,
        ts_ms=ts_ms,
        session_id=str(session_id),
        action_id=action_id,
        data={**(data or {}), "from": old},
    )


def action_finished(
    tx: Tx, outcome: OutcomeRow, *, actor: str, ts_ms: int, expect: tuple[str, str] | None = None
) -> None:
    """Record an action's outcome in its row, with its audit record.

    ``expect``: the (session, state) the hub believes the action is in. Then
    one compare-and-set UPDATE both checks and records, with no read first;
    if the row is not in that state the read decides the error (or the
    truth, when the hub's belief was out of date but still legal)."""
    if expect is not None and expect[1] in FINISHABLE:
        session_id, old = expect
        moved = tx.conn.execute(
            _FINISH + " AND session_id = ? AND state = ? AND outcome_status IS NULL",
            (*_finish_params(outcome, ts_ms), session_id, old),
        ).rowcount
        if moved == 1:
            _record_outcome(tx, outcome, session_id, old, actor=actor, ts_ms=ts_ms)
            return
    row = tx.one(
        "SELECT session_id, state, outcome_status FROM actions WHERE action_id = ?", (outcome.action_id,)
    )
    if row is None:
        raise NotFound(f"no action {outcome.action_id}")
    session_id, old, reported = row
    if reported is not None:
        raise InvalidTransition(f"the outcome of {outcome.action_id} was already reported")
    if old not in FINISHABLE:
        raise InvalidTransition(f"action {outcome.action_id} is {old}; it cannot have {outcome.status}")
    tx.conn.execute(_FINISH, _finish_params(outcome, ts_ms))
    _record_outcome(tx, outcome, str(session_id), str(old), actor=actor, ts_ms=ts_ms)


_FINISH: Final = (
    "UPDATE actions SET state = ?, updated_at = ?, outcome_status = ?, exit_code = ?, duration_ms = ?,"
    " output_digest = ?, output_tail = ?, reported_at = ? WHERE action_id = ?"
)


def _finish_params(outcome: OutcomeRow, ts_ms: int) -> tuple[object, ...]:
    return (
        outcome.status,
        ts_ms,
        outcome.status,
        outcome.exit_code,
        outcome.duration_ms,
        outcome.output_digest,
        outcome.output_tail,
        outcome.reported_at,
        outcome.action_id,
    )


def _record_outcome(
    tx: Tx, outcome: OutcomeRow, session_id: str, old: str, *, actor: str, ts_ms: int
) -> None:
    tx.audit(
        f"action.{outcome.status}",
        actor=actor,
        ts_ms=ts_ms,
        session_id=session_id,
        action_id=outcome.action_id,
        data={
            "exit_code": outcome.exit_code,
            "duration_ms": outcome.duration_ms,
            "output_digest": outcome.output_digest,
            "output_tail": outcome.output_tail,
            "from": old,
        },
        typed=True,
    )
