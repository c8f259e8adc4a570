"""Group commit: callers enqueue, one task hands each batch to the applier.

Measured on this kind of machine, a commit per write tops out near 5k rows/s,
and every aiosqlite call is a thread hop that stalls when the event loop is
busy. So callers only enqueue an operation (a plain function over a
transaction) and await a future; one task drains the queue and hands the
whole batch to a dedicated thread in a single hop, where the
:class:`~towerctl.store.applier.Applier` runs it as one transaction. A failing
operation fails only its caller; a failing BEGIN or COMMIT fails every caller
in the batch. Futures are resolved only after COMMIT returns.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final, TypeVar, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from towerctl.store.applier import Applier
from towerctl.store.models import StoreError
from towerctl.store.tx import Tx

T = TypeVar("T")

# Bounds how long one transaction holds the write lock (~0.15 s at this size).
MAX_BATCH: Final = 512
# A write nobody waits for (an agent's `started` and report) is held for the
# next batch that goes anyway, or at most this long: the report rides with the
# next proposal, whose ack does wait. Measured at 300 actions/s: a fifth less
# writer CPU per action (docs/performance.md, "What the 04:08 session measured").
LAZY_FLUSH_S: Final = 0.010


@dataclass
class WriteStats:
    """Counters for /metrics and for tests that need to see batching happen."""

    batches: int = 0
    operations: int = 0
    failed_batches: int = 0
    largest_batch: int = 0
    #: WAL copied back into the database between batches (Applier.idle_checkpoint).
    idle_checkpoints: int = 0


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


class Writer:
    """Queues writes and commits them in batches on a thread of its own."""

    #: The loop the writer was started on, whose futures enqueue hands out. Kept
    #: rather than looked up per write: alternated ``bench/serve_path.py`` runs
    #: put the serve process ~2 us per action lower with it (7 pairs of 8), more
    #: than the lookup's own ~0.15 us, and py-spy's samples on that line left.
    _loop: asyncio.AbstractEventLoop

    def __init__(self, applier: Applier) -> None:
        #: The synchronous half, not yet open: run on the writer thread (or in
        #: the writer process, see writer_proc), never on the event loop.
        self.applier = applier
        self.stats = WriteStats()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="towerctl-writer")
        self._queue: asyncio.Queue[_Job | None] = asyncio.Queue()
        #: Lazy jobs, newer than everything in _queue (an eager enqueue
        #: releases them first), so appending them to any batch keeps order.
        self._held: list[_Job] = []
        self._held_timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._accepting = False
        self._stopped = False
        #: Set (and replaced) at each idle checkpoint: see idle_checkpoints_reach.
        self._checkpoint_pulse = asyncio.Event()

    @property
    def readonly_uri(self) -> str:
        """For the store's reader connection, once started."""
        return self.applier.readonly_uri

    @property
    def tx(self) -> Tx:
        if self.applier.tx is None:
            raise StoreError("the store is closed")
        return self.applier.tx

    @property
    def signing_key(self) -> Ed25519PrivateKey:
        """The audit/decision key, for signing in the caller's process."""
        return self.tx.key

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self.applier.open)
        except BaseException:
            await loop.run_in_executor(self._executor, self.applier.close)
            self._executor.shutdown(wait=True)
            raise
        self._accept(loop)

    def _accept(self, loop: asyncio.AbstractEventLoop) -> None:
        """Opened: take writes on ``loop`` from now on (both writers' start ends here)."""
        self._accepting = True
        self._loop = loop
        self._task = loop.create_task(self._run(), name="towerctl-store-writer")

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
        await asyncio.get_running_loop().run_in_executor(self._executor, self.applier.close)
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
        loop = self._loop
        fut: asyncio.Future[object] = loop.create_future()
        if lazy:
            self._held.append(_Job(op, fut))
            if self._held_timer is None:
                self._held_timer = loop.call_later(LAZY_FLUSH_S, self._held_timer_fired)
        else:
            if self._held:
                self._queue_held()
            self._queue.put_nowait(_Job(op, fut))
        return cast("asyncio.Future[T]", fut)

    def _held_timer_fired(self) -> None:
        self._held_timer = None
        self._queue_held()

    def _queue_held(self) -> None:
        """Queue the held lazy jobs, in order, behind everything queued before them.

        The timer is left running when an eager write takes them: under a fleet
        every report is held and the next proposal takes it at once, and starting
        and cancelling a timer for each was ~2 us of the event loop per action.
        A timer armed for earlier jobs only queues later ones sooner than
        LAZY_FLUSH_S, never later."""
        held, self._held = self._held, []
        for job in held:
            self._queue.put_nowait(job)

    def _release_held(self) -> None:
        """Queue the held jobs and stop the timer (when stopping or failing)."""
        if self._held_timer is not None:
            self._held_timer.cancel()
            self._held_timer = None
        self._queue_held()

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
                if (
                    self._queue.empty()
                    and self.applier.checkpoint_due()  # no thread hop per batch
                    and await loop.run_in_executor(self._executor, self.applier.idle_checkpoint)
                ):
                    self._checkpointed()
        finally:
            self._accepting = False
            for j in batch:
                _fail(j.future, RuntimeError("writer stopped"), "outcome unknown")
            self._fail_queued()

    def _checkpointed(self) -> None:
        self.stats.idle_checkpoints += 1
        pulse, self._checkpoint_pulse = self._checkpoint_pulse, asyncio.Event()
        pulse.set()

    async def idle_checkpoints_reach(self, count: int) -> None:
        """Until ``count`` idle checkpoints have run: when one runs depends on
        the writer finding its queue empty, so a test waits on this, not on time."""
        while self.stats.idle_checkpoints < count:
            await self._checkpoint_pulse.wait()

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
        return await loop.run_in_executor(self._executor, self.applier.apply, ops)

    async def run_on_connection(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """For tests and maintenance only: run ``fn`` on the writer connection,
        between batches (e.g. to simulate a full disk with max_page_count)."""
        conn = self.applier.conn
        if conn is None:
            raise StoreError("the store is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, conn)
