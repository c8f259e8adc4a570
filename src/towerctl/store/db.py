"""The hub's persistent store: every proposed action, decision and outcome.

Writes go through the group-committing ``Writer`` (one transaction per batch,
audit records in the same transaction as the change they describe). Reads go
straight to a separate read-only aiosqlite connection: WAL lets them run while
the writer commits, and they see everything whose write has returned.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from collections.abc import Callable, Collection, Iterable, Mapping
from contextlib import closing
from functools import partial
from pathlib import Path
from typing import Any, Final, TypeVar

import aiosqlite
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent_shim.protocol import DECISION_SIG_TAG
from towerctl.audit.chain import VerifyResult
from towerctl.audit.verify import AuditReadError, open_readonly, verify_connection
from towerctl.store import ops
from towerctl.store.models import (
    DECISION_VERDICTS,
    ActionRow,
    AuditRow,
    CheckpointRow,
    DecisionRow,
    OutcomeRow,
    SessionRow,
    StoreError,
    TokenRow,
    action_from_row,
    session_from_row,
    token_from_row,
)
from towerctl.store.tx import Tx
from towerctl.store.writer import Writer, WriteStats

_NAME: Final = re.compile(r"^[a-z][a-z0-9_]*$")
_EVENT: Final = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")

_SESSION_COLS: Final = "session_id, agent, env, host, pid, status, started_at, last_seen, ended_at"
_ACTION_COLS: Final = (
    "action_id, session_id, kind, command, target, digest, risk, reasons, policy_verdict,"
    " rule, state, body, created_at, updated_at, expires_at"
)
_TOKEN_COLS: Final = "token_id, name, role, envs, hash, created_at, revoked_at"
_AUDIT_COLS: Final = "seq, ts_ms, event, actor, session_id, action_id, body, prev_hash, hash"

Row = tuple[Any, ...]
T = TypeVar("T")


def _ms(value: object, what: str = "ts_ms") -> int:
    if type(value) is not int:
        raise StoreError(f"{what} must be an int (milliseconds), got {type(value).__name__}")
    return value


def _placeholders(values: Collection[str]) -> str:
    return ", ".join("?" * len(values))


class Store:
    """Open with ``await Store.open(...)``; always ``await close()`` (it signs
    the final checkpoint)."""

    def __init__(
        self,
        path: Path,
        writer: Writer,
        reader: aiosqlite.Connection,
        public_key: Ed25519PublicKey,
        signing_key: Ed25519PrivateKey | None = None,
    ) -> None:
        self.path = path
        self._writer = writer
        self._reader = reader
        self._public_key = public_key
        self._signing_key = signing_key
        self._closing = False

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        key_path: Path,
        synchronous: str = "NORMAL",
        checkpoint_every: int = 256,
        busy_timeout_ms: int = 5000,
        writer_process: bool = False,
    ) -> Store:
        """Create or migrate the database and load the chain head.

        ``synchronous="NORMAL"`` (WAL) survives a crash of the hub but may lose
        the last commits on power loss, never half of one; ``"FULL"`` makes
        every batch durable before its callers hear back.

        ``writer_process`` runs the transactions in a forked process of their
        own (the hub's choice: see :mod:`towerctl.store.writer_proc`); the
        default is a thread, for tools and tests.
        """
        if writer_process:
            from towerctl.store.writer_proc import ProcessWriter

            writer_cls: type[Writer] = ProcessWriter
        else:
            writer_cls = Writer
        writer = writer_cls(
            path,
            key_path,
            synchronous=synchronous,
            busy_timeout_ms=busy_timeout_ms,
            checkpoint_every=checkpoint_every,
        )
        await writer.start()
        try:
            reader = await aiosqlite.connect(
                writer.readonly_uri, uri=True, isolation_level=None, timeout=busy_timeout_ms / 1000
            )
        except (sqlite3.Error, OSError) as exc:
            await writer.stop()
            raise StoreError(f"cannot open {path} for reading: {exc}") from exc
        key = writer.signing_key
        return cls(path, writer, reader, key.public_key(), key)

    async def close(self) -> None:
        """Sign a last checkpoint over everything written, then release the file."""
        if self._closing:
            return
        self._closing = True
        try:
            await self._writer.submit(Tx.checkpoint)
        finally:
            # Reader first: the writer's connection, closed last, is the one
            # that can fold the WAL back into the main file and remove it.
            try:
                await self._reader.close()
            finally:
                await self._writer.stop()

    @property
    def write_stats(self) -> WriteStats:
        return self._writer.stats

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._public_key

    @property
    def public_key_raw(self) -> bytes:
        """The raw 32 bytes of the public key (what shims pin, as hex or base64)."""
        return self._public_key.public_bytes(
            encoding=serialization.Encoding.Raw, format=serialization.PublicFormat.Raw
        )

    @property
    def key_id(self) -> str:
        from towerctl.audit.signing import key_id

        return key_id(self._public_key)

    def sign_decision(self, message: bytes) -> str:
        """Sign a decision's ``signing_bytes()`` with the hub key (hex signature).

        The same key signs audit checkpoints; only messages under the decision
        domain tag are accepted here, so this can never be made to produce a
        checkpoint signature.
        """
        if not message.startswith(DECISION_SIG_TAG):
            raise StoreError("refusing to sign: not a decision message")
        if self._signing_key is None:
            raise StoreError("this store has no signing key")
        return self._signing_key.sign(message).hex()

    async def _write(self, op: Callable[[Tx], T]) -> T:
        return await self._queue(op)

    def _queue(self, op: Callable[[Tx], T]) -> asyncio.Future[T]:
        if self._closing:
            raise StoreError("the store is closed")
        return self._writer.enqueue(op)

    # --------------------------------------------------------------- writes

    async def session_started(self, row: SessionRow, *, resumed: bool, ts_ms: int) -> None:
        _ms(ts_ms)
        await self._write(partial(ops.session_started, row=row, resumed=resumed, ts_ms=ts_ms))

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
                ops.session_status,
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
    ) -> asyncio.Future[None]:
        """Queued now, in order with every other write; awaiting is optional
        (the hub pipelines an agent's started/report this way)."""
        _ms(ts_ms)
        return self._queue(
            partial(
                ops.action_state,
                action_id=action_id,
                new_state=new_state,
                actor=actor,
                ts_ms=ts_ms,
                data=None if data is None else dict(data),
            )
        )

    async def action_finished(self, outcome: OutcomeRow, *, actor: str, ts_ms: int) -> None:
        await self.queue_action_finished(outcome, actor=actor, ts_ms=ts_ms)

    def queue_action_finished(self, outcome: OutcomeRow, *, actor: str, ts_ms: int) -> asyncio.Future[None]:
        _ms(ts_ms)
        if outcome.status not in ("succeeded", "failed"):
            raise StoreError(f"outcome status must be succeeded or failed, not {outcome.status}")
        return self._queue(partial(ops.action_finished, outcome=outcome, actor=actor, ts_ms=ts_ms))

    async def env_frozen(self, env: str, frozen: bool, *, actor: str, ts_ms: int) -> None:
        _ms(ts_ms)
        await self._write(partial(ops.env_frozen, env=env, frozen=frozen, actor=actor, ts_ms=ts_ms))

    async def policy_saved(self, env: str, doc_json: dict[str, object], *, actor: str, ts_ms: int) -> int:
        """Returns the new version (1 for an environment's first policy)."""
        _ms(ts_ms)
        version: int = await self._write(
            partial(ops.policy_saved, env=env, doc=doc_json, actor=actor, ts_ms=ts_ms)
        )
        return version

    async def token_added(self, row: TokenRow, *, actor: str, ts_ms: int) -> None:
        _ms(ts_ms)
        await self._write(partial(ops.token_added, row=row, actor=actor, ts_ms=ts_ms))

    async def token_revoked(self, token_id: str, *, actor: str, ts_ms: int) -> None:
        """Revoking an already revoked token changes nothing and records nothing."""
        _ms(ts_ms)
        await self._write(partial(ops.token_revoked, token_id=token_id, actor=actor, ts_ms=ts_ms))

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

    # ---------------------------------------------------------------- reads

    async def _rows(self, sql: str, params: Iterable[object] = ()) -> list[Row]:
        try:
            rows = await self._reader.execute_fetchall(sql, tuple(params))
        except (sqlite3.Error, ValueError) as exc:
            raise StoreError(f"read failed: {exc}") from exc
        return [tuple(r) for r in rows]

    async def token_by_hash(self, token_hash: str) -> TokenRow | None:
        rows = await self._rows(
            f"SELECT {_TOKEN_COLS} FROM tokens WHERE hash = ? AND revoked_at IS NULL",
            (token_hash,),
        )
        return token_from_row(rows[0]) if rows else None

    async def tokens(self) -> list[TokenRow]:
        rows = await self._rows(f"SELECT {_TOKEN_COLS} FROM tokens ORDER BY created_at, token_id")
        return [token_from_row(r) for r in rows]

    async def session(self, session_id: str) -> SessionRow | None:
        rows = await self._rows(f"SELECT {_SESSION_COLS} FROM sessions WHERE session_id = ?", (session_id,))
        return session_from_row(rows[0]) if rows else None

    async def sessions(self, *, statuses: Collection[str] | None = None) -> list[SessionRow]:
        sql = f"SELECT {_SESSION_COLS} FROM sessions"
        params: list[object] = []
        if statuses is not None:
            if not statuses:
                return []
            sql += f" WHERE status IN ({_placeholders(statuses)})"
            params.extend(statuses)
        rows = await self._rows(sql + " ORDER BY started_at, session_id", params)
        return [session_from_row(r) for r in rows]

    async def action(self, action_id: str) -> ActionRow | None:
        rows = await self._rows(f"SELECT {_ACTION_COLS} FROM actions WHERE action_id = ?", (action_id,))
        return action_from_row(rows[0]) if rows else None

    async def actions(
        self,
        *,
        states: Collection[str] | None = None,
        session_id: str | None = None,
        limit: int = 1000,
    ) -> list[ActionRow]:
        """The newest ``limit`` matching actions, oldest first."""
        where: list[str] = []
        params: list[object] = []
        if states is not None:
            if not states:
                return []
            where.append(f"state IN ({_placeholders(states)})")
            params.extend(states)
        if session_id is not None:
            where.append("session_id = ?")
            params.append(session_id)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        sql = (
            f"SELECT {_ACTION_COLS} FROM (SELECT {_ACTION_COLS}, rowid AS rid FROM actions"
            f"{clause} ORDER BY created_at DESC, rowid DESC LIMIT ?) ORDER BY created_at, rid"
        )
        rows = await self._rows(sql, [*params, limit])
        return [action_from_row(r) for r in rows]

    async def decision(self, action_id: str) -> DecisionRow | None:
        rows = await self._rows(
            "SELECT decision_id, action_id, verdict, operator, reason, digest, decided_at"
            " FROM decisions WHERE action_id = ?",
            (action_id,),
        )
        return DecisionRow(*rows[0]) if rows else None

    async def outcome(self, action_id: str) -> OutcomeRow | None:
        rows = await self._rows(
            "SELECT action_id, status, exit_code, duration_ms, output_digest, output_tail,"
            " reported_at FROM outcomes WHERE action_id = ?",
            (action_id,),
        )
        return OutcomeRow(*rows[0]) if rows else None

    async def latest_policies(self) -> dict[str, tuple[int, dict[str, object]]]:
        rows = await self._rows(
            "SELECT env, version, doc FROM policies p"
            " WHERE version = (SELECT MAX(version) FROM policies WHERE env = p.env)"
        )
        return {env: (version, json.loads(doc)) for env, version, doc in rows}

    async def frozen_envs(self) -> set[str]:
        rows = await self._rows("SELECT env FROM env_state WHERE frozen = 1")
        return {r[0] for r in rows}

    async def audit_rows(
        self,
        *,
        since_seq: int = 0,
        limit: int = 1000,
        session_id: str | None = None,
        action_id: str | None = None,
        actor: str | None = None,
    ) -> list[AuditRow]:
        """Records after ``since_seq`` in chain order; page with the last seq seen."""
        where = ["seq > ?"]
        params: list[object] = [since_seq]
        for column, value in (("session_id", session_id), ("action_id", action_id), ("actor", actor)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        rows = await self._rows(
            f"SELECT {_AUDIT_COLS} FROM audit WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?",
            [*params, limit],
        )
        return [AuditRow(*r) for r in rows]

    async def checkpoints(self) -> list[CheckpointRow]:
        rows = await self._rows("SELECT seq, hash, ts_ms, key_id, signature FROM checkpoints ORDER BY seq")
        return [CheckpointRow(*r) for r in rows]

    async def verify(self) -> VerifyResult:
        """Verify the whole log as committed, with this store's key, in a
        thread (a long log must not stall the event loop)."""
        path, key = self.path, self._public_key

        def run() -> VerifyResult:
            with closing(open_readonly(path)) as conn:
                return verify_connection(conn, key)

        try:
            return await asyncio.to_thread(run)
        except (AuditReadError, sqlite3.Error) as exc:
            raise StoreError(f"cannot verify the audit log: {exc}") from exc
