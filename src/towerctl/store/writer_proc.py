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
import signal
import socket
import struct
import sys
from collections.abc import Callable
from typing import Any, Final, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from towerctl.audit.signing import load_or_create_key
from towerctl.store.models import StoreError
from towerctl.store.tx import Tx
from towerctl.store.writer import Writer

T = TypeVar("T")

_HEADER: Final = struct.Struct("!I")
#: How long stop() waits for the child to finish its batch and exit before killing it.
STOP_TIMEOUT_S: Final = 30.0


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


def _child(sock: socket.socket, writer: Writer) -> None:
    """The forked child's whole life: open, then one batch per message until EOF."""
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
            header = _recv_exact(sock, _HEADER.size)
            if header is None:
                return
            body = _recv_exact(sock, _HEADER.unpack(header)[0])
            if body is None:
                return
            kind, payload = pickle.loads(body)
            try:
                if kind == "batch":
                    results = writer._apply(payload)
                    reply: tuple[str, object] = (
                        "ok",
                        [(ok, value if ok else _portable(value)) for ok, value in results],  # type: ignore[arg-type]
                    )
                else:  # "conn": maintenance and fault injection on the writer connection
                    assert writer._conn is not None
                    reply = ("ok", payload(writer._conn))
            except BaseException as exc:
                reply = ("fail", _portable(exc))
            _send(sock, reply)
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
        self._io = asyncio.Lock()
        self._key: Ed25519PrivateKey | None = None

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

    async def stop(self) -> None:
        self._accepting = False
        if self._stopped:
            return
        self._stopped = True
        try:
            if self._task is not None:
                self._queue.put_nowait(None)
                await asyncio.shield(self._task)
        finally:
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
            self._accepting = False
            raise StoreError("the store's writer process is gone; refusing all writes") from exc
        kind, value = pickle.loads(body)
        return str(kind), value

    async def _call(self, kind: str, payload: object) -> object:
        async with self._io:
            if self._tx_stream is None or self._tx_stream.is_closing():
                raise StoreError("the store is closed")
            data = pickle.dumps((kind, payload), protocol=pickle.HIGHEST_PROTOCOL)
            self._tx_stream.write(_HEADER.pack(len(data)) + data)
            try:
                await self._tx_stream.drain()
            except ConnectionError as exc:
                self._accepting = False
                raise StoreError("the store's writer process is gone; refusing all writes") from exc
            answer, value = await self._read()
        if answer != "ok":
            raise value if isinstance(value, StoreError) else StoreError(str(value))
        return value

    async def _execute(
        self, loop: asyncio.AbstractEventLoop, ops: list[Callable[[Tx], object]]
    ) -> list[tuple[bool, object]]:
        result = await self._call("batch", ops)
        assert isinstance(result, list)
        return result

    async def run_on_connection(self, fn: Callable[[Any], T]) -> T:
        """``fn`` must be picklable (a module-level function): it runs in the child."""
        return await self._call("conn", fn)  # type: ignore[return-value]
