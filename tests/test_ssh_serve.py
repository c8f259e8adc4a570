"""``towerctl ssh-serve`` driven by a real SSH client.

A real hub (the ``tower`` fixture), ssh-serve on 127.0.0.1:0 minting tokens in
the hub's store, an asyncssh client logging in with a generated key, the real
console (``python -m towerctl.cli tui``) in a PTY, and a real shim whose
destructive prod action is approved by key presses sent over SSH.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import pytest

from agent_shim import Shim
from towerctl.sshserve import SSHServe, SSHServeConfig, StoreTokens

from .conftest import Tower, wait_for

pytestmark = pytest.mark.timeout(90)


def write_keys(path: Path, *entries: tuple[str, asyncssh.SSHKey]) -> None:
    lines = [f"{opts} {key.export_public_key().decode().strip()}".strip() for opts, key in entries]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
async def ssh(tower: Tower, tmp_path: Path) -> AsyncIterator[SSHServe]:
    assert tower.hub.store is not None
    (tmp_path / "authorized_keys").write_text("")
    server = SSHServe(
        SSHServeConfig(
            hub_url=tower.url,
            authorized_keys=tmp_path / "authorized_keys",
            host_key=tmp_path / "hostkey" / "ssh_host_ed25519_key",
            port=0,
            kill_grace_s=1.0,
        ),
        StoreTokens(tower.hub.store),
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def login(server: SSHServe, key: asyncssh.SSHKey) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect(
        "127.0.0.1",
        server.port,
        username="ops",
        client_keys=[key],
        known_hosts=None,
        agent_path=None,
        config=None,
    )


class Screen:
    """Everything the console drew so far, as text (escape sequences kept)."""

    def __init__(self, proc: asyncssh.SSHClientProcess[bytes]) -> None:
        self.proc = proc
        self.data = bytearray()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while chunk := await self.proc.stdout.read(65536):
            self.data += chunk

    def text(self) -> str:
        return self.data.decode("utf-8", "replace")

    async def shows(self, needle: str, timeout: float = 30.0) -> None:
        await wait_for(lambda: needle in self.text(), timeout)


def decisions(db: Path) -> list[tuple[str, str]]:
    con = sqlite3.connect(db)
    try:
        return list(con.execute("SELECT verdict, operator FROM decisions"))
    finally:
        con.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_alice_approves_over_ssh_and_the_hub_records_alice(
    tower: Tower, ssh: SSHServe, tmp_path: Path
) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    write_keys(ssh.config.authorized_keys, ('tower-operator="alice",tower-role="approver"', key))
    host_key = ssh.config.host_key
    assert stat.S_IMODE(host_key.stat().st_mode) == 0o600
    victim = tmp_path / "data"
    victim.mkdir()

    async with (
        await login(ssh, key) as conn,
        Shim(tower.url, tower.tokens["agent"], agent="deploy-bot", env="prod") as shim,
    ):
        proc = await conn.create_process(term_type="xterm-256color", term_size=(120, 40), encoding=None)
        screen = Screen(proc)
        await screen.shows("deploy-bot")  # the fleet table, fed by the hub
        [sess] = ssh.sessions.values()
        assert (sess.operator, sess.role) == ("alice", "approver")

        task = asyncio.create_task(shim.run_shell(f"rm -rf {victim}", reason="cleanup"))
        await screen.shows("rm -rf")
        mark = len(screen.data)
        proc.stdin.write(b"a")  # focus the pending queue: the console redraws it
        await wait_for(lambda: len(screen.data) > mark, 10)
        proc.stdin.write(b"\r")
        await screen.shows("Approve")
        proc.stdin.write(b"y")
        approved = await asyncio.wait_for(task, 15)
        assert approved.decision is not None and approved.decision.operator == "alice"
        assert not victim.exists()

        # Resizes reach the console: it redraws at the new width.
        proc.change_terminal_size(90, 30)
        mark = len(screen.data)
        await wait_for(lambda: len(screen.data) > mark, 10)

        proc.stdin.write(b"q")
        await asyncio.wait_for(proc.wait_closed(), 15)
        assert proc.exit_status == 0

    assert ("approved", "alice") in decisions(tower.db)
    # The session's token was named alice, and revoked at logout.
    con = sqlite3.connect(tower.db)
    try:
        rows = list(con.execute("SELECT name, role, revoked_at FROM tokens WHERE token_id LIKE 't-ssh-%'"))
    finally:
        con.close()
    assert rows and all(r[0] == "alice" and r[1] == "approver" and r[2] is not None for r in rows)


async def test_a_session_without_a_pty_is_refused(ssh: SSHServe) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    write_keys(ssh.config.authorized_keys, ('tower-operator="alice",tower-role="approver"', key))
    async with await login(ssh, key) as conn:
        result = await asyncio.wait_for(conn.run(), 10)
    assert result.exit_status == 1
    assert "needs a terminal" in str(result.stderr)
    assert not ssh.sessions


async def test_an_unknown_key_cannot_log_in(ssh: SSHServe) -> None:
    known = asyncssh.generate_private_key("ssh-ed25519")
    stranger = asyncssh.generate_private_key("ssh-ed25519")
    write_keys(ssh.config.authorized_keys, ('tower-operator="alice"', known))
    with pytest.raises(asyncssh.PermissionDenied):
        await login(ssh, stranger)


async def test_a_key_without_an_operator_name_is_refused(ssh: SSHServe) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    write_keys(ssh.config.authorized_keys, ("", key))
    async with await login(ssh, key) as conn:
        proc = await conn.create_process(term_type="xterm", term_size=(80, 24))
        await asyncio.wait_for(proc.wait_closed(), 10)
        assert proc.exit_status == 1
        assert "tower-operator" in await proc.stderr.read()
    assert not ssh.sessions


async def test_a_dropped_connection_ends_the_console(ssh: SSHServe) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    write_keys(ssh.config.authorized_keys, ('tower-operator="bob",tower-role="viewer"', key))
    conn = await login(ssh, key)
    proc = await conn.create_process(term_type="xterm", term_size=(100, 30), encoding=None)
    screen = Screen(proc)
    await screen.shows("FLEET")
    [pid] = list(ssh.sessions)
    assert alive(pid)
    conn.abort()  # the network goes away: no EOF, no exit, no signal from the client
    await wait_for(lambda: not alive(pid), 15)
    await wait_for(lambda: not ssh.sessions, 5)
