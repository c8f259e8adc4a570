"""What the local shim daemon adds to the Claude Code / Codex hooks.

``tests/test_hooks.py`` runs every hook test through the daemon and in-process;
this module checks what only the daemon path does: one pooled shim (one tower
connection) per Claude/Codex session, shared by its tool calls and kept
between them, distinct per session, surviving a daemon restart, and the
client's own failure modes. Real hub, real subprocesses, real unix sockets.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from towerctl.cli import hook as hook_cli
from towerctl.integrations import hookjson
from towerctl.localshim import daemon
from towerctl.localshim.shimclient import hook as hookclient

from .conftest import Tower, wait_for
from .test_hooks import (
    claude_payload,
    daemon_socket,
    db_rows,
    decision,
    hook_env,
    run_hook,
    stop_daemon,
)


@pytest.fixture(autouse=True)
async def _stop_daemon_after(tmp_path: Path) -> Any:
    yield
    await stop_daemon(tmp_path / "rt")


def status(tmp_path: Path) -> dict[str, Any]:
    reply = daemon.request(daemon_socket(tmp_path / "rt"), "status", 5.0)
    assert reply is not None, "no daemon is serving the hooks"
    return reply


def hook_sessions(tmp_path: Path) -> dict[str, bool]:
    """The daemon's pooled hook sessions (tower session id -> connected)."""
    return {
        s["session_id"]: s["connected"] for s in status(tmp_path)["sessions"] if s["agent"] == "claude-code"
    }


def session_status(tower: Tower, session_id: str) -> str:
    rows = db_rows(tower.db, "SELECT status FROM sessions WHERE session_id = ?", session_id)
    return str(rows[0][0]) if rows else ""


async def allow(env: dict[str, str], payload: bytes, *args: str) -> None:
    code, out, err = await run_hook(env, payload, *args)
    assert code == 0, err
    assert decision(out)["hookSpecificOutput"]["permissionDecision"] == "allow", out


async def test_tool_calls_of_one_session_share_one_pooled_tower_session(tower: Tower, tmp_path: Path) -> None:
    env = hook_env(tower, tmp_path)
    claude = str(uuid.uuid4())
    await allow(env, claude_payload("Bash", {"command": "ls"}, session=claude))
    first = status(tmp_path)
    assert hook_sessions(tmp_path) == {f"cc-dev-{claude}": True}
    await allow(env, claude_payload("Read", {"file_path": "/etc/hostname"}, session=claude))
    await allow(env, claude_payload("Bash", {"command": "git status"}, session=claude))
    # Same daemon, same pooled shim: still one connected session for this Claude session.
    assert status(tmp_path)["pid"] == first["pid"]
    assert hook_sessions(tmp_path) == {f"cc-dev-{claude}": True}
    await wait_for(lambda: len(db_rows(tower.db, "SELECT action_id FROM actions")) == 3, 10)
    assert db_rows(tower.db, "SELECT DISTINCT session_id FROM actions") == [(f"cc-dev-{claude}",)]
    assert db_rows(tower.db, "SELECT session_id, agent, status FROM sessions") == [
        (f"cc-dev-{claude}", "claude-code", "active")
    ]


async def test_two_claude_sessions_get_two_tower_sessions(tower: Tower, tmp_path: Path) -> None:
    env = hook_env(tower, tmp_path)
    one, two = str(uuid.uuid4()), str(uuid.uuid4())
    await asyncio.gather(
        allow(env, claude_payload("Bash", {"command": "ls"}, session=one)),
        allow(env, claude_payload("Bash", {"command": "pwd"}, session=two)),
    )
    await allow(env, claude_payload("Bash", {"command": "ls -la"}, session=one))
    assert hook_sessions(tmp_path) == {f"cc-dev-{one}": True, f"cc-dev-{two}": True}
    await wait_for(lambda: len(db_rows(tower.db, "SELECT action_id FROM actions")) == 3, 10)
    per_session = dict(db_rows(tower.db, "SELECT session_id, COUNT(*) FROM actions GROUP BY 1"))
    assert per_session == {f"cc-dev-{one}": 2, f"cc-dev-{two}": 1}
    # The same Claude session under another environment is another tower session.
    await allow(
        hook_env(tower, tmp_path, TOWER_ENV="staging"), claude_payload("Bash", {"command": "ls"}, session=one)
    )
    assert f"cc-staging-{one}" in hook_sessions(tmp_path)


async def test_daemon_restart_mid_session_resumes_the_same_tower_session(
    tower: Tower, tmp_path: Path
) -> None:
    env = hook_env(tower, tmp_path)
    claude = str(uuid.uuid4())
    tower_session = f"cc-dev-{claude}"
    tool_use = "toolu_01RestartRestartRestart1"
    pre = claude_payload("Bash", {"command": "ls"}, session=claude, tool_use_id=tool_use)
    await allow(env, pre)
    old_pid = await stop_daemon(tmp_path / "rt")
    assert old_pid is not None
    # The daemon left the session to be resumed (close 4000), it did not end it.
    await wait_for(lambda: session_status(tower, tower_session) == "disconnected", 10)
    # PostToolUse of the call admitted before the restart: a new daemon, the same session.
    post = claude_payload(
        "Bash",
        {"command": "ls"},
        session=claude,
        tool_use_id=tool_use,
        event="PostToolUse",
        tool_response={"stdout": "README.md", "stderr": "", "interrupted": False},
    )
    code, _, err = await run_hook(env, post)
    assert code == 0, err
    assert status(tmp_path)["pid"] != old_pid
    await allow(env, claude_payload("Bash", {"command": "pwd"}, session=claude))
    await wait_for(lambda: session_status(tower, tower_session) == "active", 10)
    assert db_rows(tower.db, "SELECT session_id FROM sessions") == [(tower_session,)]
    assert db_rows(tower.db, "SELECT DISTINCT session_id FROM actions") == [(tower_session,)]

    def outcome() -> list[tuple[Any, ...]]:
        return db_rows(tower.db, "SELECT status FROM outcomes WHERE action_id = ?", f"cc-{tool_use}")

    await wait_for(lambda: outcome() == [("succeeded",)], 10)


async def test_no_usable_daemon_exits_2_with_the_reason(tower: Tower, tmp_path: Path) -> None:
    payload = claude_payload("Bash", {"command": "ls"}, session="s-nodaemon")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    for where, why in ((shared, "mode 0700"), (tmp_path / ("x" * 120), "too long")):
        code, out, err = await run_hook(hook_env(tower, tmp_path, TOWER_RUNTIME_DIR=str(where)), payload)
        assert (code, out) == (2, ""), err
        assert why in err and "failing closed" in err
    # Settings the client cannot resolve: refused before any daemon is asked.
    (tmp_path / "bad.toml").write_text('bogus = "x"\n')
    code, out, err = await run_hook(
        hook_env(tower, tmp_path, TOWER_CONFIG=str(tmp_path / "bad.toml")), payload
    )
    assert (code, out) == (2, "")
    assert "bad configuration" in err and "unknown keys" in err


def test_hook_arguments_parse_like_click() -> None:
    assert hookclient.MAX_INPUT_BYTES == hookjson.MAX_INPUT_BYTES
    parsed = hookclient.parse_hook(["claude-code", "--timeout", "7", "--env=prod", "--post", "--agent", "a"])
    assert parsed is not None
    assert (parsed.flavor, parsed.post, parsed.timeout, parsed.text) == (
        "claude-code",
        True,
        7.0,
        {"env": "prod", "agent": "a"},
    )
    post = hookclient.parse_hook(["claude-code-post", "--all-tools", "--connect-timeout=0.5"])
    assert post is not None and (post.post, post.all_tools, post.connect_timeout) == (True, True, 0.5)
    codex = hookclient.parse_hook(["codex"])
    assert codex is not None and (codex.flavor, codex.timeout, codex.connect_timeout) == ("codex", 55.0, 5.0)
    for handed_to_click in (
        ["claude-code", "--help"],
        ["claude-code", "--bogus"],
        ["claude-code", "--timeout"],
        ["claude-code", "--timeout", "soon"],
        ["claude-code", "extra"],
        ["install", "claude-code"],
        [],
    ):
        assert hookclient.parse_hook(handed_to_click) is None, handed_to_click
    # The defaults and options are the click command's.
    for name, flavor in (("claude-code", "claude-code"), ("codex", "codex")):
        cmd = hook_cli.hook.commands[name]
        params = {p.name: p for p in cmd.params}
        assert params["timeout"].default == hookclient.DEFAULT_TIMEOUT_S
        assert params["connect_timeout"].default == hookclient.DEFAULT_CONNECT_TIMEOUT_S
        assert params["agent"].default == flavor
        flags = {o for p in cmd.params for o in p.opts if o != "--help"}
        assert flags == set(hookclient.OPTIONS) | set(hookclient.FLAGS)


async def test_malformed_hook_requests_get_errors(tmp_path: Path) -> None:
    rt = tmp_path / "rt"
    rt.mkdir(mode=0o700)
    d = daemon.Daemon(daemon_socket(rt), idle_timeout=60)
    ready = asyncio.Event()
    task = asyncio.create_task(d.serve(ready.set))
    await asyncio.wait_for(ready.wait(), 10)
    base = {
        "v": 1,
        "op": "hook",
        "flavor": "claude-code",
        "post": False,
        "all_tools": False,
        "timeout": 5.0,
        "connect_timeout": 1.0,
        "url": "ws://127.0.0.1:1",
        "token": "t",
        "env": "dev",
        "agent": "claude-code",
        "hub_key": "",
        "ca": "",
        "size": 0,
    }
    try:
        for over in ({"flavor": "cursor"}, {"size": -1}, {"timeout": "soon"}, {"post": "yes"}, {"size": 10}):
            reader, writer = await asyncio.open_unix_connection(d.socket_path)
            writer.write(json.dumps({**base, **over}).encode() + b"\n")
            if over == {"size": 10}:
                writer.write(b"short")
                writer.write_eof()
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), 15)
            writer.close()
            assert json.loads(line)["type"] == "error", over
        assert not d.shims
    finally:
        d.stopping.set()
        await asyncio.wait_for(task, 15)


async def test_idle_hook_sessions_are_closed_but_left_to_resume(tower: Tower, tmp_path: Path) -> None:
    rt = tmp_path / "rt"
    rt.mkdir(mode=0o700)
    d = daemon.Daemon(daemon_socket(rt), idle_timeout=0.5)
    ready = asyncio.Event()
    task = asyncio.create_task(d.serve(ready.set))
    await asyncio.wait_for(ready.wait(), 10)
    claude = str(uuid.uuid4())
    payload = claude_payload("Bash", {"command": "ls"}, session=claude)
    request = {
        "v": 1,
        "op": "hook",
        "flavor": "claude-code",
        "post": False,
        "all_tools": False,
        "timeout": 10.0,
        "connect_timeout": 3.0,
        "url": tower.url,
        "token": tower.tokens["agent"],
        "env": "dev",
        "agent": "claude-code",
        "hub_key": "",
        "ca": "",
        "size": len(payload),
    }
    try:
        reader, writer = await asyncio.open_unix_connection(d.socket_path)
        writer.write(json.dumps(request).encode() + b"\n" + payload)
        await writer.drain()
        answer = json.loads(await asyncio.wait_for(reader.readline(), 15))
        writer.close()
        assert answer["type"] == "hook" and answer["code"] == 0, answer
        assert decision(answer["stdout"])["hookSpecificOutput"]["permissionDecision"] == "allow"
        assert [e.shim.session_id for e in d.shims.values()] == [f"cc-dev-{claude}"]
        # Unused for the idle timeout: the shim is closed, the tower session left to resume.
        await wait_for(lambda: not d.shims, 15)
        await wait_for(lambda: session_status(tower, f"cc-dev-{claude}") == "disconnected", 10)
    finally:
        d.stopping.set()
        await asyncio.wait_for(task, 15)
