"""The group-commit writer in a process of its own, for the hub.

Why: the hub's event loop and the writer thread share one interpreter lock.
Profiled under a 100-agent load, the writer thread spent most of its time
waiting for the lock, not in SQLite, and the hub used well under the two
cores it had. In its own process the writer (SQLite statements, the audit
chain's hashing and signing) runs beside the event loop instead of taking
turns with it.

Same batches, same semantics as :class:`Writer` (the child runs the same
:class:`~towerctl.store.applier.Applier`, see :mod:`towerctl.store.writer_child`):
the parent queues operations and sends each batch down a socket pair; the
child applies it as one transaction and answers with one result per
operation only after COMMIT. Operations must therefore be picklable
(``functools.partial`` over the functions in :mod:`towerctl.store.ops`,
never a lambda); the two of every action cross as plain tuples
(:mod:`towerctl.store.op_wire`).

Failure is closed: if the child dies, every caller waiting on it and every
later write gets a StoreError, and the hub refuses everything (it never
approves what it could not record). If the parent dies, the child sees the
socket close, finishes the batch it is in and exits.

The child is forked, not spawned: spawning a fresh interpreter costs ~0.5 s of
imports, and the child runs nothing but ``sqlite3``, ``hashlib``, the signing
key and ``pickle``, never the parent's event loop or its threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import socket
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from towerctl.audit.signing import load_or_create_key
from towerctl.store.applier import Applier
from towerctl.store.models import StoreError
from towerctl.store.op_wire import to_wire
from towerctl.store.tx import Tx
from towerctl.store.writer import Writer, _fail, _Job
from towerctl.store.writer_child import CHECKPOINTED, HEADER, run_child

T = TypeVar("T")

#: How long stop() waits for the child to finish its batch and exit before killing it.
STOP_TIMEOUT_S: Final = 30.0
#: Batches sent to the child and not yet answered. The child commits every
#: batch waiting in its socket in one transaction, so a write waits for the
#: transaction under way and its own. With 2 it also waited for the one sent
#: before it: measured at 1,000 actions/s, enqueue -> committed p50 11 -> 8 ms.
MAX_IN_FLIGHT: Final = 8


class _Replies(asyncio.Protocol):
    """The parent's end of the socket pair: each reply handled as it arrives.

    Why not a ``StreamReader`` and a task reading it: that costs a task step
    (a loop iteration) per batch between the child's answer and the callers'
    futures, on every action's path, and a copy of every reply through the
    reader's buffer. Here the replies are cut from the bytes received and
    handed over in the same callback."""

    def __init__(
        self, on_message: Callable[[tuple[str, Any]], None], on_lost: Callable[[BaseException], None]
    ):
        self._on_message = on_message
        self._on_lost = on_lost
        self._buf = bytearray()

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos, end = 0, len(buf)
        while end - pos >= HEADER.size:
            (size,) = HEADER.unpack_from(buf, pos)
            if end - pos - HEADER.size < size:
                break
            start = pos + HEADER.size
            message = pickle.loads(buf[start : start + size])
            pos = start + size
            self._on_message(message)
        if pos:
            del buf[:pos]

    def eof_received(self) -> bool:
        return False  # close our end too

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_lost(exc or ConnectionResetError("the writer process closed its socket"))


class ProcessWriter(Writer):
    """A :class:`Writer` whose transactions run in a forked child process."""

    def __init__(self, applier: Applier) -> None:
        super().__init__(applier)
        self._pid = 0
        self._transport: asyncio.Transport | None = None
        self._key: Ed25519PrivateKey | None = None
        self._broken: StoreError | None = None
        #: Sent to the child and not yet answered, oldest first (it answers in order).
        self._inflight: deque[_InFlight] = deque()
        #: Set while fewer than MAX_IN_FLIGHT batches are in the child.
        self._room = asyncio.Event()
        self._room.set()
        self._ready: asyncio.Future[tuple[str, Any]] | None = None

    @property
    def signing_key(self) -> Ed25519PrivateKey:
        if self._key is None:
            raise StoreError("the store is closed")
        return self._key

    @property
    def pid(self) -> int:
        return self._pid

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, which never returns
            code = 0
            try:
                ours.close()
                run_child(theirs, self.applier)
            except BaseException:
                code = 70
            finally:
                os._exit(code)
        theirs.close()
        self._pid = pid
        self._ready = loop.create_future()
        try:
            transport, _ = await loop.create_unix_connection(
                lambda: _Replies(self._on_message, self._on_lost), sock=ours
            )
            self._transport = transport
            kind, value = await self._ready
            if kind != "ready":
                raise value if isinstance(value, StoreError) else StoreError(str(value))
            self.applier.readonly_uri = str(value)  # opened in the child, not here
            # The child created the key file if needed; sign decisions here.
            self._key = load_or_create_key(self.applier.key_path)
        except BaseException:
            await self._reap(kill=True)
            raise
        self._accept(loop)

    async def _release(self) -> None:
        await self._reap(kill=False)
        self._executor.shutdown(wait=False)

    async def _reap(self, *, kill: bool) -> None:
        if self._transport is not None:
            self._transport.close()  # EOF: the child closes its connection and exits
            self._transport = None
        if not self._pid:
            return
        pid, self._pid = self._pid, 0
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.run_in_executor(None, os.waitpid, pid, 0), STOP_TIMEOUT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            await loop.run_in_executor(None, os.waitpid, pid, 0)
        except ChildProcessError:
            pass

    # Batches are sent while the child applies earlier ones (it merges those
    # that wait): without this the two processes take turns and each idles
    # half the time.

    async def _run(self) -> None:
        batch: list[_Job] = []
        try:
            while True:
                batch, stop = await self._next_batch()
                if batch:
                    conn_calls = [j for j in batch if isinstance(j.op, _ConnCall)]
                    ops = [j for j in batch if not isinstance(j.op, _ConnCall)]
                    if ops:
                        self._count(ops)
                        await self._send("batch", [to_wire(j.op) for j in ops], ops)
                    for j in conn_calls:
                        await self._send("conn", cast(_ConnCall, j.op).fn, [j])
                    batch = []
                if stop:
                    return
        finally:
            self._accepting = False
            for j in batch:
                _fail(j.future, RuntimeError("writer stopped"), "outcome unknown")
            await self._drained()
            self._fail_queued()

    async def _send(self, kind: str, payload: object, jobs: list[_Job]) -> None:
        while not self._room.is_set() and self._broken is None:
            await self._room.wait()
        if self._broken is not None or self._transport is None:
            self._fail_batch(jobs, self._broken or StoreError("the store is closed"))
            return
        try:
            data = pickle.dumps((kind, payload), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # a programming error: an op that cannot cross the pipe
            self._fail_batch(jobs, StoreError(f"cannot send the write to the writer process: {exc}"))
            return
        self._inflight.append(_InFlight(kind, jobs))
        if len(self._inflight) >= MAX_IN_FLIGHT:
            self._room.clear()
        self._transport.write(HEADER.pack(len(data)) + data)

    async def _drained(self) -> None:
        """Until every batch sent has its answer (or the child is gone)."""
        while self._inflight and self._broken is None:
            self._room.clear()
            await self._room.wait()

    def _on_message(self, message: tuple[str, Any]) -> None:
        answer, value = message
        if self._ready is not None and not self._ready.done():
            self._ready.set_result((str(answer), value))
            return
        if answer == CHECKPOINTED:  # not a reply: no batch waits on it
            self._checkpointed()
            return
        if not self._inflight:
            self._on_lost(StoreError(f"unexpected message from the writer process: {answer!r}"))
            return
        entry = self._inflight.popleft()
        self._room.set()
        if answer != "ok":
            err = value if isinstance(value, BaseException) else StoreError(str(value))
            self._fail_batch(entry.jobs, err)
        elif entry.kind == "conn":
            fut = entry.jobs[0].future
            if not fut.done():
                fut.set_result(value)
        else:
            assert isinstance(value, list)
            self._settle(entry.jobs, value)

    def _on_lost(self, exc: BaseException) -> None:
        broken = self._gone(exc)
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(broken)
        while self._inflight:
            self._fail_batch(self._inflight.popleft().jobs, broken)
        self._room.set()

    def _gone(self, exc: BaseException) -> StoreError:
        if self._broken is None:
            self._broken = StoreError("the store's writer process is gone; refusing all writes")
            self._broken.__cause__ = exc
            self._accepting = False
        return self._broken

    async def run_on_connection(self, fn: Callable[[Any], T]) -> T:
        """``fn`` must be picklable (a module-level function): it runs in the
        child, between batches."""
        return await self.enqueue(cast(Callable[[Tx], T], _ConnCall(fn)))


@dataclass(frozen=True, slots=True)
class _ConnCall:
    """Not an operation: ``fn(connection)`` run on its own between batches."""

    fn: Callable[[Any], object]

    def __call__(self, tx: Tx) -> object:  # pragma: no cover - never applied as an op
        raise StoreError("a connection call cannot run inside a batch")


@dataclass(frozen=True, slots=True)
class _InFlight:
    kind: str
    jobs: list[_Job]
