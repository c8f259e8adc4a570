"""The wire protocol between the fast clients and the local shim daemon.

One JSON object per line, each way, UTF-8, at most :data:`MAX_LINE` bytes:

- ``admit`` (gates, ``towerctl exec``): the client sends ``{"v": 1, "op":
  "admit", …}``; the daemon answers with any number of ``{"type": "note"}``
  lines (shown on stderr) and then one ``{"type": "verdict", "verdict":
  "allow"|"deny", "message", "action_id"}``. In wait mode the client later
  sends ``{"op": "report", "exit_code": N}`` and gets ``{"type": "reported",
  "ok"}``; meanwhile the daemon may send ``{"type": "kill"}`` (an operator
  killed the session: terminate the tool).
- ``hook`` (Claude Code / Codex): the request line, then ``size`` raw bytes of
  hook JSON; one ``{"type": "hook", "code", "stdout", "stderr"}`` back (see
  :mod:`towerctl.localshim.hookserve`).
- ``ping``, ``status``, ``stop``: control, one reply each.

Malformed input gets ``{"type": "error", "message"}``.

JSON goes through the C accelerator directly: the ``json`` package imports
``re`` and ``enum``, which cost more than everything else a client does.
"""

from __future__ import annotations

import _json
import _socket
import sys

PROTOCOL = 1
MAX_LINE = 256 * 1024


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not allowed")


class _ScanContext:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_no_constant)
    memo: dict[str, str] = {}


_scan = _json.make_scanner(_ScanContext())  # type: ignore[arg-type]


def loads(text: str) -> object:
    text = text.strip()
    try:
        obj, end = _scan(text, 0)
    except StopIteration:
        raise ValueError("not JSON") from None
    if end != len(text):
        raise ValueError("extra data after the JSON value")
    return obj


def dumps(obj: object) -> str:
    """Compact JSON for str, int, float, bool, None, lists and str-keyed dicts."""
    if isinstance(obj, str):
        return _json.encode_basestring_ascii(obj)
    if obj is None:
        return "null"
    if obj is True:
        return "true"
    if obj is False:
        return "false"
    if isinstance(obj, int):
        return int.__repr__(obj)
    if isinstance(obj, float):
        if obj != obj or obj in (float("inf"), float("-inf")):
            raise ValueError("non-finite float")
        return float.__repr__(obj)
    if isinstance(obj, list | tuple):
        return "[" + ",".join(dumps(v) for v in obj) + "]"
    if isinstance(obj, dict):
        parts = []
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError("keys must be strings")
            parts.append(_json.encode_basestring_ascii(k) + ":" + dumps(v))
        return "{" + ",".join(parts) + "}"
    raise TypeError(f"cannot encode {type(obj).__name__}")


class Refused(Exception):
    """Fail closed with this reason."""


def say(prefix: str, message: str) -> None:
    sys.stderr.write(f"{prefix}: {message}\n")
    sys.stderr.flush()


class Conn:
    """One line-delimited JSON conversation with the daemon."""

    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock
        self._buf = b""
        self.received = 0

    def send(self, obj: dict[str, object]) -> None:
        self.sock.sendall(dumps(obj).encode("ascii") + b"\n")

    def recv(self) -> dict[str, object]:
        while b"\n" not in self._buf:
            if len(self._buf) > MAX_LINE:
                raise Refused("the local shim daemon sent an oversized reply")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        self.received += 1
        try:
            msg = loads(line.decode("utf-8"))
        except (ValueError, RecursionError):
            raise Refused("the local shim daemon sent a malformed reply") from None
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            raise Refused("the local shim daemon sent a malformed reply")
        return msg

    def close(self) -> None:
        self.sock.close()
