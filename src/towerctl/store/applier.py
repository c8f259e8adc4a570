"""The synchronous half of group commit: one connection, one transaction per batch.

Why a class of its own: the same batches run in two places, on the writer
thread (:class:`~towerctl.store.writer.Writer`) and in the forked writer
process (:mod:`towerctl.store.writer_child`). Neither needs the other's
queue, futures or event loop, only this: open the database and the audit
chain, apply a batch as ``BEGIN IMMEDIATE … COMMIT``, copy the WAL back
when idle, close.

The chain head is read under the write lock at the start of each batch and
then kept in memory: records get their seq and prev_hash in commit order,
other processes may append between batches, and there is no read per write.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Final

from towerctl.audit.signing import KeyFileError, load_or_create_key
from towerctl.store.models import StoreError
from towerctl.store.schema import SchemaError, migrate
from towerctl.store.tx import Tx

SYNCHRONOUS_MODES: Final = frozenset({"NORMAL", "FULL", "EXTRA"})
# WAL checkpoints: SQLite's own runs inside whichever COMMIT crosses 1,000
# pages, adding ~3 ms to that batch at fleet load. The writer instead copies
# the WAL back when it has nothing queued and at least IDLE_CHECKPOINT_COMMITS
# batches went by; the automatic one stays as a bound (~32 MiB of WAL) for a
# hub that is never idle.
IDLE_CHECKPOINT_COMMITS: Final = 8
WAL_AUTOCHECKPOINT_PAGES: Final = 8000

# Errors that leave the transaction usable: the statement failed, not the database.
_OP_LOCAL: Final = (
    sqlite3.IntegrityError,
    sqlite3.ProgrammingError,
    sqlite3.DataError,
    sqlite3.NotSupportedError,
)


def _create_private(path: Path) -> None:
    """The database holds production commands: create it readable by us only
    (SQLite gives its -wal and -shm files the same mode)."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


class Applier:
    """The writer connection and the audit chain it appends to.

    Not thread-safe and not async: one thread (or the writer process) owns
    it from ``open`` to ``close``."""

    def __init__(
        self,
        path: Path,
        key_path: Path,
        *,
        synchronous: str,
        busy_timeout_ms: int,
        checkpoint_every: int,
    ) -> None:
        if synchronous.upper() not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {sorted(SYNCHRONOUS_MODES)}")
        if checkpoint_every < 1:
            raise ValueError("checkpoint_every must be at least 1")
        self.path = path
        self.key_path = key_path
        self.synchronous = synchronous.upper()
        self.busy_timeout_ms = busy_timeout_ms
        self.checkpoint_every = checkpoint_every
        #: Transactions since the WAL was last copied back (see idle_checkpoint).
        self.commits_since_checkpoint = 0
        self.conn: sqlite3.Connection | None = None
        self.tx: Tx | None = None
        #: For the store's reader connection, once open.
        self.readonly_uri = ""

    def open(self) -> None:
        _create_private(self.path)
        self.readonly_uri = self.path.resolve().as_uri() + "?mode=ro"
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=self.busy_timeout_ms / 1000)
        self.conn = conn
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                raise StoreError(f"cannot put {self.path} in WAL mode (got {mode})")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
            migrate(conn)
            self.tx = self._open_chain(conn)
        except (sqlite3.Error, SchemaError, KeyFileError, OSError) as exc:
            raise StoreError(f"cannot open the store at {self.path}: {exc}") from exc

    def _open_chain(self, conn: sqlite3.Connection) -> Tx:
        head = conn.execute("SELECT MAX(seq) FROM audit").fetchone()[0] or 0
        last = conn.execute("SELECT seq, key_id FROM checkpoints ORDER BY seq DESC LIMIT 1").fetchone()
        if last is not None:
            if last[0] > head:
                # Writing on would reuse sequence numbers the signed checkpoint
                # vouches for: refuse, the evidence needs a human first.
                raise StoreError(
                    f"audit log truncated: last record {head} < checkpoint {last[0]}; "
                    "run `towerctl audit verify` and investigate before starting the hub"
                )
            if not self.key_path.exists():
                raise StoreError(
                    f"audit signing key {self.key_path} is missing but the log has checkpoints "
                    f"signed by key {last[1]}; restore the key file (a new key could not vouch "
                    "for the existing checkpoints)"
                )
        key = load_or_create_key(self.key_path)
        tx = Tx(conn, key)
        if last is not None and last[1] != tx.key_id:
            raise StoreError(
                f"{self.key_path} holds key {tx.key_id} but the log's checkpoints are signed by "
                f"key {last[1]}; use the key this database was written with"
            )
        tx.load_head()
        tx.defer_audit()
        return tx

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def checkpoint_due(self) -> bool:
        return self.commits_since_checkpoint >= IDLE_CHECKPOINT_COMMITS

    def idle_checkpoint(self) -> bool:
        """Copy the WAL back into the database while nothing waits (see
        IDLE_CHECKPOINT_COMMITS). PASSIVE: never waits on readers, and a
        failure only leaves the WAL longer, so it is not an error. True if
        one ran, so the writer can count them where a test or /metrics sees."""
        if self.conn is None or not self.checkpoint_due():
            return False
        self.commits_since_checkpoint = 0
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        return True

    def apply(self, ops: list[Callable[[Tx], object]]) -> list[tuple[bool, object]]:
        """The batch as one transaction. Returns (ok, value-or-exception) per op.

        Optimistic first: the whole batch in one transaction with no per-op
        SAVEPOINT (two statements fewer per op). Only if an operation fails is
        the batch rolled back and run again with a SAVEPOINT around each op, so
        that one bad op never sinks the others. Ops are plain functions of the
        transaction, so running one twice is safe. A failing BEGIN or COMMIT
        (disk full, lock held past the busy timeout) raises: the whole batch
        failed.
        """
        conn, tx = self.conn, self.tx
        if conn is None or tx is None:
            raise StoreError("the store is closed")
        self.commits_since_checkpoint += 1
        if len(ops) > 1:
            results = self._run_batch(conn, tx, ops, isolate=False)
            if results is not None:
                return results
        results = self._run_batch(conn, tx, ops, isolate=True)
        assert results is not None
        return results

    def _run_batch(
        self, conn: sqlite3.Connection, tx: Tx, ops: list[Callable[[Tx], object]], *, isolate: bool
    ) -> list[tuple[bool, object]] | None:
        """None when ``isolate`` is off and an op failed (nothing was committed)."""
        conn.execute("BEGIN IMMEDIATE")
        results: list[tuple[bool, object]] = []
        try:
            # Re-read the head under the write lock every batch: another process
            # (`towerctl token create`, `policy apply --db`) may have appended
            # since, and a failed COMMIT leaves our copy uncertain. Two indexed
            # reads per batch, not per write.
            tx.drop_deferred()
            tx.load_head()
            for op in ops:
                head, last_cp, mark = tx.head, tx.last_checkpoint_seq, tx.deferred_mark()
                if isolate:
                    conn.execute("SAVEPOINT op")
                try:
                    value = op(tx)
                except Exception as exc:
                    if (isinstance(exc, sqlite3.Error) and not isinstance(exc, _OP_LOCAL)) or (
                        not conn.in_transaction
                    ):
                        raise  # the database, not the operation, failed
                    if not isolate:
                        conn.execute("ROLLBACK")
                        return None
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    tx.head, tx.last_checkpoint_seq = head, last_cp
                    tx.drop_deferred(mark)
                    results.append((False, exc))
                    continue
                if isolate:
                    conn.execute("RELEASE op")
                results.append((True, value))
                if tx.head.seq - tx.last_checkpoint_seq >= self.checkpoint_every:
                    tx.write_checkpoint()
            tx.flush_audit()
            conn.execute("COMMIT")
        except BaseException:
            tx.drop_deferred()
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            raise
        return results
