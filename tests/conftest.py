"""Shared fixtures: a real hub on 127.0.0.1:0 with a real SQLite file in tmp_path."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent_shim.policy import EnvPolicy
from towerctl.hub.fanout import OperatorConn
from towerctl.hub.server import Hub, HubConfig
from towerctl.operator import OperatorClient
from towerctl.tokens import create_token


@dataclass
class Tower:
    hub: Hub
    db: Path
    key: Path
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.hub.url

    def operator(self, who: str = "admin") -> OperatorClient:
        return OperatorClient(self.url, self.tokens[who], client=f"test-{who}")

    def operator_conn(self, name: str) -> OperatorConn:
        """The hub's side of the one operator connection of token ``name``."""
        assert self.hub.service is not None
        (op,) = [o for o in self.hub.service.fanout.operators if o.name == name]
        return op

    async def set_policy(self, env: str, policy: EnvPolicy) -> None:
        assert self.hub.service is not None
        await self.hub.service.apply_policy(env, policy, actor="test")


async def make_tower(tmp_path: Path) -> Tower:
    db = tmp_path / "tower.db"
    key = tmp_path / "signing.key"
    hub = Hub(HubConfig(host="127.0.0.1", port=0, db_path=db, key_path=key))
    await hub.start()
    tower = Tower(hub=hub, db=db, key=key)
    assert hub.store is not None
    for who, role, envs in (
        ("agent", "agent", ()),
        ("agent_dev", "agent", ("dev",)),
        ("admin", "admin", ()),
        ("alice", "approver", ()),
        ("bob", "approver", ()),
        ("viewer", "viewer", ()),
    ):
        tower.tokens[who] = await create_token(hub.store, role=role, name=who, envs=envs, actor="test")
    return tower


@pytest.fixture
async def tower(tmp_path: Path) -> AsyncIterator[Tower]:
    t = await make_tower(tmp_path)
    try:
        yield t
    finally:
        await t.hub.stop()


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``predicate()`` holds, re-checking whenever the loop runs.

    Used to observe state that changes on the other side of a socket without
    a fixed sleep: it returns as soon as the condition holds.
    """

    async def loop() -> None:
        while not predicate():  # noqa: ASYNC110 - a bounded condition wait, not a fixed delay
            await asyncio.sleep(0.005)

    await asyncio.wait_for(loop(), timeout)


async def next_event(client: OperatorClient, match: Callable[[Any], bool], timeout: float = 5.0) -> Any:
    """The next hub event for which ``match`` holds."""

    async def scan() -> Any:
        async for msg in client.events():
            if match(msg):
                return msg
        raise AssertionError("operator connection closed")

    return await asyncio.wait_for(scan(), timeout)


@pytest.fixture(scope="session", autouse=True)
def _private_runtime_dir() -> Iterator[None]:
    """Keep local shim daemons started by tests (``towerctl exec``, gate wrappers)
    out of the user's runtime dir, and stop them when the session ends.

    Subprocess environments drop ``TOWER_*`` but keep ``XDG_RUNTIME_DIR``, so
    every daemon a test starts lives under this short temporary directory.
    """
    import os
    import shutil
    import tempfile

    from towerctl.localshim import daemon, fastclient

    root = tempfile.mkdtemp(prefix="txr-", dir="/tmp")
    old = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = root
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("XDG_RUNTIME_DIR", None)
        else:
            os.environ["XDG_RUNTIME_DIR"] = old
        sock_dir = os.path.join(root, f"towerctl-{os.getuid()}")
        if os.path.isdir(sock_dir):
            daemon.request(os.path.join(sock_dir, f"shimd-{fastclient.install_key()}.sock"), "stop", 5.0)
        shutil.rmtree(root, ignore_errors=True)
