"""Tokens minted by ``towerctl ssh-serve`` do not outlive a killed ssh-serve.

A real SIGKILL of a real process that minted a token through ``StoreTokens``
on the hub's SQLite file; the next ssh-serve start revokes it (audited), and
never touches the tokens of an instance that is still alive.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from towerctl.sshserve import Identity, StoreTokens

from .conftest import Tower

pytestmark = pytest.mark.timeout(60)

_CHILD = """
import asyncio, sys
from pathlib import Path
from towerctl.sshserve import Identity, StoreTokens
from towerctl.store import Store

async def main() -> None:
    db = Path(sys.argv[1])
    store = await Store.open(db, key_path=Path(sys.argv[2]))
    tokens = StoreTokens(store)
    await tokens.sweep()
    issued = await tokens.issue(Identity("carol", "approver"))
    print(issued.token_id, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def active(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {r[0] for r in conn.execute("SELECT token_id FROM tokens WHERE revoked_at IS NULL")}


def audited_revocations(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        return list(
            conn.execute("SELECT actor, event FROM audit WHERE event = 'token.revoked' ORDER BY seq")
        )


async def test_tokens_of_a_killed_ssh_serve_are_revoked_at_the_next_start(tower: Tower) -> None:
    store = tower.hub.store
    assert store is not None
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CHILD, str(tower.db), str(tower.key), stdout=asyncio.subprocess.PIPE
    )
    assert child.stdout is not None
    try:
        dead_token = (await asyncio.wait_for(child.stdout.readline(), 30)).decode().strip()
        assert dead_token.startswith("t-ssh-")
        # A live instance in this process, minting its own token.
        live = StoreTokens(store)
        assert await live.sweep() == []  # the child is alive: its token stays
        live_token = (await live.issue(Identity("alice", "approver"))).token_id
        assert {dead_token, live_token} <= active(tower.db)
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    assert dead_token in active(tower.db)  # nothing could revoke it at SIGKILL

    nxt = StoreTokens(store)
    assert await nxt.sweep() == [dead_token]
    assert dead_token not in active(tower.db)
    assert live_token in active(tower.db)  # its instance still holds its lock
    assert ("ssh-serve", "token.revoked") in audited_revocations(tower.db)
    # The dead instance's lock file is gone; the living ones remain.
    locks = {p.stem for p in live.lock_dir.glob("*.lock")}
    assert locks == {live.instance, nxt.instance}
    # Sweeping again finds nothing more.
    assert await nxt.sweep() == []
    live.close()
    nxt.close()
    assert not list(live.lock_dir.glob("*.lock"))


async def test_lock_dir_is_private(tower: Tower, tmp_path: Path) -> None:
    assert tower.hub.store is not None
    tokens = StoreTokens(tower.hub.store, lock_dir=tmp_path / "locks")
    await tokens.sweep()
    try:
        assert (tmp_path / "locks").stat().st_mode & 0o077 == 0
        assert os.stat(tmp_path / "locks" / f"{tokens.instance}.lock").st_mode & 0o077 == 0
    finally:
        tokens.close()
