"""The write operations on sessions, each one state change plus its audit record.

Like ``ops`` (the actions' operations): plain synchronous functions over a
``Tx``, run by the writer inside the batch transaction, so the row and its
record are written or undone together.
"""

from __future__ import annotations

from typing import Final

from towerctl.store.models import NotFound, SessionRow
from towerctl.store.tx import Tx

# Session statuses after which the session is over.
ENDED: Final = frozenset({"ended", "killed"})


def session_started(tx: Tx, row: SessionRow, *, resumed: bool, ts_ms: int) -> None:
    tx.conn.execute(
        "INSERT INTO sessions (session_id, agent, env, host, pid, status, started_at, last_seen,"
        " ended_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (session_id) DO UPDATE SET agent = excluded.agent, env = excluded.env,"
        " host = excluded.host, pid = excluded.pid, status = excluded.status,"
        " last_seen = excluded.last_seen, ended_at = CASE WHEN excluded.status IN ('killed', 'ended')"
        " THEN COALESCE(excluded.ended_at, sessions.ended_at) ELSE excluded.ended_at END",
        (
            row.session_id,
            row.agent,
            row.env,
            row.host,
            row.pid,
            row.status,
            row.started_at,
            row.last_seen,
            row.ended_at,
        ),
    )
    tx.audit(
        "session.resumed" if resumed else "session.started",
        actor=f"agent:{row.agent}",
        ts_ms=ts_ms,
        session_id=row.session_id,
        data={
            "agent": row.agent,
            "env": row.env,
            "host": row.host,
            "pid": row.pid,
            "status": row.status,
            "started_at": row.started_at,
        },
    )


def session_status(tx: Tx, session_id: str, status: str, *, actor: str, reason: str, ts_ms: int) -> None:
    # "resumed" is an event, not a state: the session is active again.
    stored = "active" if status == "resumed" else status
    old = tx.one("SELECT status FROM sessions WHERE session_id = ?", (session_id,))
    if old is None:
        raise NotFound(f"no session {session_id}")
    tx.conn.execute(
        "UPDATE sessions SET status = ?, last_seen = MAX(last_seen, ?),"
        " ended_at = CASE WHEN ? THEN ? ELSE ended_at END WHERE session_id = ?",
        (stored, ts_ms, stored in ENDED, ts_ms, session_id),
    )
    tx.audit(
        f"session.{status}",
        actor=actor,
        ts_ms=ts_ms,
        session_id=session_id,
        data={"reason": reason, "from": old[0], "status": stored},
    )
