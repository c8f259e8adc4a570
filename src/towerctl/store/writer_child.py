"""The writer process's side of the socket pair: read batches, apply, answer.

Why its own module: this is everything the forked child runs, and nothing
it must not (no event loop, no futures): ``sqlite3``, ``hashlib``, the
signing key and ``pickle`` over a blocking socket. The parent's side and the
protocol's rules are in :mod:`towerctl.store.writer_proc`.

Messages each way are a 4-byte length and a pickle of ``(kind, payload)``:
from the parent ``("batch", [op, ...])`` or ``("conn", fn)``; from the child
``("ready", readonly_uri)`` or ``("error", exc)`` once, then one
``("ok", results)`` or ``("fail", exc)`` per message, in order, and, unasked,
``(CHECKPOINTED, None)`` each time it has copied the WAL back while idle.
"""

from __future__ import annotations

import pickle
import select
import signal
import socket
import struct
from collections.abc import Callable
from typing import Any, Final

from towerctl.store.applier import Applier
from towerctl.store.models import StoreError
from towerctl.store.op_wire import from_wire
from towerctl.store.writer import MAX_BATCH

HEADER: Final = struct.Struct("!I")
#: The one message the child sends unasked (no batch waits on it): it copied the WAL back.
CHECKPOINTED: Final = "checkpointed"


def _portable(exc: BaseException) -> StoreError:
    """What crosses the pipe: a StoreError (subclasses survive pickling)."""
    if isinstance(exc, StoreError):
        try:
            pickle.dumps(exc)
        except Exception:
            return StoreError(str(exc))
        return exc
    return StoreError(f"{type(exc).__name__}: {exc}")


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
    sock.sendall(HEADER.pack(len(data)) + data)


def _read_message(sock: socket.socket) -> tuple[str, Any] | None:
    """One (kind, payload) from the parent; None at EOF."""
    header = _recv_exact(sock, HEADER.size)
    if header is None:
        return None
    body = _recv_exact(sock, HEADER.unpack(header)[0])
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


def _apply_batches(applier: Applier, batches: list[list[object]]) -> list[tuple[str, object]]:
    """One transaction for all of ``batches`` (operations as ``op_wire`` sent
    them); one reply per batch, in order."""
    try:
        results = applier.apply([from_wire(op) for ops in batches for op in ops])
    except BaseException as exc:
        return [("fail", _portable(exc))] * len(batches)
    replies: list[tuple[str, object]] = []
    start = 0
    for ops in batches:
        part = results[start : start + len(ops)]
        start += len(ops)
        replies.append(("ok", [(ok, value if ok else _portable(value)) for ok, value in part]))  # type: ignore[arg-type]
    return replies


def _conn_call(applier: Applier, fn: Callable[[Any], object]) -> tuple[str, object]:
    """Maintenance and fault injection on the writer connection."""
    try:
        assert applier.conn is not None
        return ("ok", fn(applier.conn))
    except BaseException as exc:
        return ("fail", _portable(exc))


def run_child(sock: socket.socket, applier: Applier) -> None:
    """The forked child's whole life: open, then batches until EOF."""
    # The parent's event loop installed signal handlers and a wakeup fd it
    # shares with us: detach from both. Ctrl-C reaches the whole process
    # group, and so does SIGTERM from systemd's stop (KillMode=control-group)
    # or `timeout`: dying then would leave the parent's clean stop (its
    # hub.stopped record and final signed checkpoint) without a writer. The
    # parent decides when we stop, by closing the socket; its death closes
    # it too, and SIGKILL still ends us.
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        applier.open()
    except BaseException as exc:
        _send(sock, ("error", _portable(exc)))
        return
    _send(sock, ("ready", applier.readonly_uri))
    try:
        while True:
            group, eof = _read_group(sock)
            batches = [payload for kind, payload in group if kind == "batch"]
            if batches:
                for reply in _apply_batches(applier, batches):
                    _send(sock, reply)
            if group and group[-1][0] != "batch":
                _send(sock, _conn_call(applier, group[-1][1]))
            if eof:
                return
            if not _pending(sock) and applier.idle_checkpoint():
                _send(sock, (CHECKPOINTED, None))
    finally:
        applier.close()
