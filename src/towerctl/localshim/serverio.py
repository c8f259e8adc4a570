"""What the local shim daemon accepts and how it answers: peer checks,
bounded request fields, reply lines.

Security: the socket file is 0600 in a 0700 directory, and every connection's
peer uid is checked with ``SO_PEERCRED`` (``LOCAL_PEERCRED`` on macOS); a peer
of another uid, or one whose uid cannot be learnt, is refused. Requests are
bounded (:data:`~towerctl.localshim.shimclient.wire.MAX_LINE` bytes per line,
a read deadline, a connection limit); a malformed one gets an error reply and
the daemon goes on serving.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import stat
import struct
import sys
from collections.abc import Callable
from typing import Any, Final

from towerctl.localshim.shimclient.wire import MAX_LINE

log = logging.getLogger("towerctl.shimd")

#: A client must send its request line within this many seconds of connecting.
READ_TIMEOUT_S: Final = 10.0
MAX_CONNECTIONS: Final = 256


class BadRequest(ValueError):
    """A request the daemon will not act on: answered with an error reply."""


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end of a unix socket, or None if unknown."""
    so_peercred = getattr(socket, "SO_PEERCRED", None)
    if so_peercred is not None:  # Linux: struct ucred {pid_t pid; uid_t uid; gid_t gid;}
        raw = sock.getsockopt(socket.SOL_SOCKET, so_peercred, struct.calcsize("iII"))
        _pid, uid, _gid = struct.unpack("iII", raw)
        return int(uid)
    if sys.platform == "darwin":  # SOL_LOCAL=0, LOCAL_PEERCRED=1: struct xucred {u_int version; uid_t uid; …}
        raw = sock.getsockopt(0, 1, 76)
        _version, uid = struct.unpack_from("II", raw)
        return int(uid)
    return None


def peer_allowed(uid: int | None, own: int) -> bool:
    """Only our own uid may use the daemon; an unknown peer is refused (fail closed)."""
    return uid is not None and uid == own


def check_dir(path: str) -> None:
    """The socket's directory must be ours, a real directory, mode 0700."""
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise SystemExit(
            f"towerctl shimd: {path} must be a directory owned by uid {os.getuid()} with mode 0700"
        )


def text_field(req: dict[str, Any], name: str, *, limit: int = 4096, default: str | None = None) -> str:
    value = req.get(name, default)
    if not isinstance(value, str):
        raise BadRequest(f"{name!r} must be a string")
    if len(value) > limit:
        raise BadRequest(f"{name!r} is longer than {limit} characters")
    return value


def line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode("utf-8") + b"\n"


async def first_line(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    uid_of: Callable[[socket.socket], int | None],
    active: int,
) -> bytes | None:
    """The request line of a new connection, or None once it has been refused
    (another uid, too many connections, too long, too late) or was empty."""
    sock = writer.get_extra_info("socket")
    uid = uid_of(sock) if sock is not None else None
    if not peer_allowed(uid, os.getuid()):
        # Refused before anything is read: what a foreign client sent is never looked at.
        log.warning("refused a connection from uid %s", uid)
        writer.write(line({"type": "error", "message": f"refused: peer uid {uid} is not {os.getuid()}"}))
        return None
    if active > MAX_CONNECTIONS:
        writer.write(line({"type": "error", "message": "too many connections"}))
        return None
    try:
        raw = await asyncio.wait_for(reader.readline(), READ_TIMEOUT_S)
    except (ValueError, asyncio.LimitOverrunError):
        writer.write(line({"type": "error", "message": f"request larger than {MAX_LINE} bytes"}))
        return None
    except TimeoutError:
        writer.write(line({"type": "error", "message": f"no request within {READ_TIMEOUT_S:g}s"}))
        return None
    return raw or None
