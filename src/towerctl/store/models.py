"""Rows the store takes and returns, and the errors it raises.

Frozen dataclasses rather than pydantic models: these never come off the wire
(the hub validates messages before building them), and they are created on
every read, so they should cost nothing. Times are integer milliseconds since
the epoch everywhere; there are no floats anywhere in the store.
"""

from __future__ import annotations

import json
import operator
from dataclasses import dataclass, fields
from typing import Any, Final, TypeVar, get_args

from agent_shim.types import ActionState
from towerctl.audit.chain import AuditRow, CheckpointRow

__all__ = [
    "ACTION_STATES",
    "DECISION_VERDICTS",
    "ActionRow",
    "AlreadyDecided",
    "AuditRow",
    "CheckpointRow",
    "DecisionRow",
    "InvalidTransition",
    "NotFound",
    "OutcomeRow",
    "PolicyRow",
    "SessionRow",
    "StoreError",
    "TokenRow",
]

ACTION_STATES: Final = frozenset(get_args(ActionState))
DECISION_VERDICTS: Final = frozenset({"approved", "denied", "expired"})

_Row = TypeVar("_Row")


def _pickles_as_tuple(cls: type[_Row]) -> type[_Row]:
    """Pickle as ``cls(*fields)``: rows cross the pipe to the writer process on
    every write, and a frozen slotted dataclass otherwise pickles through
    Python-level getstate/setstate (~30 % slower both ways)."""
    values = operator.attrgetter(*(f.name for f in fields(cls)))  # type: ignore[arg-type]

    def __reduce__(self: _Row) -> tuple[type[_Row], tuple[Any, ...]]:
        return cls, values(self)

    cls.__reduce__ = __reduce__  # type: ignore[assignment,method-assign]
    return cls


@_pickles_as_tuple
@dataclass(frozen=True, slots=True)
class SessionRow:
    session_id: str
    agent: str
    env: str
    host: str
    pid: int | None
    status: str
    started_at: int
    last_seen: int
    ended_at: int | None = None


@_pickles_as_tuple
@dataclass(frozen=True, slots=True)
class ActionRow:
    action_id: str
    session_id: str
    kind: str
    command: str
    target: str | None
    digest: str
    risk: str
    reasons: tuple[str, ...]
    policy_verdict: str
    rule: dict[str, object] | None
    state: str
    #: The action's canonical JSON text (``Action.text_and_digest``), stored
    #: as it is in the row and the audit record. Text, not a dict: the hub
    #: makes it for the digest anyway, and a dict beside it was dumped,
    #: pickled to the writer process and thrown away there (~1.5 us an action).
    body: str
    created_at: int
    updated_at: int
    expires_at: int | None = None


@_pickles_as_tuple
@dataclass(frozen=True, slots=True)
class DecisionRow:
    decision_id: str
    action_id: str
    verdict: str
    operator: str
    reason: str
    digest: str
    decided_at: int


@_pickles_as_tuple
@dataclass(frozen=True, slots=True)
class OutcomeRow:
    action_id: str
    status: str
    exit_code: int | None
    duration_ms: int
    output_digest: str | None
    output_tail: str
    reported_at: int


@dataclass(frozen=True, slots=True)
class TokenRow:
    token_id: str
    name: str
    role: str
    envs: tuple[str, ...]
    hash: str
    created_at: int
    revoked_at: int | None = None


@dataclass(frozen=True, slots=True)
class PolicyRow:
    env: str
    version: int
    doc: dict[str, object]
    created_by: str
    created_at: int


# Rows as read from SQLite: JSON columns decoded, lists made tuples.


def session_from_row(r: tuple[Any, ...]) -> SessionRow:
    return SessionRow(*r)


def action_from_row(r: tuple[Any, ...]) -> ActionRow:
    return ActionRow(
        action_id=r[0],
        session_id=r[1],
        kind=r[2],
        command=r[3],
        target=r[4],
        digest=r[5],
        risk=r[6],
        reasons=tuple(json.loads(r[7])),
        policy_verdict=r[8],
        rule=None if r[9] is None else json.loads(r[9]),
        state=r[10],
        body=r[11],
        created_at=r[12],
        updated_at=r[13],
        expires_at=r[14],
    )


def token_from_row(r: tuple[Any, ...]) -> TokenRow:
    return TokenRow(
        token_id=r[0],
        name=r[1],
        role=r[2],
        envs=tuple(json.loads(r[3])),
        hash=r[4],
        created_at=r[5],
        revoked_at=r[6],
    )


class StoreError(Exception):
    """A write did not happen (or a read failed). Never raised after a commit."""


class NotFound(StoreError):
    """The session, action or token named does not exist."""


class Conflict(StoreError):
    """The id is already taken by another session's or a different action."""


class InvalidTransition(StoreError):
    """The action is not in a state from which the requested change is allowed."""


class AlreadyDecided(StoreError):
    """The action already has a decision; ``existing`` says who made it and how,
    so that a losing operator can be told."""

    def __init__(self, existing: DecisionRow) -> None:
        super().__init__(f"action {existing.action_id} already {existing.verdict} by {existing.operator}")
        self.existing = existing

    def __reduce__(self) -> tuple[type[AlreadyDecided], tuple[DecisionRow]]:
        return (AlreadyDecided, (self.existing,))  # crosses the writer process's pipe
