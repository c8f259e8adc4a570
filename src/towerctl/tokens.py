"""Creating tokens: the one place a token's plaintext exists, briefly."""

from __future__ import annotations

import time
import uuid

from towerctl.auth import hash_token, new_token
from towerctl.store import Store
from towerctl.store.models import TokenRow


async def create_token(store: Store, *, role: str, name: str, envs: tuple[str, ...], actor: str) -> str:
    """Store the hash of a fresh token and return the token (shown once)."""
    token = new_token()
    ts = time.time_ns() // 1_000_000
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
    return token
