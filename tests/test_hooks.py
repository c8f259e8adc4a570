"""Claude Code and Codex hooks, driven the way the agents drive them.

Each hook runs as a real ``python -m towerctl.cli hook …`` process fed the
agent's hook JSON on stdin, against a real hub; operators decide through the
real operator client; outcomes are checked in the hub's SQLite file.

Every test runs twice (the ``hook_mode`` fixture): through the local shim
daemon (the default; one daemon per test in its ``rt`` directory, stopped
after it) and in-process with ``TOWER_NO_DAEMON=1``.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from agent_shim.protocol import ActionEvent
from towerctl.integrations import claude_code, codex
from towerctl.integrations.hookjson import HookInput, merge_hooks, parse_input

from .conftest import Tower, next_event, wait_for

TOWERCTL = [sys.executable, "-m", "towerctl.cli"]
#: What the ``hook_mode`` fixture adds to every hook's environment.
MODE_ENV: dict[str, str] = {}


def daemon_socket(rt: Path) -> str:
    from towerctl.localshim import fastclient

    return str(rt / f"shimd-{fastclient.install_key()}.sock")


async def stop_daemon(rt: Path) -> int | None:
    """Stop the local shim daemon serving ``rt``, if any; wait until it has exited; its pid."""
    from towerctl.localshim import daemon

    reply = await asyncio.to_thread(daemon.request, daemon_socket(rt), "stop", 5.0)
    if reply is None:
        return None
    pid = int(reply["pid"])

    def gone() -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        return state == "Z"

    await wait_for(gone, 15)
    return pid


@pytest.fixture(autouse=True, params=["daemon", "no-daemon"])
async def hook_mode(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    MODE_ENV.clear()
    if request.param == "no-daemon":
        MODE_ENV["TOWER_NO_DAEMON"] = "1"
    try:
        yield str(request.param)
    finally:
        MODE_ENV.clear()
        await stop_daemon(tmp_path / "rt")


def hook_env(tower: Tower, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOWER_")}
    env.update(
        TOWER_HOME=str(tmp_path / "home"),
        TOWER_RUNTIME_DIR=str(tmp_path / "rt"),
        TOWER_URL=tower.url,
        TOWER_TOKEN=tower.tokens["agent"],
        TOWER_ENV="dev",
        **MODE_ENV,
    )
    env.update(extra)
    return env


async def run_hook(
    env: dict[str, str], stdin: bytes, *args: str, agent: str = "claude-code"
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *TOWERCTL,
        "hook",
        agent,
        *args,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def claude_payload(
    tool_name: str,
    tool_input: dict[str, Any],
    *,
    session: str,
    tool_use_id: str | None = None,
    cwd: str = "/home/dev/project",
    event: str = "PreToolUse",
    **more: Any,
) -> bytes:
    """What Claude Code writes on a hook's stdin (fields as of late 2026)."""
    body = {
        "session_id": session,
        "transcript_path": f"/home/dev/.claude/projects/-home-dev-project/{session}.jsonl",
        "cwd": cwd,
        "permission_mode": "default",
        "hook_event_name": event,
        "tool_name": tool_name,
        "tool_input": tool_input,
        "tool_use_id": tool_use_id or f"toolu_01{uuid.uuid4().hex[:22]}",
        **more,
    }
    return json.dumps(body).encode()


def decision(out: str) -> dict[str, Any]:
    data = json.loads(out)
    hso = data["hookSpecificOutput"]
    assert hso["hookEventName"] == "PreToolUse"
    assert isinstance(data, dict)
    return data


def db_rows(db: Path, sql: str, *params: object) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# --------------------------------------------------------------- Claude Code


async def test_allowed_ls_then_post_links_the_outcome(tower: Tower, tmp_path: Path) -> None:
    env = hook_env(tower, tmp_path)
    session = str(uuid.uuid4())
    tool_use = "toolu_01AbCdEfGhIjKlMnOpQrStUv"
    pre = claude_payload(
        "Bash", {"command": "ls -la", "description": "List files"}, session=session, tool_use_id=tool_use
    )
    code, out, err = await run_hook(env, pre)
    assert code == 0, err
    d = decision(out)["hookSpecificOutput"]
    assert d["permissionDecision"] == "allow"
    assert "allowed" in d["permissionDecisionReason"]

    post = claude_payload(
        "Bash",
        {"command": "ls -la", "description": "List files"},
        session=session,
        tool_use_id=tool_use,
        event="PostToolUse",
        cwd="/home/dev/project/sub",  # Claude's cwd moved: the hand-over file keeps the digest right
        tool_response={"stdout": "total 0\nREADME.md", "stderr": "", "interrupted": False, "isImage": False},
    )
    code, out, err = await run_hook(env, post, "--post")
    assert code == 0, err
    action_id = f"cc-{tool_use}"

    def state() -> str:
        rows = db_rows(tower.db, "SELECT state FROM actions WHERE action_id = ?", action_id)
        return str(rows[0][0]) if rows else ""

    await wait_for(lambda: state() == "succeeded", 10)
    (row,) = db_rows(
        tower.db,
        "SELECT a.kind, a.command, a.session_id, o.status, o.output_tail FROM actions a "
        "JOIN outcomes o USING (action_id) WHERE action_id = ?",
        action_id,
    )
    assert row[:2] == ("shell", "ls -la")
    assert row[2] == f"cc-dev-{session}"  # one Claude session = one tower session
    assert row[3] == "succeeded" and "README.md" in row[4]
    events = [e for (e,) in db_rows(tower.db, "SELECT event FROM audit WHERE action_id = ?", action_id)]
    assert events[0] == "action.proposed" and len(events) >= 2


async def test_failed_tool_is_reported_failed(tower: Tower, tmp_path: Path) -> None:
    env = hook_env(tower, tmp_path)
    session = str(uuid.uuid4())
    tool_use = "toolu_01FailFailFailFailFailFa"
    code, out, err = await run_hook(
        env, claude_payload("Read", {"file_path": "/etc/hostname"}, session=session, tool_use_id=tool_use)
    )
    assert code == 0, err
    assert decision(out)["hookSpecificOutput"]["permissionDecision"] == "allow"
    failure = claude_payload(
        "Read",
        {"file_path": "/etc/hostname"},
        session=session,
        tool_use_id=tool_use,
        event="PostToolUseFailure",
        error="EACCES: permission denied",
        is_interrupt=False,
    )
    code, _, err = await run_hook(env, failure)  # the event name alone selects the post handler
    assert code == 0, err

    def status() -> str:
        rows = db_rows(
            tower.db, "SELECT status, output_tail FROM outcomes WHERE action_id = ?", f"cc-{tool_use}"
        )
        return f"{rows[0][0]}:{rows[0][1]}" if rows else ""

    await wait_for(lambda: status().startswith("failed"), 10)
    assert "EACCES" in status()


async def test_prod_terraform_destroy_is_denied_with_the_rules_reason(tower: Tower, tmp_path: Path) -> None:
    env = hook_env(tower, tmp_path, TOWER_ENV="prod")
    payload = claude_payload(
        "Bash", {"command": "terraform destroy -auto-approve", "description": "Tear down"}, session="s-1"
    )
    code, out, err = await run_hook(env, payload)
    assert code == 0, err
    d = decision(out)["hookSpecificOutput"]
    assert d["permissionDecision"] == "deny"
    assert "prod infrastructure is never destroyed by an agent" in d["permissionDecisionReason"]


async def test_ask_waits_for_an_operator_who_approves(tower: Tower, tmp_path: Path) -> None:
    env = hook_env(tower, tmp_path, TOWER_ENV="prod")
    session = str(uuid.uuid4())
    ask = claude_payload("Bash", {"command": "kubectl delete deployment web -n shop"}, session=session)
    read = claude_payload("Grep", {"pattern": "TODO", "path": "/home/dev/project"}, session=session)
    async with tower.operator("alice") as op:
        hook = asyncio.create_task(run_hook(env, ask))
        ev = await next_event(op, lambda m: isinstance(m, ActionEvent) and m.action.state == "pending", 30)
        assert ev.action.action.command == "kubectl delete deployment web -n shop"
        assert ev.action.agent == "claude-code" and ev.action.risk == "destructive"
        # A parallel tool call of the same Claude session waits for the connection, then goes through.
        parallel = asyncio.create_task(run_hook(env, read))
        await op.decide(ev.action.action.action_id, True, reason="rollout verified")
        code, out, err = await asyncio.wait_for(hook, 30)
        assert code == 0, err
        d = decision(out)["hookSpecificOutput"]
        assert d["permissionDecision"] == "allow"
        assert "approved by alice: rollout verified" in d["permissionDecisionReason"]
        code, out, err = await asyncio.wait_for(parallel, 30)
        assert code == 0, err
        assert decision(out)["hookSpecificOutput"]["permissionDecision"] == "allow"
    sessions = db_rows(tower.db, "SELECT DISTINCT session_id FROM actions")
    assert sessions == [(f"cc-prod-{session}",)]


async def test_no_decision_before_the_deadline_is_a_deny(tower: Tower, tmp_path: Path) -> None:
    env = hook_env(tower, tmp_path, TOWER_ENV="prod")
    payload = claude_payload("Bash", {"command": "kubectl delete pod web-1"}, session="s-deadline")
    code, out, err = await run_hook(env, payload, "--timeout", "2")
    assert code == 0, err
    d = decision(out)["hookSpecificOutput"]
    assert d["permissionDecision"] == "deny"
    assert "no operator decided within the hook's 2s deadline" in d["permissionDecisionReason"]


async def test_killed_session_is_denied_and_stops_claude(tower: Tower, tmp_path: Path) -> None:
    env = hook_env(tower, tmp_path)
    session = str(uuid.uuid4())
    code, _, err = await run_hook(env, claude_payload("Bash", {"command": "pwd"}, session=session))
    assert code == 0, err
    async with tower.operator("admin") as op:
        await op.control(f"cc-dev-{session}", "kill", reason="runaway agent")
    code, out, err = await run_hook(env, claude_payload("Bash", {"command": "pwd"}, session=session))
    assert code == 0, err
    data = decision(out)
    assert data["hookSpecificOutput"]["permissionDecision"] == "deny"
    assert data["continue"] is False and "killed" in data["stopReason"]


async def test_hub_down_exits_2_with_the_reason(tower: Tower, tmp_path: Path) -> None:
    env = hook_env(tower, tmp_path, TOWER_URL=f"ws://127.0.0.1:{closed_port()}")
    payload = claude_payload("Bash", {"command": "ls"}, session="s-down")
    code, out, err = await run_hook(env, payload, "--connect-timeout", "0.5")
    assert code == 2
    assert out == ""
    assert "tower unreachable" in err and "failing closed" in err


async def test_malformed_input_exits_2(tower: Tower, tmp_path: Path) -> None:
    env = hook_env(tower, tmp_path)
    for bad in (b"not json", b"", b"[1, 2]", b'{"tool_input": {"command": "ls"}}', b'{"tool_name": 3}'):
        code, out, err = await run_hook(env, bad)
        assert code == 2, (bad, out, err)
        assert out == ""
        assert "bad claude-code hook input" in err


async def test_no_token_exits_2(tower: Tower, tmp_path: Path) -> None:
    env = hook_env(tower, tmp_path)
    del env["TOWER_TOKEN"]
    code, _, err = await run_hook(env, claude_payload("Bash", {"command": "ls"}, session="s-x"))
    assert code == 2
    assert "no agent token" in err


# --------------------------------------------------------------------- Codex


async def test_codex_apply_patch_delete_waits_and_operator_denial_is_returned(
    tower: Tower, tmp_path: Path
) -> None:
    env = hook_env(tower, tmp_path)
    patch = "*** Begin Patch\n*** Delete File: migrations/0001_init.py\n*** End Patch\n"
    payload = json.dumps(
        {
            "session_id": "019a-codex-thread",
            "transcript_path": None,
            "cwd": "/home/dev/project",
            "hook_event_name": "PreToolUse",
            "model": "gpt-5-codex",
            "permission_mode": "default",
            "tool_name": "apply_patch",
            "tool_input": {"command": patch},
            "tool_use_id": "call_9f8e7d6c5b4a",
        }
    ).encode()
    async with tower.operator("bob") as op:
        hook = asyncio.create_task(run_hook(env, payload, agent="codex"))
        ev = await next_event(op, lambda m: isinstance(m, ActionEvent) and m.action.state == "pending", 30)
        assert ev.action.action.command == "delete migrations/0001_init.py"
        assert ev.action.action.action_id == "cx-call_9f8e7d6c5b4a"
        assert ev.action.agent == "codex" and patch in ev.action.action.dry_run
        await op.decide(ev.action.action.action_id, False, reason="keep the migration history")
        code, out, err = await asyncio.wait_for(hook, 30)
    assert code == 0, err
    d = decision(out)["hookSpecificOutput"]
    assert d["permissionDecision"] == "deny"
    assert "keep the migration history" in d["permissionDecisionReason"]


# -------------------------------------------------------- mapping & install


def _inp(tool: str, tool_input: Any, **kw: str) -> HookInput:
    return HookInput(
        event="PreToolUse",
        tool_name=tool,
        tool_input=tool_input,
        session_id=kw.get("session", "s"),
        tool_use_id=kw.get("tool_use_id", "toolu_1"),
        cwd="/w",
    )


def test_claude_tools_map_to_kinds_and_commands() -> None:
    cases = {
        ("Bash", "shell", "git status"): {"command": "git status", "description": "d"},
        ("Write", "file", "write /w/a.txt"): {"file_path": "/w/a.txt", "content": "hello"},
        ("Edit", "file", "edit '/w/my file.py'"): {
            "file_path": "/w/my file.py",
            "old_string": "a",
            "new_string": "b",
        },
        ("MultiEdit", "file", "edit /w/m.py"): {
            "file_path": "/w/m.py",
            "edits": [{"old_string": "x", "new_string": "y"}],
        },
        ("Read", "file", "read /etc/hosts"): {"file_path": "/etc/hosts"},
        ("Glob", "file", "glob '**/*.py' /w"): {"pattern": "**/*.py", "path": "/w"},
        ("WebFetch", "http", "GET https://example.com/x"): {"url": "https://example.com/x", "prompt": "p"},
        ("mcp__github__create_issue", "tool", 'github.create_issue {"body":"b","title":"t"}'): {
            "title": "t",
            "body": "b",
        },
        ("SomeNewTool", "tool", 'SomeNewTool {"a":1}'): {"a": 1},
    }
    for (tool, kind, command), tool_input in cases.items():
        action = claude_code.to_action(_inp(tool, tool_input))
        assert (action.kind, action.command) == (kind, command), tool
        assert action.action_id == "cc-toolu_1"
        # Deterministic: the PostToolUse hook can rebuild the same action.
        assert claude_code.to_action(_inp(tool, tool_input)).digest() == action.digest()
    write = claude_code.to_action(_inp("Write", {"file_path": "/w/a.txt", "content": "hello"}))
    assert "5 characters" in write.dry_run and "hello" in write.dry_run
    edit = claude_code.to_action(
        _inp("Edit", {"file_path": "/w/a", "old_string": "OLD", "new_string": "NEW"})
    )
    assert "--- old\nOLD" in edit.dry_run and "+++ new\nNEW" in edit.dry_run


def test_codex_patch_verbs_and_parse_errors() -> None:
    add = codex.to_action(_inp("apply_patch", {"command": "*** Begin Patch\n*** Add File: a.py\n+x\n"}))
    assert add.command == "write a.py"
    upd = "*** Update File: b.py\n@@\n-x\n+y\n*** Add File: c.py\n"
    assert codex.to_action(_inp("apply_patch", {"command": upd})).command == "edit b.py c.py"
    argv = codex.to_action(_inp("shell", {"command": ["bash", "-lc", "ls -la"]}))
    assert argv.kind == "shell" and argv.command == "bash -lc 'ls -la'"
    long_id = claude_code.to_action(_inp("Bash", {"command": "ls"}, tool_use_id="x" * 200)).action_id
    assert long_id.startswith("cc-h") and len(long_id) <= 80
    assert parse_input(b'{"tool_name": "Bash"}').tool_input == {}


def test_settings_merge_keeps_user_hooks_and_is_idempotent(tmp_path: Path) -> None:
    from towerctl.cli.hook import hook

    settings = tmp_path / ".claude" / "settings.json"
    settings.parent.mkdir()
    mine = {"type": "command", "command": "~/bin/format.sh"}
    settings.write_text(
        json.dumps(
            {
                "model": "opus",
                "permissions": {"deny": ["Read(./.env)"]},
                "hooks": {"PostToolUse": [{"matcher": "Edit|Write", "hooks": [mine]}]},
            }
        )
    )
    runner = CliRunner()
    for _ in range(2):
        result = runner.invoke(hook, ["install", "claude-code", "--settings", str(settings)])
        assert result.exit_code == 0, result.output
    merged = json.loads(settings.read_text())
    assert merged["model"] == "opus" and merged["permissions"] == {"deny": ["Read(./.env)"]}
    pre = merged["hooks"]["PreToolUse"]
    assert len(pre) == 1 and pre[0]["matcher"] == "*"
    assert pre[0]["hooks"][0]["command"].endswith("hook claude-code --timeout 55 || exit 2")
    assert pre[0]["hooks"][0]["timeout"] == 60
    post = merged["hooks"]["PostToolUse"]
    assert post[0] == {"matcher": "Edit|Write", "hooks": [mine]}
    assert len(post) == 2 and "hook claude-code --post" in post[1]["hooks"][0]["command"]
    backups = sorted(p.name for p in settings.parent.iterdir() if ".bak-" in p.name)
    assert len(backups) == 2
    printed = runner.invoke(hook, ["install", "codex", "--print"])
    assert printed.exit_code == 0
    assert (
        "hook codex --timeout 55 || exit 2"
        in json.loads(printed.output)["hooks"]["PreToolUse"][0]["hooks"][0]["command"]
    )
    assert merge_hooks({}, {"PreToolUse": []}, claude_code.is_ours) == {"hooks": {"PreToolUse": []}}
