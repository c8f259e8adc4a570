"""Where an SSH session's hub token comes from, and how it is revoked.

Each console gets a token of its own, named after the operator, so that the
hub audits what alice approves over SSH as alice's; the token lives only as
long as the session, and tokens left behind by a killed ssh-serve are revoked
by the next one (:meth:`StoreTokens.sweep`).
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from towerctl.auth import hash_token, new_token
from towerctl.ssh_identity import Identity
from towerctl.store import Store
from towerctl.store.models import TokenRow

log = logging.getLogger("towerctl.ssh")


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    token_id: str


class TokenSource(Protocol):
    """Where a session's hub token comes from."""

    async def issue(self, who: Identity) -> IssuedToken: ...

    async def release(self, issued: IssuedToken) -> None: ...


class StoreTokens:
    """Mint one token per SSH session in the hub's store, named after the
    operator, and revoke it when the session ends (both audited, actor
    ``ssh-serve``). The store may be the hub's own (embedded) or the same
    SQLite file opened by this process: writes take the database lock and
    re-read the audit chain head.

    A process killed with SIGKILL (or a power cut) cannot revoke what it
    minted, and those tokens would stay valid. So each ssh-serve process holds
    an exclusive ``flock`` on ``<db>.ssh-serve/<instance>.lock`` for its
    lifetime and puts its instance id in every token id it mints; :meth:`sweep`
    (run at start) revokes the tokens of every instance whose lock nobody holds
    any more. The kernel drops a dead process's locks, so this needs no pid
    files and cannot revoke a live instance's tokens.
    """

    def __init__(self, store: Store, lock_dir: Path | None = None) -> None:
        self.store = store
        self.instance = uuid.uuid4().hex[:12]
        self.lock_dir = lock_dir if lock_dir is not None else Path(f"{store.path}.ssh-serve")
        self._lock: int | None = None

    async def sweep(self) -> list[str]:
        """Take this instance's lock; revoke dead instances' tokens. Returns their ids."""
        self.lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self._lock is None:
            fd = os.open(self.lock_dir / f"{self.instance}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._lock = fd
        dead: list[str] = []
        for lock in sorted(self.lock_dir.glob("*.lock")):
            if lock.stem == self.instance:
                continue
            try:
                fd = os.open(lock, os.O_RDWR)
            except FileNotFoundError:
                continue  # another instance swept it meanwhile
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue  # alive
            try:
                dead.append(lock.stem)
                lock.unlink(missing_ok=True)
            finally:
                os.close(fd)
        revoked: list[str] = []
        if dead:
            prefixes = tuple(f"t-ssh-{d}-" for d in dead)
            ts = time.time_ns() // 1_000_000
            for row in await self.store.tokens():
                if row.revoked_at is None and row.token_id.startswith(prefixes):
                    await self.store.token_revoked(row.token_id, actor="ssh-serve", ts_ms=ts)
                    revoked.append(row.token_id)
            if revoked:
                log.warning("revoked %d token(s) left by ssh-serve processes that died", len(revoked))
        return revoked

    def close(self) -> None:
        if self._lock is not None:
            (self.lock_dir / f"{self.instance}.lock").unlink(missing_ok=True)
            os.close(self._lock)
            self._lock = None

    async def issue(self, who: Identity) -> IssuedToken:
        token = new_token()
        ts = time.time_ns() // 1_000_000
        row = TokenRow(
            token_id=f"t-ssh-{self.instance}-{uuid.uuid4().hex[:12]}",
            name=who.operator,
            role=who.role,
            envs=(),
            hash=hash_token(token),
            created_at=ts,
            revoked_at=None,
        )
        await self.store.token_added(row, actor="ssh-serve", ts_ms=ts)
        return IssuedToken(token, row.token_id)

    async def release(self, issued: IssuedToken) -> None:
        await self.store.token_revoked(issued.token_id, actor="ssh-serve", ts_ms=time.time_ns() // 1_000_000)
