"""Ed25519 signature verification in pure Python (RFC 8032 §5.1.7).

The shim may import only the standard library, ``websockets`` and
``pydantic``, yet it must check the hub's signature on every approval. This
is the verify half of Ed25519 with plain Python integers: slow (a few ms per
signature) but exact, and only public data is handled, so timing side
channels do not matter. Signing lives in the hub (``cryptography``).

Checks done, in the order of RFC 8032 §5.1.7:

* the public key and ``R`` must decode to curve points (non-canonical ``y``
  values >= p are rejected);
* ``S`` must be < L (rejects malleable signatures);
* the cofactorless equation ``[S]B == R + [k]A`` must hold exactly.
"""

from __future__ import annotations

import hashlib
from typing import Final

P: Final = 2**255 - 19
L: Final = 2**252 + 27742317777372353535851937790883648493
_D: Final = (-121665 * pow(121666, P - 2, P)) % P
_SQRT_M1: Final = pow(2, (P - 1) // 4, P)

# Extended coordinates (X, Y, Z, T) with x = X/Z, y = Y/Z, x*y = T/Z.
_Point = tuple[int, int, int, int]


def _add(p: _Point, q: _Point) -> _Point:
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = 2 * t1 * t2 * _D % P
    d = 2 * z1 * z2 % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _mul(s: int, p: _Point) -> _Point:
    q: _Point = (0, 1, 1, 0)  # neutral element
    while s > 0:
        if s & 1:
            q = _add(q, p)
        p = _add(p, p)
        s >>= 1
    return q


def _equal(p: _Point, q: _Point) -> bool:
    x1, y1, z1, _ = p
    x2, y2, z2, _ = q
    return (x1 * z2 - x2 * z1) % P == 0 and (y1 * z2 - y2 * z1) % P == 0


def _recover_x(y: int, sign: int) -> int | None:
    if y >= P:
        return None
    x2 = (y * y - 1) * pow(_D * y * y + 1, P - 2, P) % P
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P != 0:
        x = x * _SQRT_M1 % P
    if (x * x - x2) % P != 0:
        return None
    if (x & 1) != sign:
        x = P - x
    return x


def _decompress(data: bytes) -> _Point | None:
    if len(data) != 32:
        return None
    y = int.from_bytes(data, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    x = _recover_x(y, sign)
    if x is None:
        return None
    return (x, y, 1, x * y % P)


_BY: Final = 4 * pow(5, P - 2, P) % P
_BX: Final = _recover_x(_BY, 0)
assert _BX is not None
BASE: Final[_Point] = (_BX, _BY, 1, _BX * _BY % P)


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True only for a valid Ed25519 signature of ``message`` by ``public_key``.

    Never raises on malformed input: a wrong length or an off-curve point is
    simply not a valid signature.
    """
    if len(public_key) != 32 or len(signature) != 64:
        return False
    a = _decompress(public_key)
    r = _decompress(signature[:32])
    if a is None or r is None:
        return False
    s = int.from_bytes(signature[32:], "little")
    if s >= L:
        return False
    k = int.from_bytes(hashlib.sha512(signature[:32] + public_key + message).digest(), "little") % L
    return _equal(_mul(s, BASE), _add(r, _mul(k, a)))


def parse_public_key(text: str) -> bytes:
    """The raw 32-byte key from hex (64 digits) or base64 (standard or URL-safe).

    Raises ``ValueError`` for anything else, and for bytes that are not a
    point on the curve.
    """
    import base64
    import binascii

    s = text.strip()
    raw: bytes | None = None
    if len(s) == 64:
        try:
            raw = bytes.fromhex(s)
        except ValueError:
            raw = None
    if raw is None:
        try:
            raw = base64.b64decode(s.replace("-", "+").replace("_", "/") + "=" * (-len(s) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("hub key must be hex or base64 of a raw 32-byte Ed25519 public key") from None
    if len(raw) != 32:
        raise ValueError(f"hub key must be 32 bytes, got {len(raw)}")
    if _decompress(raw) is None:
        raise ValueError("hub key is not a valid Ed25519 public key")
    return raw


def key_id(public_key: bytes) -> str:
    """The same fingerprint the hub stores beside checkpoint signatures."""
    return hashlib.sha256(public_key).hexdigest()[:16]
