"""Group commit: one writer thread, one transaction per batch of queued writes.

Measured on this kind of machine, a commit per write tops out near 5k rows/s,
and every aiosqlite call is a thread hop that stalls when the event loop is
busy. So callers only enqueue an operation (a plain function over a
connection) and await a future; one task drains the queue and hands the whole
batch to a dedicated thread in a single hop, which runs it as
``BEGIN IMMEDIATE … COMMIT`` with a SAVEPOINT around each operation. A failing
operation rolls back to its savepoint and only its caller sees the error; a
failing BEGIN or COMMIT (disk full, lock held past the busy timeout) fails
every caller in the batch. Futures are resolved only after COMMIT returns.

The chain head is read under the write lock at the start of each batch and then
kept in memory by the writer thread: records get their seq and prev_hash in
commit order, other processes may append between batches, and there is no read
per write.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from towerctl.audit.signing import KeyFileError, load_or_create_key
from towerctl.store.models import StoreError
from towerctl.store.schema import SchemaError, migrate
from towerctl.store.tx import Tx

T = TypeVar("T")

SYNCHRONOUS_MODES: Final = frozenset({"NORMAL", "FULL", "EXTRA"})
# Bounds how long one transaction holds the write lock (~0.15 s at this size).
MAX_BATCH: Final = 512
# WAL checkpoints: SQLite's own runs inside whichever COMMIT crosses 1,000
# pages, adding ~3 ms to that batch at fleet load. The writer instead copies
# the WAL back when it has nothing queued and at least IDLE_CHECKPOINT_COMMITS
# batches went by; the automatic one stays as a bound (~32 MiB of WAL) for a
# hub that is never idle.
IDLE_CHECKPOINT_COMMITS: Final = 8
WAL_AUTOCHECKPOINT_PAGES: Final = 8000
# A write nobody waits for (an agent's `started` and report) is held for the
# next batch that goes anyway, or at most this long: the report rides with the
# next proposal, whose ack does wait. Measured at 300 actions/s: a fifth less
# writer CPU per action (docs/performance.md, "What the 04:08 session measured").
LAZY_FLUSH_S: Final = 0.010

# Errors that leave the transaction usable: the statement failed, not the database.
_OP_LOCAL: Final = (
    sqlite3.IntegrityError,
    sqlite3.ProgrammingError,
    sqlite3.DataError,
    sqlite3.NotSupportedError,
)


@dataclass
class WriteStats:
    """Counters for /metrics and for tests that need to see batching happen."""

    batches: int = 0
    operations: int = 0
    failed_batches: int = 0
    largest_batch: int = 0


@dataclass(slots=True)
class _Job:
    op: Callable[[Tx], object]
    future: asyncio.Future[object]


def _as_store_error(exc: BaseException, what: str) -> StoreError:
    if isinstance(exc, StoreError):
        return exc
    err = StoreError(f"{what}: {exc}")
    err.__cause__ = exc
    return err


def _fail(fut: asyncio.Future[object], exc: BaseException, what: str) -> None:
    if not fut.done():
        # A fresh exception per caller: one shared object would collect every
        # caller's traceback frames.
        err = StoreError(f"{what}: {exc}")
        err.__cause__ = exc
        fut.set_exception(err)


def _create_private(path: Path) -> None:
    """The database holds production commands: create it readable by us only
    (SQLite gives its -wal and -shm files the same mode)."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


class Writer:
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
        self._commits_since_checkpoint = 0
        self.stats = WriteStats()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="towerctl-writer")
        self._conn: sqlite3.Connection | None = None
        self._tx: Tx | None = None
        self._stale = False
        self._queue: asyncio.Queue[_Job | None] = asyncio.Queue()
        #: Lazy jobs, newer than everything in _queue (an eager enqueue
        #: releases them first), so appending them to any batch keeps order.
        self._held: list[_Job] = []
        self._held_timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._accepting = False
        self._stopped = False
        self.readonly_uri = ""

    @property
    def tx(self) -> Tx:
        if self._tx is None:
            raise StoreError("the store is closed")
        return self._tx

    @property
    def signing_key(self) -> Ed25519PrivateKey:
        """The audit/decision key, for signing in the caller's process."""
        return self.tx.key

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._open)
        except BaseException:
            await loop.run_in_executor(self._executor, self._close_conn)
            self._executor.shutdown(wait=True)
            raise
        self._accepting = True
        self._task = loop.create_task(self._run(), name="towerctl-store-writer")

    def _open(self) -> None:
        _create_private(self.path)
        self.readonly_uri = self.path.resolve().as_uri() + "?mode=ro"
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=self.busy_timeout_ms / 1000)
        self._conn = conn
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                raise StoreError(f"cannot put {self.path} in WAL mode (got {mode})")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
            migrate(conn)
            self._tx = self._open_chain(conn)
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

    def _close_conn(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def stop(self) -> None:
        """Commit what is queued, then stop. Later submits raise StoreError."""
        self._accepting = False
        if self._stopped:
            return
        self._stopped = True
        self._release_held()
        try:
            if self._task is not None:
                self._queue.put_nowait(None)
                await asyncio.shield(self._task)
        finally:
            await self._release()

    async def _release(self) -> None:
        """Close the connection once the queue is drained (the process writer
        ends its child instead)."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close_conn)
        self._executor.shutdown(wait=True)

    # --------------------------------------------------------------- writes

    def enqueue(self, op: Callable[[Tx], T], *, lazy: bool = False) -> asyncio.Future[T]:
        """Queue ``op`` now, without yielding; the future resolves after its COMMIT.

        Operations commit in the order they were queued, so a caller that
        queues several writes and awaits only the last (or none) still gets
        them recorded in order. ``lazy``: nobody is waiting for this one, so it
        starts no batch of its own; it joins the next one, within LAZY_FLUSH_S.
        """
        if not self._accepting or self._task is None or self._task.done():
            raise StoreError("the store is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[object] = loop.create_future()
        if lazy:
            self._held.append(_Job(op, fut))
            if self._held_timer is None:
                self._held_timer = loop.call_later(LAZY_FLUSH_S, self._release_held)
        else:
            if self._held:
                self._release_held()
            self._queue.put_nowait(_Job(op, fut))
        return cast("asyncio.Future[T]", fut)

    def _release_held(self) -> None:
        """Queue the held lazy jobs, in order, behind everything queued before them."""
        if self._held_timer is not None:
            self._held_timer.cancel()
            self._held_timer = None
        held, self._held = self._held, []
        for job in held:
            self._queue.put_nowait(job)

    def _take_held(self, batch: list[_Job]) -> None:
        """Lazy jobs ride with a batch that goes anyway (they are newer than all
        of it). A timer left running releases later ones sooner, never later."""
        room = MAX_BATCH - len(batch)
        batch += self._held[:room]
        del self._held[:room]

    async def submit(self, op: Callable[[Tx], T]) -> T:
        """Run ``op`` in the next batch; returns after its COMMIT."""
        return await self.enqueue(op)

    async def _next_batch(self) -> tuple[list[_Job], bool]:
        """Everything queued (up to MAX_BATCH) once something is; True when told to stop."""
        job = await self._queue.get()
        if job is None:
            return [], True
        batch = [job]
        while len(batch) < MAX_BATCH:
            try:
                nxt = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            if nxt is None:
                return batch, True
            batch.append(nxt)
        self._take_held(batch)
        return batch, False

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        batch: list[_Job] = []
        try:
            while True:
                batch, stop = await self._next_batch()
                if batch:
                    await self._commit(loop, batch)
                    batch = []
                if stop:
                    return
                if self._queue.empty() and self._checkpoint_due():  # no thread hop per batch
                    await loop.run_in_executor(self._executor, self.idle_checkpoint)
        finally:
            self._accepting = False
            for j in batch:
                _fail(j.future, RuntimeError("writer stopped"), "outcome unknown")
            self._fail_queued()

    def _fail_queued(self) -> None:
        self._release_held()
        while not self._queue.empty():
            left = self._queue.get_nowait()
            if left is not None:
                _fail(left.future, RuntimeError("writer stopped"), "not written")

    def _count(self, batch: list[_Job]) -> None:
        self.stats.batches += 1
        self.stats.operations += len(batch)
        self.stats.largest_batch = max(self.stats.largest_batch, len(batch))

    async def _commit(self, loop: asyncio.AbstractEventLoop, batch: list[_Job]) -> None:
        self._count(batch)
        try:
            results = await self._execute(loop, [j.op for j in batch])
        except Exception as exc:
            self._fail_batch(batch, exc)
            return
        self._settle(batch, results)

    def _fail_batch(self, batch: list[_Job], exc: BaseException) -> None:
        self.stats.failed_batches += 1
        for j in batch:
            _fail(j.future, exc, "not written")

    @staticmethod
    def _settle(batch: list[_Job], results: list[tuple[bool, object]]) -> None:
        for j, (ok, value) in zip(batch, results, strict=True):
            if j.future.done():
                continue  # the caller gave up waiting; the write stands
            if ok:
                j.future.set_result(value)
            else:
                j.future.set_exception(_as_store_error(cast(BaseException, value), "not written"))

    async def _execute(
        self, loop: asyncio.AbstractEventLoop, ops: list[Callable[[Tx], object]]
    ) -> list[tuple[bool, object]]:
        return await loop.run_in_executor(self._executor, self._apply, ops)

    def _checkpoint_due(self) -> bool:
        return self._commits_since_checkpoint >= IDLE_CHECKPOINT_COMMITS

    def idle_checkpoint(self) -> None:
        """Copy the WAL back into the database while nothing waits (see
        IDLE_CHECKPOINT_COMMITS). PASSIVE: never waits on readers, and a
        failure only leaves the WAL longer, so it is not an error."""
        if self._conn is None or not self._checkpoint_due():
            return
        self._commits_since_checkpoint = 0
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _apply(self, ops: list[Callable[[Tx], object]]) -> list[tuple[bool, object]]:
        """The batch, in the writer thread. Returns (ok, value-or-exception) per op.

        Optimistic first: the whole batch in one transaction with no per-op
        SAVEPOINT (two statements fewer per op). Only if an operation fails is
        the batch rolled back and run again with a SAVEPOINT around each op, so
        that one bad op never sinks the others. Ops are plain functions of the
        transaction, so running one twice is safe.
        """
        conn, tx = self._conn, self._tx
        if conn is None or tx is None:
            raise StoreError("the store is closed")
        self._commits_since_checkpoint += 1
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
            self._stale = False
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
            self._stale = True
            tx.drop_deferred()
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            raise
        return results

    async def run_on_connection(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """For tests and maintenance only: run ``fn`` on the writer connection,
        between batches (e.g. to simulate a full disk with max_page_count)."""
        conn = self._conn
        if conn is None:
            raise StoreError("the store is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, conn)
