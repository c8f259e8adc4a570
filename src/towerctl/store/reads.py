"""The store's reads: straight from a separate read-only connection.

Reads do not queue behind the writer: WAL lets them run while the writer
commits, and they see everything whose write has returned. Every read error
is a ``StoreError``, like every write error.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Collection, Iterable
from contextlib import closing
from pathlib import Path
from typing import Any, Final

import aiosqlite
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from towerctl.audit.chain import VerifyResult
from towerctl.audit.verify import AuditReadError, open_readonly, verify_connection
from towerctl.store.models import (
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

_SESSION_COLS: Final = "session_id, agent, env, host, pid, status, started_at, last_seen, ended_at"
_ACTION_COLS: Final = (
    "action_id, session_id, kind, command, target, digest, risk, reasons, policy_verdict,"
    " rule, state, body, created_at, updated_at, expires_at"
)
_TOKEN_COLS: Final = "token_id, name, role, envs, hash, created_at, revoked_at"
_AUDIT_COLS: Final = "seq, ts_ms, event, actor, session_id, action_id, body, prev_hash, hash"

Row = tuple[Any, ...]


def _placeholders(values: Collection[str]) -> str:
    return ", ".join("?" * len(values))


class StoreReads:
    """The read half of :class:`~towerctl.store.db.Store`."""

    #: Set by ``Store.__init__``.
    path: Path
    _reader: aiosqlite.Connection
    _public_key: Ed25519PublicKey

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
        """The newest ``limit`` matching actions, oldest first. By session it
        walks the actions from the newest (there is no per-session index:
        schema v3 says why), quick for a session that acted lately."""
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
            "SELECT action_id, outcome_status, exit_code, duration_ms, output_digest, output_tail,"
            " reported_at FROM actions WHERE action_id = ? AND outcome_status IS NOT NULL",
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
