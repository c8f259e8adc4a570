"""One canonical JSON encoding, and the digests built on it.

Approvals are bound to a digest, and audit records are chained by hash, so two
parties must turn the same value into the same bytes. Sorted keys, no
whitespace, UTF-8, and no floats (their textual form is not portable between
encoders) make that true.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

ACTION_DIGEST_TAG: Final = b"towerctl/action/v1\x00"


_MAX_DEPTH: Final = 64
#: One encoder for every call: json.dumps builds a new one each time it is given options.
_ENCODER: Final = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
#: And the C encoder inside it, made once: ``JSONEncoder.encode`` makes a new
#: one (and a dict for its cycle check) on every call, half the cost of
#: encoding a small record. No cycle check is needed: a checked value is
#: walked first (depth-bounded) and an unchecked one is typed data.
#: ``None`` on an interpreter without the ``_json`` accelerator.
_make_c_encoder: Callable[..., Callable[[object, int], Sequence[str]]] | None = getattr(
    json.encoder, "c_make_encoder", None
)
_C_ENCODE: Final = (
    None
    if _make_c_encoder is None
    # (markers, default, encoder, indent, key_sep, item_sep, sort_keys, skipkeys, allow_nan)
    else _make_c_encoder(
        None, _ENCODER.default, json.encoder.encode_basestring, None, ":", ",", True, False, False
    )
)


class CanonicalError(ValueError):
    """The value cannot be encoded canonically (a float, a non-string key...)."""


def _check(value: Any, depth: int = 0) -> None:
    # Exact-type tests first, and scalar members checked in the loop rather
    # than by a call each: this runs over every audit record on the hub's write
    # path, and isinstance against the Mapping ABC is slow.
    if depth > _MAX_DEPTH:
        raise CanonicalError(f"value nested deeper than {_MAX_DEPTH} levels")
    t = type(value)
    if t is dict:
        if depth == _MAX_DEPTH and value:
            raise CanonicalError(f"value nested deeper than {_MAX_DEPTH} levels")
        for k, v in value.items():
            if type(k) is not str:
                raise CanonicalError(f"object key {k!r} is not a string")
            tv = type(v)
            if not (tv is str or tv is int or tv is bool or v is None):
                _check(v, depth + 1)
        return
    if t is list or t is tuple:
        if depth == _MAX_DEPTH and value:
            raise CanonicalError(f"value nested deeper than {_MAX_DEPTH} levels")
        for v in value:
            tv = type(v)
            if not (tv is str or tv is int or tv is bool or v is None):
                _check(v, depth + 1)
        return
    if t is str or t is int or t is bool or value is None:
        return
    if isinstance(value, float):
        raise CanonicalError("floats are not allowed in canonical JSON")
    if isinstance(value, (bool, str, int)):
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise CanonicalError(f"object key {k!r} is not a string")
            _check(v, depth + 1)
        return
    if isinstance(value, (list, tuple)):
        for v in value:
            _check(v, depth + 1)
        return
    raise CanonicalError(f"type {type(value).__name__} has no canonical JSON form")


def canonical_json(value: Any) -> bytes:
    """Encode ``value`` as canonical JSON bytes (sorted keys, compact, UTF-8)."""
    return canonical_text(value).encode("utf-8")


def canonical_text(value: Any, *, checked: bool = True) -> str:
    """:func:`canonical_json` before its UTF-8 encoding, for a caller that
    puts it inside a larger canonical text. ``checked=False`` skips the walk,
    for a value whose type already rules out floats and non-string keys (a
    strict model of strings, dumped): the walk would only look for what it
    cannot hold, and that runs per action."""
    if checked:
        _check(value)
    if _C_ENCODE is None:
        return _ENCODER.encode(value)
    return "".join(_C_ENCODE(value, 0))


#: How the canonical encoder writes a string (its ``ensure_ascii=False``
#: escapes), for callers that assemble canonical text field by field.
canonical_str: Final = json.encoder.encode_basestring


def tagged_digest(tag: bytes, value: Any) -> str:
    """Hex SHA-256 over a domain tag and the canonical encoding of ``value``.

    The tag keeps a digest of one kind of object from ever being valid as a
    digest of another kind.
    """
    h = hashlib.sha256(tag)
    h.update(canonical_json(value))
    return h.hexdigest()
