"""Who may log in to ``towerctl ssh-serve``, as whom, and the server's host key.

Each SSH login is authenticated by public key against an authorized_keys file
(re-read at every login, so adding or removing an operator needs no restart).
The key's options name the operator and the role::

    tower-operator="alice",tower-role="approver" ssh-ed25519 AAAA… alice@laptop

A key without a usable operator is refused a console, not given a default
name: the hub audits decisions under that name.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import asyncssh

from towerctl.config import write_private

log = logging.getLogger("towerctl.ssh")

OPERATOR_OPTION: Final = "tower-operator"
ROLE_OPTION: Final = "tower-role"
OPERATOR_ROLES: Final = ("viewer", "approver", "admin")
DEFAULT_ROLE: Final = "viewer"
_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")


class IdentityError(ValueError):
    """The key's authorized_keys entry does not name a usable operator."""


@dataclass(frozen=True, slots=True)
class Identity:
    operator: str
    role: str


def _one(value: object, option: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        return value[0]
    raise IdentityError(f'{option} must be given once, as {option}="value"')


def identity_of(conn: asyncssh.SSHServerConnection) -> Identity:
    """Operator and role from the options of the key that logged in."""
    operator = _one(conn.get_key_option(OPERATOR_OPTION), OPERATOR_OPTION)
    role = _one(conn.get_key_option(ROLE_OPTION), ROLE_OPTION) or DEFAULT_ROLE
    if operator is None:
        raise IdentityError(f'this key has no {OPERATOR_OPTION}="name" option in the authorized_keys file')
    if not _NAME_RE.fullmatch(operator):
        raise IdentityError(f"{OPERATOR_OPTION} {operator!r} is not a valid name (letters, digits, ._@+-)")
    if role not in OPERATOR_ROLES:
        raise IdentityError(f"{ROLE_OPTION} {role!r} is not one of {', '.join(OPERATOR_ROLES)}")
    return Identity(operator, role)


# ---------------------------------------------------------------- host key


def load_or_create_host_key(path: Path) -> asyncssh.SSHKey:
    """The server's host key; an Ed25519 key is generated (mode 0600) if missing."""
    if path.exists():
        return asyncssh.read_private_key(str(path))
    key = asyncssh.generate_private_key("ssh-ed25519")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, key.export_private_key().decode("ascii"))
    log.info("generated SSH host key %s", path)
    return key


class _Server(asyncssh.SSHServer):
    def __init__(self, authorized_keys: Path) -> None:
        self._keys = authorized_keys
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn

    def begin_auth(self, username: str) -> bool:
        assert self._conn is not None
        try:
            self._conn.set_authorized_keys(str(self._keys))
        except (OSError, ValueError) as exc:
            log.error("cannot read authorized keys %s: %s", self._keys, exc)
            self._conn.set_authorized_keys(asyncssh.SSHAuthorizedKeys())
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True
