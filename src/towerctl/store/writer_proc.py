"""The group-commit writer in a process of its own, for the hub.

Why: the hub's event loop and the writer thread share one interpreter lock.
Profiled under a 100-agent load, the writer thread spent most of its time
waiting for the lock, not in SQLite, and the hub used well under the two
cores it had. In its own process the writer (SQLite statements, the audit
chain's hashing and signing) runs beside the event loop instead of taking
turns with it.

Same batches, same semantics as :class:`Writer` (whose synchronous ``_open``
and ``_apply`` the child runs unchanged): the parent queues operations and
sends each batch down a socket pair; the child applies it as one transaction
and answers with one result per operation only after COMMIT. Operations must
therefore be picklable (``functools.partial`` over the functions in
:mod:`towerctl.store.ops`, never a lambda).

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
import select
import signal
import socket
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from towerctl.audit.signing import load_or_create_key
from towerctl.store.models import StoreError
from towerctl.store.tx import Tx
from towerctl.store.writer import MAX_BATCH, Writer, _fail, _Job

T = TypeVar("T")

_HEADER: Final = struct.Struct("!I")
#: How long stop() waits for the child to finish its batch and exit before killing it.
STOP_TIMEOUT_S: Final = 30.0
#: Batches sent to the child and not yet answered.
MAX_IN_FLIGHT: Final = 2


def _portable(exc: BaseException) -> StoreError:
    """What crosses the pipe: a StoreError (subclasses survive pickling)."""
    if isinstance(exc, StoreError):
        try:
            pickle.dumps(exc)
        except Exception:
            return StoreError(str(exc))
        return exc
    return StoreError(f"{type(exc).__name__}: {exc}")


# ------------------------------------------------------------------ child


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _send(sock: socket.socket, message: tuple[str, object]) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(_HEADER.pack(len(data)) + data)


def _read_message(sock: socket.socket) -> tuple[str, Any] | None:
    """One (kind, payload) from the parent; None at EOF."""
    header = _recv_exact(sock, _HEADER.size)
    if header is None:
        return None
    body = _recv_exact(sock, _HEADER.unpack(header)[0])
    if body is None:
        return None
    kind, payload = pickle.loads(body)
    return str(kind), payload


def _pending(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


def _read_group(sock: socket.socket) -> tuple[list[tuple[str, Any]], bool]:
    """The next message and every batch already waiting behind it (up to
    MAX_BATCH operations): the child commits them together, so batches that
    queued up while it was busy share one BEGIN, one COMMIT and one fsync
    instead of paying for each. A connection call ends the group. True when
    the parent has closed the socket."""
    first = _read_message(sock)
    if first is None:
        return [], True
    group = [first]
    ops = len(first[1]) if first[0] == "batch" else 0
    while group[-1][0] == "batch" and ops < MAX_BATCH and _pending(sock):
        nxt = _read_message(sock)
        if nxt is None:
            return group, True
        group.append(nxt)
        if nxt[0] == "batch":
            ops += len(nxt[1])
    return group, False


def _apply_batches(writer: Writer, batches: list[list[Callable[[Tx], object]]]) -> list[tuple[str, object]]:
    """One transaction for all of ``batches``; one reply per batch, in order."""
    try:
        results = writer._apply([op for ops in batches for op in ops])
    except BaseException as exc:
        return [("fail", _portable(exc))] * len(batches)
    replies: list[tuple[str, object]] = []
    start = 0
    for ops in batches:
        part = results[start : start + len(ops)]
        start += len(ops)
        replies.append(("ok", [(ok, value if ok else _portable(value)) for ok, value in part]))  # type: ignore[arg-type]
    return replies


def _conn_call(writer: Writer, fn: Callable[[Any], object]) -> tuple[str, object]:
    """Maintenance and fault injection on the writer connection."""
    try:
        assert writer._conn is not None
        return ("ok", fn(writer._conn))
    except BaseException as exc:
        return ("fail", _portable(exc))


def _child(sock: socket.socket, writer: Writer) -> None:
    """The forked child's whole life: open, then batches until EOF."""
    # The parent's event loop installed signal handlers and a wakeup fd it
    # shares with us: detach from both. Ctrl-C reaches the whole process
    # group; the parent decides when we stop (by closing the socket).
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        writer._open()
    except BaseException as exc:
        _send(sock, ("error", _portable(exc)))
        return
    _send(sock, ("ready", writer.readonly_uri))
    try:
        while True:
            group, eof = _read_group(sock)
            batches = [payload for kind, payload in group if kind == "batch"]
            if batches:
                for reply in _apply_batches(writer, batches):
                    _send(sock, reply)
            if group and group[-1][0] != "batch":
                _send(sock, _conn_call(writer, group[-1][1]))
            if eof:
                return
            if not _pending(sock):
                writer.idle_checkpoint()
    finally:
        writer._close_conn()


# ----------------------------------------------------------------- parent


class ProcessWriter(Writer):
    """A :class:`Writer` whose transactions run in a forked child process."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pid = 0
        self._rx: asyncio.StreamReader | None = None
        self._tx_stream: asyncio.StreamWriter | None = None
        self._key: Ed25519PrivateKey | None = None
        self._broken: StoreError | None = None

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
                _child(theirs, self)
            except BaseException:
                code = 70
            finally:
                os._exit(code)
        theirs.close()
        self._pid = pid
        try:
            self._rx, self._tx_stream = await asyncio.open_unix_connection(sock=ours)
            kind, value = await self._read()
            if kind != "ready":
                raise value if isinstance(value, StoreError) else StoreError(str(value))
            self.readonly_uri = str(value)
            # The child created the key file if needed; sign decisions here.
            self._key = load_or_create_key(self.key_path)
        except BaseException:
            await self._reap(kill=True)
            raise
        self._accepting = True
        self._task = loop.create_task(self._run(), name="towerctl-store-writer")

    async def _release(self) -> None:
        await self._reap(kill=False)
        self._executor.shutdown(wait=False)

    async def _reap(self, *, kill: bool) -> None:
        if self._tx_stream is not None:
            self._tx_stream.close()  # EOF: the child closes its connection and exits
            self._tx_stream = None
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

    async def _read(self) -> tuple[str, object]:
        assert self._rx is not None
        try:
            header = await self._rx.readexactly(_HEADER.size)
            body = await self._rx.readexactly(_HEADER.unpack(header)[0])
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise self._gone(exc) from exc
        kind, value = pickle.loads(body)
        return str(kind), value

    # One batch is applied in the child while the next is gathered and sent:
    # without this the two processes take turns and each idles half the time.

    async def _run(self) -> None:
        inflight: asyncio.Queue[_InFlight | None] = asyncio.Queue(maxsize=MAX_IN_FLIGHT - 1)
        receiver = asyncio.create_task(self._receive(inflight), name="towerctl-store-writer-replies")
        batch: list[_Job] = []
        try:
            while True:
                batch, stop = await self._next_batch()
                if batch:
                    conn_calls = [j for j in batch if isinstance(j.op, _ConnCall)]
                    ops = [j for j in batch if not isinstance(j.op, _ConnCall)]
                    if ops:
                        self._count(ops)
                        await self._send("batch", [j.op for j in ops], ops, inflight)
                    for j in conn_calls:
                        await self._send("conn", cast(_ConnCall, j.op).fn, [j], inflight)
                    batch = []
                if stop:
                    return
        finally:
            self._accepting = False
            for j in batch:
                _fail(j.future, RuntimeError("writer stopped"), "outcome unknown")
            await inflight.put(None)
            await receiver
            self._fail_queued()

    async def _send(
        self, kind: str, payload: object, jobs: list[_Job], inflight: asyncio.Queue[_InFlight | None]
    ) -> None:
        if self._broken is not None or self._tx_stream is None:
            self._fail_batch(jobs, self._broken or StoreError("the store is closed"))
            return
        try:
            data = pickle.dumps((kind, payload), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # a programming error: an op that cannot cross the pipe
            self._fail_batch(jobs, StoreError(f"cannot send the write to the writer process: {exc}"))
            return
        self._tx_stream.write(_HEADER.pack(len(data)) + data)
        await inflight.put(_InFlight(kind, jobs))
        try:
            await self._tx_stream.drain()
        except ConnectionError as exc:
            self._gone(exc)

    def _gone(self, exc: BaseException) -> StoreError:
        if self._broken is None:
            self._broken = StoreError("the store's writer process is gone; refusing all writes")
            self._broken.__cause__ = exc
            self._accepting = False
        return self._broken

    async def _receive(self, inflight: asyncio.Queue[_InFlight | None]) -> None:
        while True:
            entry = await inflight.get()
            if entry is None:
                return
            answer, value = "fail", None
            if self._broken is None:
                try:
                    answer, value = await self._read()
                except StoreError as exc:
                    self._gone(exc)
            if self._broken is not None:
                self._fail_batch(entry.jobs, self._broken)
                continue
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
