"""The MCP gate, driven by the official ``mcp`` SDK's own client.

In-process: ``Client(gate.build_server())`` in front of the fixture upstream
(``tests/mcp_upstream_fixture.py``), also in-process. Over real stdio:
``python -m towerctl.cli mcp-gate … -- python tests/mcp_upstream_fixture.py``
spawned by ``Client(StdioServerParameters(...))``, in both protocol eras
(``server/discover`` and the ``initialize`` handshake). A real hub, a real
shim, operators deciding through the real operator client; the fixture
records every call it receives in a file, which is how a denied call is shown
never to have reached it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp")

from mcp import Client, StdioServerParameters
from mcp_types import CallToolResult, TextContent

from agent_shim import Shim
from agent_shim.errors import ActionDenied
from agent_shim.policy import EnvPolicy, Rule
from agent_shim.protocol import ActionEvent
from towerctl.integrations.mcp_gate import (
    ToolGate,
    approved_arguments,
    no_roots,
    server_name,
    upstream_env,
)

from .conftest import Tower, next_event, wait_for
from .mcp_upstream_fixture import NAME, build, calls

FIXTURE = str(Path(__file__).with_name("mcp_upstream_fixture.py"))
TOOLS = ["read_file", "delete_table", "echo", "hang", "broken_read", "list_roots"]


def text(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


def db_rows(db: Path, sql: str, *params: object) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def action_state(tower: Tower, command: str) -> str:
    rows = db_rows(tower.db, "SELECT state FROM actions WHERE command = ?", command)
    return str(rows[-1][0]) if rows else ""


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def pending(m: Any) -> bool:
    return isinstance(m, ActionEvent) and m.action.state == "pending"


@contextlib.asynccontextmanager
async def gate_in_process(
    url: str, token: str, env: str, log: Path, *, connect_timeout: float = 5.0
) -> AsyncIterator[Client]:
    """The SDK client talking in-process to a gate in front of the in-process fixture.

    The shim connects in the background, as in ``serve_stdio``: calls wait for it.
    """
    shim = Shim(url, token, agent="mcp-test", env=env, connect_timeout=connect_timeout)
    starting = asyncio.create_task(shim.start())
    try:
        async with Client(build(log), list_roots_callback=no_roots, cache=None) as upstream:
            gate = ToolGate(
                upstream=upstream, shim=shim, server=NAME, url=url, connect_timeout=connect_timeout
            )
            async with Client(gate.build_server()) as client:
                yield client
    finally:
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await starting
        await shim.close()


def gate_params(url: str, token: str, env: str, home: Path, log: Path, *extra: str) -> StdioServerParameters:
    """How an MCP host would start the gate: command + args + the server config's env."""
    return StdioServerParameters(
        command=sys.executable,
        args=[
            "-m", "towerctl.cli", "mcp-gate",
            "--url", url, "--token", token, "--env", env, *extra,
            "--", sys.executable, FIXTURE,
        ],
        env={"TOWER_HOME": str(home), "MCP_FIXTURE_LOG": str(log)},
    )  # fmt: skip


# ------------------------------------------------------------------ pure parts


def test_pure_helpers() -> None:
    assert server_name("fixture db/v2") == "fixture-db-v2"
    assert server_name("   ") == "mcp"
    env = upstream_env({"TOWER_TOKEN": "secret", "TOWER_URL": "ws://x", "GITHUB_TOKEN": "g", "PATH": "/bin"})
    assert env == {"GITHUB_TOKEN": "g", "PATH": "/bin"}
    assert approved_arguments('db.echo {"text":"hi"}', "db.echo") == {"text": "hi"}
    for bad in ('db.other {"text":"hi"}', "db.echo [1]", "db.echo {oops", "db.echo"):
        with pytest.raises(ActionDenied):
            approved_arguments(bad, "db.echo")


# ------------------------------------------------------------------ in-process


async def test_in_process_lists_the_upstream_tools_and_forwards_an_allowed_read(
    tower: Tower, tmp_path: Path
) -> None:
    log = tmp_path / "calls.jsonl"
    async with Client(build(tmp_path / "direct.jsonl")) as direct:
        upstream_tools = (await direct.list_tools()).tools
    async with gate_in_process(tower.url, tower.tokens["agent"], "dev", log) as client:
        listed = (await client.list_tools()).tools
        assert [t.name for t in listed] == TOOLS
        assert [t.model_dump() for t in listed] == [t.model_dump() for t in upstream_tools]

        result = await asyncio.wait_for(client.call_tool("read_file", {"path": "/srv/app/README"}), 30)
        assert not result.is_error, text(result)
        assert text(result) == "contents of /srv/app/README"

        failing = await asyncio.wait_for(client.call_tool("broken_read", {"path": "/srv/x"}), 30)
        assert failing.is_error and "disk on fire" in text(failing)

        # The upstream asks the gate for roots mid-call: answered (none shared), never left hanging.
        roots = await asyncio.wait_for(client.call_tool("list_roots", {}), 30)
        assert not roots.is_error, text(roots)
        assert text(roots) == "0 roots"

    assert calls(log) == [
        {"tool": "read_file", "args": {"path": "/srv/app/README"}},
        {"tool": "broken_read", "args": {"path": "/srv/x"}},
        {"tool": "list_roots", "args": {}},
    ]
    command = 'fixture-db.read_file {"path":"/srv/app/README"}'
    await wait_for(lambda: action_state(tower, command) == "succeeded", 10)
    rows = db_rows(tower.db, "SELECT kind, target, risk FROM actions WHERE command = ?", command)
    assert rows == [("tool", NAME, "read")]
    await wait_for(lambda: action_state(tower, 'fixture-db.broken_read {"path":"/srv/x"}') == "failed", 10)


async def test_in_process_policy_rule_denies_and_the_upstream_never_sees_it(
    tower: Tower, tmp_path: Path
) -> None:
    await tower.set_policy(
        "dev",
        EnvPolicy(
            write="allow",
            rules=(
                Rule(
                    kind="tool",
                    match="fixture-db.delete_table*",
                    verdict="deny",
                    reason="tables are dropped by migrations only",
                ),
            ),
        ),
    )
    log = tmp_path / "calls.jsonl"
    async with gate_in_process(tower.url, tower.tokens["agent"], "dev", log) as client:
        result = await asyncio.wait_for(client.call_tool("delete_table", {"table": "users"}), 30)
        assert result.is_error
        assert "denied by policy" in text(result)
        assert "tables are dropped by migrations only" in text(result)
        # The gate still works after a denial.
        ok = await asyncio.wait_for(client.call_tool("echo", {"text": "still here"}), 30)
        assert not ok.is_error and text(ok) == "still here"
    assert [c["tool"] for c in calls(log)] == ["echo"]
    await wait_for(lambda: action_state(tower, 'fixture-db.delete_table {"table":"users"}') == "denied", 10)


async def test_in_process_asked_call_is_forwarded_once_an_operator_approves(
    tower: Tower, tmp_path: Path
) -> None:
    log = tmp_path / "calls.jsonl"
    async with (
        tower.operator("alice") as op,
        gate_in_process(tower.url, tower.tokens["agent"], "dev", log) as client,
    ):
        call = asyncio.create_task(client.call_tool("delete_table", {"table": "sessions_old"}))
        ev = await next_event(op, pending, 30)
        assert ev.action.action.command == 'fixture-db.delete_table {"table":"sessions_old"}'
        assert ev.action.action.kind == "tool" and ev.action.action.target == NAME
        assert ev.action.risk == "destructive"
        assert calls(log) == []  # nothing reaches the upstream while the operator decides
        await op.decide(ev.action.action.action_id, True, reason="table is unused since v3")
        result = await asyncio.wait_for(call, 30)
    assert not result.is_error, text(result)
    assert text(result) == "dropped sessions_old"
    assert calls(log) == [{"tool": "delete_table", "args": {"table": "sessions_old"}}]
    command = 'fixture-db.delete_table {"table":"sessions_old"}'
    await wait_for(lambda: action_state(tower, command) == "succeeded", 10)
    assert db_rows(tower.db, "SELECT operator, verdict FROM decisions") == [("alice", "approved")]


async def test_in_process_call_cancelled_by_the_host_is_reported_failed(tower: Tower, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    async with gate_in_process(tower.url, tower.tokens["agent"], "dev", log) as client:
        call = asyncio.create_task(client.call_tool("hang", {"reason": "slow backend"}))
        await wait_for(lambda: calls(log) != [], 10)  # allowed, forwarded, now running upstream
        call.cancel()  # what a host's tool timeout does
        with pytest.raises(asyncio.CancelledError):
            await call
        ok = await asyncio.wait_for(client.call_tool("echo", {"text": "next"}), 30)
        assert text(ok) == "next"
    command = 'fixture-db.hang {"reason":"slow backend"}'
    await wait_for(lambda: action_state(tower, command) == "failed", 10)
    rows = db_rows(
        tower.db,
        "SELECT o.status FROM outcomes o JOIN actions a USING (action_id) WHERE a.command = ?",
        command,
    )
    assert rows == [("failed",)]


async def test_in_process_hub_unreachable_is_an_error_result_not_a_hang(tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    url = f"ws://127.0.0.1:{closed_port()}"
    async with gate_in_process(url, "no-hub-here", "dev", log, connect_timeout=0.3) as client:
        result = await asyncio.wait_for(client.call_tool("read_file", {"path": "/etc/hosts"}), 15)
    assert result.is_error
    assert "tower unreachable" in text(result) and "failing closed" in text(result)
    assert calls(log) == []


async def test_in_process_no_shim_refuses_every_call(tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    async with Client(build(log), cache=None) as upstream:
        gate = ToolGate(upstream=upstream, shim=None, server=NAME, refusal="no agent token")
        async with Client(gate.build_server()) as client:
            assert [t.name for t in (await client.list_tools()).tools] == TOOLS
            result = await client.call_tool("echo", {"text": "x"})
    assert result.is_error and "no agent token" in text(result)
    assert calls(log) == []


# ------------------------------------------------------------------ real stdio


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_stdio_gate_allows_reads_and_operators_decide_the_rest(
    tower: Tower, tmp_path: Path, mode: str
) -> None:
    """The host's view: spawn the gate, list, call; prod reads run, changes wait for a human."""
    log = tmp_path / "calls.jsonl"
    params = gate_params(tower.url, tower.tokens["agent"], "prod", tmp_path / "home", log)
    async with (
        tower.operator("alice") as op,
        Client(params, mode=mode, read_timeout_seconds=60) as client,
    ):
        assert client.protocol_version == ("2025-11-25" if mode == "legacy" else "2026-07-28")
        assert [t.name for t in (await client.list_tools()).tools] == TOOLS

        result = await asyncio.wait_for(client.call_tool("read_file", {"path": "/etc/app.conf"}), 30)
        assert not result.is_error, text(result)
        assert text(result) == "contents of /etc/app.conf"

        # prod + destructive: asked; the operator denies; the model reads the reason.
        denied = asyncio.create_task(client.call_tool("delete_table", {"table": "orders"}))
        ev = await next_event(op, pending, 30)
        assert ev.action.action.command == 'fixture-db.delete_table {"table":"orders"}'
        assert ev.action.agent == "mcp-fixture-db" and ev.action.risk == "destructive"
        await op.decide(ev.action.action.action_id, False, reason="orders is the revenue table")
        result = await asyncio.wait_for(denied, 30)
        assert result.is_error
        assert "denied by alice" in text(result) and "orders is the revenue table" in text(result)

        # prod + write (an unknown tool): asked; approved; forwarded with the approved arguments.
        approved = asyncio.create_task(client.call_tool("echo", {"text": "ship it", "times": 2}))
        ev = await next_event(op, pending, 30)
        assert ev.action.action.command == 'fixture-db.echo {"text":"ship it","times":2}'
        await op.decide(ev.action.action.action_id, True, reason="ok")
        result = await asyncio.wait_for(approved, 30)
        assert not result.is_error, text(result)
        assert text(result) == "ship it ship it"

    assert calls(log) == [
        {"tool": "read_file", "args": {"path": "/etc/app.conf"}},
        {"tool": "echo", "args": {"text": "ship it", "times": 2}},
    ]
    await wait_for(
        lambda: action_state(tower, 'fixture-db.read_file {"path":"/etc/app.conf"}') == "succeeded", 10
    )
    await wait_for(
        lambda: action_state(tower, 'fixture-db.echo {"text":"ship it","times":2}') == "succeeded", 10
    )
    assert action_state(tower, 'fixture-db.delete_table {"table":"orders"}') == "denied"


async def test_stdio_gate_with_the_hub_down_answers_an_error_result(tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    url = f"ws://127.0.0.1:{closed_port()}"
    params = gate_params(url, "tok", "dev", tmp_path / "home", log, "--connect-timeout", "0.5")
    async with Client(params, read_timeout_seconds=30) as client:
        assert [t.name for t in (await client.list_tools()).tools] == TOOLS
        result = await asyncio.wait_for(client.call_tool("read_file", {"path": "/etc/hosts"}), 20)
    assert result.is_error
    assert "tower unreachable" in text(result) and "failing closed" in text(result)
    assert calls(log) == []


_META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientInfo": {"name": "raw-test", "version": "0"},
    "io.modelcontextprotocol/clientCapabilities": {},
}
_MODERN = [
    {"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": _META}},
    {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": "x"}, "_meta": _META},
    },
]
_LEGACY = [
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"},
        },
    },
    {"jsonrpc": "2.0", "method": "notifications/initialized"},
    {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": "x"}},
    },
]


async def raw_exchange(home: Path, log: Path, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """Write JSON-RPC lines to a gate started like a host would (scrubbed env); the answer to id 2."""
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "towerctl.cli", "mcp-gate", "--env", "dev", "--", sys.executable, FIXTURE],
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={"PATH": "/usr/bin:/bin", "HOME": str(home), "MCP_FIXTURE_LOG": str(log)},
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(b"".join(json.dumps(m).encode() + b"\n" for m in messages))
        await proc.stdin.drain()
        while True:
            answer = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
            if answer.get("id") == 2:
                return dict(answer)
    finally:
        proc.stdin.close()
        await asyncio.wait_for(proc.wait(), 30)


@pytest.mark.parametrize("era", ["2026-07-28", "initialize"])
async def test_stdio_gate_without_a_token_refuses_on_the_wire(tmp_path: Path, era: str) -> None:
    """No TOWER_* reaches the gate (a host's scrubbed env, no flags): each call is refused with the reason.

    On the wire: a 2026-07-28 session's error result carries ``resultType: complete``; a
    handshake-era one is the plain ``isError`` result.
    """
    log = tmp_path / "calls.jsonl"
    (tmp_path / "home").mkdir()
    answer = await raw_exchange(tmp_path / "home", log, _MODERN if era != "initialize" else _LEGACY)
    result = answer["result"]
    assert result["isError"] is True
    assert "no agent token" in result["content"][0]["text"]
    if era == "initialize":
        assert "resultType" not in result
    else:
        assert result["resultType"] == "complete"
    assert calls(log) == []


async def test_an_upstream_that_cannot_start_exits_non_zero_with_the_reason(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "towerctl.cli", "mcp-gate", "--token", "t", "--", str(tmp_path / "missing")],
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    assert out == b""  # nothing but MCP ever goes to stdout
    assert b"cannot start the upstream" in err and b"missing" in err


async def test_in_process_refused_token_is_an_error_result_at_once(tower: Tower, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    async with gate_in_process(tower.url, "not-a-token", "dev", log, connect_timeout=20) as client:
        result = await asyncio.wait_for(client.call_tool("read_file", {"path": "/etc/hosts"}), 10)
    assert result.is_error
    assert "hub refused the connection: HTTP 401" in text(result) and "failing closed" in text(result)
    assert calls(log) == []
