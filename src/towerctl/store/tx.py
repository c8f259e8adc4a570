"""What a write operation sees: the writer's connection inside the batch
transaction, and the audit chain head to append to.

Used only on the writer thread, so the head needs no lock; it is an immutable
``ChainHead`` so that the writer can put back the head from before an
operation when that operation rolls back to its savepoint.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from towerctl.audit.chain import CanonicalJSON, ChainHead, CheckpointRow
from towerctl.audit.signing import key_id, sign_checkpoint

_INSERT_AUDIT: Final = (
    "INSERT INTO audit (seq, ts_ms, event, actor, session_id, action_id, body, prev_hash, hash) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_CHECKPOINT: Final = (
    "INSERT INTO checkpoints (seq, hash, ts_ms, key_id, signature) VALUES (?, ?, ?, ?, ?)"
)


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Tx:
    """What an operation sees: the writer's connection, inside the batch
    transaction, and the audit chain to append to."""

    def __init__(self, conn: sqlite3.Connection, key: Ed25519PrivateKey) -> None:
        self.conn = conn
        self.key = key
        self.key_id = key_id(key.public_key())
        self.head = ChainHead()
        self.last_checkpoint_seq = 0
        #: Audit rows sealed but not yet inserted, when the writer defers them
        #: to one executemany per batch (see defer_audit); None: at once.
        self._deferred: list[tuple[object, ...]] | None = None

    def load_head(self) -> None:
        row = self.conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        self.head = ChainHead(int(row[0]), str(row[1])) if row else ChainHead()
        cp = self.conn.execute("SELECT MAX(seq) FROM checkpoints").fetchone()
        self.last_checkpoint_seq = int(cp[0]) if cp and cp[0] is not None else 0

    def one(self, sql: str, params: tuple[object, ...] = ()) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self.conn.execute(sql, params).fetchone()
        return row

    def audit(
        self,
        event: str,
        *,
        actor: str,
        ts_ms: int,
        data: Mapping[str, object] | CanonicalJSON,
        session_id: str | None = None,
        action_id: str | None = None,
        typed: bool = False,
    ) -> None:
        seq, body, hash_ = self.head.seal(
            ts_ms=ts_ms,
            event=event,
            actor=actor,
            session_id=session_id,
            action_id=action_id,
            data=data,
            typed=typed,
        )
        params = (seq, ts_ms, event, actor, session_id, action_id, body, self.head.hash, hash_)
        if self._deferred is None:
            self.conn.execute(_INSERT_AUDIT, params)
        else:
            self._deferred.append(params)
        self.head = ChainHead(seq, hash_)

    # The writer's batches append two audit rows per allowed action; one
    # executemany before COMMIT costs a fraction of a statement each. Nothing
    # reads the audit table inside a batch (the head is kept in memory), and
    # the rows still commit in the same transaction as what they record.

    def defer_audit(self) -> None:
        """From now on, audit rows wait for flush_audit (the writer's batches)."""
        self._deferred = []

    def deferred_mark(self) -> int:
        return len(self._deferred) if self._deferred is not None else 0

    def drop_deferred(self, mark: int = 0) -> None:
        """Forget rows sealed after ``mark``: their operation was rolled back."""
        if self._deferred is not None:
            del self._deferred[mark:]

    def flush_audit(self) -> None:
        """Insert the deferred rows; call inside the transaction, before COMMIT."""
        if self._deferred:
            rows, self._deferred = self._deferred, []
            self.conn.executemany(_INSERT_AUDIT, rows)

    def write_checkpoint(self) -> CheckpointRow:
        seq, hash_ = self.head.seq, self.head.hash
        cp = CheckpointRow(
            seq=seq,
            hash=hash_,
            ts_ms=wall_ms(),
            key_id=self.key_id,
            signature=sign_checkpoint(self.key, seq, hash_),
        )
        self.conn.execute(_INSERT_CHECKPOINT, (cp.seq, cp.hash, cp.ts_ms, cp.key_id, cp.signature))
        self.last_checkpoint_seq = seq
        return cp

    def checkpoint(self) -> CheckpointRow | None:
        """A checkpoint covering every record so far; the existing one if
        nothing was added since (so close() after close() adds nothing)."""
        if self.head.seq == 0:
            return None
        if self.head.seq > self.last_checkpoint_seq:
            return self.write_checkpoint()
        row = self.one(
            "SELECT seq, hash, ts_ms, key_id, signature FROM checkpoints WHERE seq = ?",
            (self.last_checkpoint_seq,),
        )
        if row is None:  # pragma: no cover - load_head read it a moment ago
            return self.write_checkpoint()
        return CheckpointRow(*row)
