"""Strict decoding and encoding of protocol frames.

pydantic's JSON parser silently keeps the last of two equal keys and accepts
numbers no field could hold; a frame from an untrusted peer must be refused
with a reason instead. This module owns that: ``decode``, its stdlib
pre-check for duplicate keys and bad numbers, the colon-count fast path that
keeps the common case cheap, ``encode`` and ``ProtocolError``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from types import UnionType
from typing import TYPE_CHECKING, Annotated, Final, Literal, TypeVar, Union, cast, get_args, get_origin

from pydantic import BaseModel, TypeAdapter, ValidationError

if TYPE_CHECKING:  # a NewType of str: no need to import websockets to make one
    from websockets.typing import Subprotocol

_T = TypeVar("_T")


class ProtocolError(ValueError):
    """A message could not be accepted; ``code`` is machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _explain(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "message"
        parts.append(f"{loc}: {err['msg']}")
    more = len(exc.errors()) - 3
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


class _Rejected(Exception):
    """Raised inside the stdlib JSON pre-check; carries the ``ProtocolError`` code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


#: Largest integer the pre-check lets through; every integer field of every
#: model is bounded well below it (``Millis`` at 2**53), so anything larger
#: is hostile or broken, not merely out of range.
_MAX_INT: Final = 2**63


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Rejected("duplicate_key", f"duplicate key {key[:64]!r} in a JSON object")
            seen.add(key)
    return obj


def _no_constant(name: str) -> object:
    raise _Rejected("bad_number", f"{name} is not a valid JSON number")


def _bounded_int(text: str) -> int:
    # ``int()`` itself refuses more than 4300 digits (ValueError -> bad_json).
    value = int(text)
    if not -_MAX_INT <= value <= _MAX_INT:
        raise _Rejected("number_too_large", f"integer with {len(text)} digits is beyond any field's range")
    return value


def _no_float(text: str) -> object:
    # No field of the protocol is a float (canonical JSON has none); a float
    # that looks like a huge number (1e400 -> inf) is reported as such.
    if "e" in text.lower() and abs(float(text)) == float("inf"):
        raise _Rejected("bad_number", f"{text[:32]} overflows to infinity")
    return float(text)


_STRICT_JSON = json.JSONDecoder(
    object_pairs_hook=_no_duplicates,
    parse_constant=_no_constant,
    parse_int=_bounded_int,
    parse_float=_no_float,
)


def _precheck(text: str) -> None:
    """Stdlib parse with the checks pydantic's parser does not make:
    duplicate keys (pydantic silently keeps the last), NaN/Infinity and
    integers beyond 2**63. Raises ``ProtocolError`` or returns."""
    try:
        _STRICT_JSON.decode(text)
    except _Rejected as exc:
        raise ProtocolError(exc.code, exc.message) from None
    except RecursionError:
        raise ProtocolError("too_deep", "JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, int() digit limit
        raise ProtocolError("bad_json", f"not valid JSON: {exc}"[:400]) from None


def decode(adapter: TypeAdapter[_T], data: str | bytes) -> _T:
    """Parse one frame strictly; every failure is a ``ProtocolError`` with a reason.

    pydantic parses and validates first (one pass, in Rust). It would keep the
    last of two equal keys, so a validated frame is accepted only if it
    provably has none: cheaply when the frame's ``:`` count equals the fields
    pydantic saw set (see ``_pair_count``; true of every frame without a colon
    inside a string), else when re-encoding the result gives back exactly the
    frame (what every peer using ``encode`` sends). Any other frame, and any
    frame that fails validation, also goes through the stdlib pre-check, which
    names duplicate keys, NaN/Infinity and huge integers with their own codes.
    Nesting depth is bounded by pydantic's parser (``too_deep``); frame size by
    the transport's ``max_size``. No field is a float: a model with one gets no
    colon-count fast path, so a NaN in it still reaches the pre-check.
    """
    if isinstance(data, (bytes, bytearray)):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("bad_encoding", f"frame is not UTF-8: {exc.reason}") from None
    try:
        value = adapter.validate_json(data, strict=True)
    except ValidationError as exc:
        first = exc.errors()[0] if exc.errors() else None
        if first is not None and first["type"] == "json_invalid":
            if "recursion limit" in first["msg"]:
                raise ProtocolError("too_deep", "JSON nested too deeply") from None
            if "number out of range" in first["msg"]:
                raise ProtocolError("number_too_large", f"number out of range: {first['msg']}") from None
            raise ProtocolError("bad_json", f"not valid JSON: {first['msg']}") from None
        # Valid JSON the model refuses: say so precisely if the reason is a
        # duplicate key or a bad number rather than a schema mismatch.
        _precheck(data)
        if first is not None and first["type"] in ("union_tag_invalid", "union_tag_not_found"):
            raise ProtocolError("unknown_type", _explain(exc)) from None
        raise ProtocolError("invalid", _explain(exc)) from None
    if isinstance(value, BaseModel):
        pairs = _pair_count(value)
        if pairs is not None and data.count(":") == pairs:
            return value
        if value.model_dump_json() == data:
            return value
    _precheck(data)
    return value


# -- the duplicate-key fast path -------------------------------------------
#
# Every key/value pair of every JSON object in a frame is followed by exactly
# one structural ``:``; colons inside strings only add to the count (an
# escaped ``\u003a`` adds nothing, and is inside a string anyway). So
# ``frame.count(":")`` >= pairs in the frame >= distinct keys per object >= the
# fields pydantic saw set. If the count equals the fields set, every inequality
# is an equality: no object has a repeated key. This holds only when every JSON
# object in the frame became a model (no ``dict`` or list-of-model fields),
# which ``_nested_fields`` checks per class; otherwise the slower paths decide.

_SCALARS: Final = (str, int, bool, type(None))
#: Per model class: its model-typed fields, or None when a field may hold a
#: JSON object that is not a model (a dict, a tuple of models).
_nested_cache: dict[type[BaseModel], tuple[str, ...] | None] = {}


def _is_scalar(tp: object) -> bool:
    origin = get_origin(tp)
    if origin is Annotated:
        return _is_scalar(get_args(tp)[0])
    if origin is Literal or tp in _SCALARS:
        return True
    if origin in (Union, UnionType):
        return all(_is_scalar(a) for a in get_args(tp))
    if origin is tuple:
        return all(a is Ellipsis or _is_scalar(a) for a in get_args(tp))
    return False


def _is_model(tp: object) -> bool:
    origin = get_origin(tp)
    if origin is Annotated:
        return _is_model(get_args(tp)[0])
    if origin in (Union, UnionType):
        return all(a is type(None) or _is_model(a) for a in get_args(tp))
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _nested_fields(cls: type[BaseModel]) -> tuple[str, ...] | None:
    nested: list[str] = []
    for name, info in cls.model_fields.items():
        if _is_scalar(info.annotation):
            continue
        if not _is_model(info.annotation):
            return None
        nested.append(name)
    return tuple(nested)


def _pair_count(value: BaseModel) -> int | None:
    """Fields set across ``value`` and its nested models, or None if the
    model can hold JSON objects that are not models."""
    cls = type(value)
    try:
        nested = _nested_cache[cls]
    except KeyError:
        nested = _nested_cache[cls] = _nested_fields(cls)
    if nested is None:
        return None
    n = len(value.__pydantic_fields_set__)
    for name in nested:
        sub = getattr(value, name)
        if sub is not None:
            inner = _pair_count(sub)
            if inner is None:
                return None
            n += inner
    return n


def encode(message: BaseModel) -> str:
    return message.model_dump_json(exclude_defaults=False)


# -- several messages per frame ---------------------------------------------
#
# Every websocket frame costs both ends ~70 us of Python framing and a
# syscall, the largest cost per action once the work itself is lean. Peers
# that both offer this subprotocol in the handshake may put several messages
# in one frame, one per line: what a sender has queued at once (a report and
# the next proposal) then travels together. ``encode`` never produces a raw
# newline (JSON escapes it inside strings), so the split is unambiguous; each
# line is decoded, judged and rejected on its own exactly like a frame. Peers
# that do not offer it (older shims and hubs) keep one message per frame:
# websockets' handshake settles it, no message changes shape.

#: The websocket subprotocol of frames that hold one or more messages, one per line.
LINES_SUBPROTOCOL: Final = "towerctl.lines.v1"
#: v1, and an operator gets the activity of sessions in ``activity`` messages
#: (several sessions each) instead of a ``session`` message per session.
#: Consoles offer it first; shims need nothing of it and offer only v1.
ACTIVITY_SUBPROTOCOL: Final = "towerctl.lines.v2"
#: Both, newest first: either means several messages a frame.
LINES_SUBPROTOCOLS: Final = (ACTIVITY_SUBPROTOCOL, LINES_SUBPROTOCOL)
#: How many queued messages one frame carries at most.
MAX_LINES_PER_FRAME: Final = 64


def select_lines(_conn: object, offered: Sequence[str]) -> Subprotocol | None:
    """A server's ``select_subprotocol``: the newest of LINES_SUBPROTOCOLS a
    peer offers; everyone else (older shims and consoles, plain websocket
    tools) connects as before, with one message a frame, instead of
    websockets' default of refusing a client that offers no subprotocol."""
    for name in LINES_SUBPROTOCOLS:
        if name in offered:
            return cast("Subprotocol", name)
    return None


def frame_lines(frame: str | bytes, lines: bool) -> Sequence[str | bytes]:
    """The messages of one frame: its lines under LINES_SUBPROTOCOLS, else
    itself. A binary frame is never split: it is refused once, as a frame."""
    if lines and isinstance(frame, str):
        return frame.split("\n")
    return [frame]


def utf8_len(data: str) -> int:
    """Bytes of ``data`` on the wire; ``isascii`` is O(1) in CPython, so only
    a message with non-ASCII text is encoded to learn its size."""
    return len(data) if data.isascii() else len(data.encode("utf-8"))


def lines_that_fit(queued: Iterable[str], max_bytes: int, max_lines: int = MAX_LINES_PER_FRAME) -> int:
    """How many messages from the head of ``queued`` go in the next frame:
    at least one (a message too big for ``max_bytes`` alone goes alone), at
    most ``max_lines``, and no more UTF-8 bytes, separators included, than
    ``max_bytes``."""
    n, size = 0, -1
    for data in itertools.islice(queued, max_lines):
        size += utf8_len(data) + 1
        if n and size > max_bytes:
            break
        n += 1
    return max(n, 1)
