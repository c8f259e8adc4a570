"""The store's writes: validate in the caller, then queue to the writer.

Every change goes through the group-committing ``Writer`` (one transaction
per batch, audit records in the same transaction as the change they
describe). Arguments are checked here, before queueing, so that a bad call
fails in its caller instead of rolling back a batch of other callers' writes.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping
from functools import partial
from typing import Final, TypeVar

from towerctl.store import ops, ops_admin, ops_sessions
from towerctl.store.models import (
    DECISION_VERDICTS,
    ActionRow,
    CheckpointRow,
    DecisionRow,
    OutcomeRow,
    SessionRow,
    StoreError,
    TokenRow,
)
from towerctl.store.tx import Tx
from towerctl.store.writer import Writer

_NAME: Final = re.compile(r"^[a-z][a-z0-9_]*$")
_EVENT: Final = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
T = TypeVar("T")


def _ms(value: object, what: str = "ts_ms") -> int:
    if type(value) is not int:
        raise StoreError(f"{what} must be an int (milliseconds), got {type(value).__name__}")
    return value


class StoreWrites:
    """The write half of :class:`~towerctl.store.db.Store`."""

    #: Set by ``Store.__init__``.
    _writer: Writer
    _closing: bool

    async def _write(self, op: Callable[[Tx], T]) -> T:
        return await self._queue(op)

    def _queue(self, op: Callable[[Tx], T], *, lazy: bool = False) -> asyncio.Future[T]:
        if self._closing:
            raise StoreError("the store is closed")
        return self._writer.enqueue(op, lazy=lazy)

    # --------------------------------------------------------------- writes

    async def session_started(self, row: SessionRow, *, resumed: bool, ts_ms: int) -> None:
        _ms(ts_ms)
        await self._write(partial(ops_sessions.session_started, row=row, resumed=resumed, ts_ms=ts_ms))

    async def session_status(
        self, session_id: str, status: str, *, actor: str, reason: str, ts_ms: int
    ) -> None:
        """``status`` "resumed" is recorded as the event session.resumed and
        stores the session as "active" again."""
        _ms(ts_ms)
        if not _NAME.match(status):
            raise StoreError(f"bad session status {status!r}")
        await self._write(
            partial(
                ops_sessions.session_status,
                session_id=session_id,
                status=status,
                actor=actor,
                reason=reason,
                ts_ms=ts_ms,
            )
        )

    async def action_proposed(
        self, row: ActionRow, *, actor: str, ts_ms: int, started: bool = False
    ) -> str | None:
        """None when recorded; the action's current state when this very
        proposal was recorded before (a re-send). Raises Conflict when the id
        belongs to another session or a different action. ``started`` records an
        allowed action as running at once (see ops.action_proposed)."""
        _ms(ts_ms)
        if row.state not in ops.INITIAL_STATES:
            raise StoreError(f"an action starts allowed, denied or pending, not {row.state}")
        if row.state == "allowed" and row.policy_verdict != "allow":
            raise StoreError(f"policy verdict {row.policy_verdict} does not allow running it")
        if row.state == "pending" and row.policy_verdict == "deny":
            raise StoreError("policy denies this action; it cannot wait for approval")
        return await self._write(
            partial(ops.action_proposed, row=row, actor=actor, ts_ms=ts_ms, started=started)
        )

    async def action_decided(
        self, decision: DecisionRow, *, new_state: str, ts_ms: int, checkpoint: bool = False
    ) -> DecisionRow:
        """Raises AlreadyDecided (with the winning decision) if another came first.

        ``checkpoint`` signs a checkpoint over the decision in the same
        transaction (the hub does for prod): one commit before the decision is
        sent, not two."""
        _ms(ts_ms)
        if new_state not in DECISION_VERDICTS or new_state != decision.verdict:
            raise StoreError(
                f"new_state {new_state!r} must equal the verdict {decision.verdict!r} "
                f"and be one of {sorted(DECISION_VERDICTS)}"
            )
        result: DecisionRow = await self._write(
            partial(
                ops.action_decided, decision=decision, new_state=new_state, ts_ms=ts_ms, checkpoint=checkpoint
            )
        )
        return result

    async def action_state(
        self,
        action_id: str,
        new_state: str,
        *,
        actor: str,
        ts_ms: int,
        data: Mapping[str, object] | None = None,
    ) -> None:
        await self.queue_action_state(action_id, new_state, actor=actor, ts_ms=ts_ms, data=data)

    def queue_action_state(
        self,
        action_id: str,
        new_state: str,
        *,
        actor: str,
        ts_ms: int,
        data: Mapping[str, object] | None = None,
        lazy: bool = False,
    ) -> asyncio.Future[None]:
        """Queued now, in order with every other write; awaiting is optional
        (the hub pipelines an agent's started/report this way, ``lazy``: see
        Writer.enqueue)."""
        _ms(ts_ms)
        return self._queue(
            partial(
                ops.action_state,
                action_id=action_id,
                new_state=new_state,
                actor=actor,
                ts_ms=ts_ms,
                data=None if data is None else dict(data),
            ),
            lazy=lazy,
        )

    async def action_finished(
        self, outcome: OutcomeRow, *, actor: str, ts_ms: int, expect: tuple[str, str] | None = None
    ) -> None:
        await self.queue_action_finished(outcome, actor=actor, ts_ms=ts_ms, expect=expect)

    def queue_action_finished(
        self,
        outcome: OutcomeRow,
        *,
        actor: str,
        ts_ms: int,
        expect: tuple[str, str] | None = None,
        lazy: bool = False,
    ) -> asyncio.Future[None]:
        """``expect``: (session, state) the caller believes the action is in
        (see ops.action_finished); a wrong belief costs a read, not a wrong write."""
        _ms(ts_ms)
        if outcome.status not in ("succeeded", "failed"):
            raise StoreError(f"outcome status must be succeeded or failed, not {outcome.status}")
        return self._queue(
            partial(ops.action_finished, outcome=outcome, actor=actor, ts_ms=ts_ms, expect=expect),
            lazy=lazy,
        )

    async def env_frozen(self, env: str, frozen: bool, *, actor: str, ts_ms: int) -> None:
        _ms(ts_ms)
        await self._write(partial(ops_admin.env_frozen, env=env, frozen=frozen, actor=actor, ts_ms=ts_ms))

    async def policy_saved(self, env: str, doc_json: dict[str, object], *, actor: str, ts_ms: int) -> int:
        """Returns the new version (1 for an environment's first policy)."""
        _ms(ts_ms)
        version: int = await self._write(
            partial(ops_admin.policy_saved, env=env, doc=doc_json, actor=actor, ts_ms=ts_ms)
        )
        return version

    async def token_added(self, row: TokenRow, *, actor: str, ts_ms: int) -> None:
        _ms(ts_ms)
        await self._write(partial(ops_admin.token_added, row=row, actor=actor, ts_ms=ts_ms))

    async def token_revoked(self, token_id: str, *, actor: str, ts_ms: int) -> None:
        """Revoking an already revoked token changes nothing and records nothing."""
        _ms(ts_ms)
        await self._write(partial(ops_admin.token_revoked, token_id=token_id, actor=actor, ts_ms=ts_ms))

    async def audit_note(
        self,
        event: str,
        *,
        actor: str,
        data: Mapping[str, object],
        ts_ms: int,
        session_id: str | None = None,
        action_id: str | None = None,
    ) -> None:
        """A record with no state change (hub.started, protocol.rejected, …)."""
        _ms(ts_ms)
        if not _EVENT.match(event):
            raise StoreError(f"bad audit event name {event!r} (want e.g. 'hub.started')")
        await self._write(
            partial(
                Tx.audit,
                event=event,
                actor=actor,
                ts_ms=ts_ms,
                data=dict(data),
                session_id=session_id,
                action_id=action_id,
            )
        )

    async def checkpoint(self) -> CheckpointRow | None:
        """Sign the chain head now (None while the log is empty). Publishing the
        result somewhere else pins the log up to here against truncation."""
        result: CheckpointRow | None = await self._write(Tx.checkpoint)
        return result
