"""Creating tokens, and the local token files that `serve` and `up` keep.

Creating a token is the one place its plaintext exists, briefly: only the hash
is stored. The local files (admin and agent, mode 0600) let a CLI on the same
machine work with no set-up; several databases may share a data directory
(`up --demo` keeps its own), so a file another database wrote is registered,
never replaced.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Final

from towerctl.auth import hash_token, new_token
from towerctl.config import token_file, write_private
from towerctl.store import Store
from towerctl.store.models import TokenRow

LOCAL_TOKENS: Final = (("admin", "local-admin"), ("agent", "local-agent"))


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def register_token(
    store: Store, token: str, *, role: str, name: str, envs: tuple[str, ...], actor: str
) -> None:
    """Store the hash of ``token`` (audited)."""
    ts = _now_ms()
    row = TokenRow(
        token_id=f"t-{uuid.uuid4().hex[:12]}",
        name=name,
        role=role,
        envs=envs,
        hash=hash_token(token),
        created_at=ts,
        revoked_at=None,
    )
    await store.token_added(row, actor=actor, ts_ms=ts)


async def create_token(store: Store, *, role: str, name: str, envs: tuple[str, ...], actor: str) -> str:
    """Store the hash of a fresh token and return the token (shown once)."""
    token = new_token()
    await register_token(store, token, role=role, name=name, envs=envs, actor=actor)
    return token


async def ensure_local_tokens(store: Store, *, actor: str) -> tuple[dict[str, str], list[Path]]:
    """The admin and agent token from the token files, valid in this database.

    A file this database does not know is registered here (audited); a missing
    file, a revoked token or one of the wrong role gets a fresh token and file.
    Returns the tokens by role and the files that were (re)written.
    """
    known = {row.hash: row for row in await store.tokens()}  # revoked ones included
    out: dict[str, str] = {}
    written: list[Path] = []
    for role, name in LOCAL_TOKENS:
        path = token_file(role)
        token = path.read_text(encoding="utf-8").strip() if path.exists() else ""
        row = known.get(hash_token(token)) if token else None
        if token and row is None:
            await register_token(store, token, role=role, name=name, envs=(), actor=actor)
        elif not token or (row is not None and (row.revoked_at is not None or row.role != role)):
            token = await create_token(store, role=role, name=name, envs=(), actor=actor)
            write_private(path, token + "\n")
            written.append(path)
        out[role] = token
    return out, written
