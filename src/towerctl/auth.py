"""Bearer tokens and roles.

Tokens are random, shown once, and stored only as a SHA-256 hash: the
database leaking does not leak a credential. Roles are ordered for operators
(viewer < approver < admin); ``agent`` is separate and scoped to environments.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Final, Literal

Role = Literal["agent", "viewer", "approver", "admin"]
ROLES: Final[tuple[Role, ...]] = ("agent", "viewer", "approver", "admin")
_OPERATOR_RANK: Final = {"viewer": 0, "approver": 1, "admin": 2}
TOKEN_PREFIX: Final = "twr_"


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def same_hash(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def parse_bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is on the other end of a connection, as the token says."""

    token_id: str
    name: str
    role: Role
    envs: tuple[str, ...]

    @property
    def is_operator(self) -> bool:
        return self.role in _OPERATOR_RANK

    def at_least(self, role: Role) -> bool:
        """Operator role ordering; an agent token is never an operator."""
        if self.role not in _OPERATOR_RANK or role not in _OPERATOR_RANK:
            return self.role == role
        return _OPERATOR_RANK[self.role] >= _OPERATOR_RANK[role]

    def may_use_env(self, env: str) -> bool:
        """An empty scope or ``*`` means every environment."""
        return not self.envs or "*" in self.envs or env in self.envs
