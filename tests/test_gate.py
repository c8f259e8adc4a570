"""Shell gates, driven as an agent's shell drives them: a wrapper first on PATH.

A stub ``kubectl`` (a tiny sh script that prints its argv and exits with
``$STUB_EXIT``) sits later on PATH; the installed wrapper must run it with the
identical argv and exit code once the tower allows it, and never otherwise.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest

from agent_shim.protocol import ActionEvent
from towerctl.integrations.gate_wrapper import MARKER, find_real, install, uninstall

from .conftest import Tower, next_event, wait_for
from .test_hooks import closed_port

STUB = """#!/bin/sh
for a in "$@"; do printf '<%s>\\n' "$a"; done
exit "${STUB_EXIT:-0}"
"""


@pytest.fixture
def stub_dir(tmp_path: Path) -> Path:
    d = tmp_path / "realbin"
    d.mkdir()
    (d / "kubectl").write_text(STUB)
    (d / "kubectl").chmod(0o755)
    return d


async def towerctl(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "towerctl.cli", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def shell(command: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *command, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def agent_env(tower: Tower, tmp_path: Path, path: list[Path], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOWER_")}
    env.update(
        TOWER_HOME=str(tmp_path / "home"),
        TOWER_URL=tower.url,
        TOWER_TOKEN=tower.tokens["agent"],
        TOWER_ENV="dev",
        TOWER_AGENT="deploy-bot",
        # The in-process path (the wrapper's fast client hands over to gate_wrapper);
        # the local shim daemon path is tested in test_localshim.py.
        TOWER_NO_DAEMON="1",
        PATH=os.pathsep.join([*map(str, path), "/usr/bin", "/bin"]),
    )
    env.update(extra)
    return env


def rows(db: Path, sql: str, *params: object) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def argv_seen(out: str) -> list[str]:
    return [line[1:-1] for line in out.splitlines()]


async def test_install_cli_and_allowed_read_runs_the_real_tool(
    tower: Tower, tmp_path: Path, stub_dir: Path
) -> None:
    gates = tmp_path / "gates"
    env = agent_env(tower, tmp_path, [gates, stub_dir], STUB_EXIT="7")
    code, out, err = await towerctl("gate", "install", "--dir", str(gates), "kubectl", "terraform", env=env)
    assert code == 0, err
    assert f"{gates / 'kubectl'}  -> {stub_dir / 'kubectl'}" in out
    wrapper = (gates / "kubectl").read_text()
    assert wrapper.startswith("#!/bin/sh\n") and MARKER in wrapper and sys.executable in wrapper

    args = ["get", "pods", "-n", "shop", "--selector", "app=web shop", "-o", "json"]
    code, out, err = await shell(["kubectl", *args], env)
    assert code == 7, err  # the stub's own exit code
    assert argv_seen(out) == args  # identical argv, the quoting intact
    # exec mode: "started" is the last thing the gate can report before it becomes kubectl.
    await wait_for(lambda: rows(tower.db, "SELECT state FROM actions") == [("running",)], 10)
    ((kind, command, agent),) = rows(
        tower.db, "SELECT a.kind, a.command, s.agent FROM actions a JOIN sessions s USING (session_id)"
    )
    assert kind == "k8s" and agent == "deploy-bot"
    assert command == "kubectl get pods -n shop --selector 'app=web shop' -o json"


async def test_destructive_call_waits_for_approval_then_runs(
    tower: Tower, tmp_path: Path, stub_dir: Path
) -> None:
    gates = tmp_path / "gates"
    install(gates, ["kubectl"])
    env = agent_env(tower, tmp_path, [gates, stub_dir], TOWER_ENV="prod")
    async with tower.operator("alice") as op:
        agent = asyncio.create_task(shell(["kubectl", "delete", "deployment", "web"], env))
        ev = await next_event(op, lambda m: isinstance(m, ActionEvent) and m.action.state == "pending", 30)
        assert ev.action.action.command == "kubectl delete deployment web"
        assert ev.action.action.kind == "k8s" and ev.action.risk == "destructive"
        assert not agent.done()
        await op.decide(ev.action.action.action_id, True, reason="rollback to v41 agreed")
        code, out, err = await asyncio.wait_for(agent, 30)
    assert code == 0, err
    assert argv_seen(out) == ["delete", "deployment", "web"]
    assert "waiting for an operator's approval" in err


async def test_denials_exit_126_and_the_tool_never_runs(tower: Tower, tmp_path: Path, stub_dir: Path) -> None:
    gates = tmp_path / "gates"
    install(gates, ["kubectl"])
    env = agent_env(tower, tmp_path, [gates, stub_dir], TOWER_ENV="prod")
    code, out, err = await shell(["kubectl", "delete", "namespace", "prod"], env)
    assert code == 126
    assert out == ""
    assert "never by an agent" in err  # the prod rule's reason
    async with tower.operator("bob") as op:
        agent = asyncio.create_task(shell(["kubectl", "scale", "deploy/web", "--replicas=0"], env))
        ev = await next_event(op, lambda m: isinstance(m, ActionEvent) and m.action.state == "pending", 30)
        await op.decide(ev.action.action.action_id, False, reason="not during the sale")
        code, out, err = await asyncio.wait_for(agent, 30)
    assert code == 126 and out == ""
    assert "denied by bob: not during the sale" in err
    down = dict(
        env, TOWER_URL=f"ws://127.0.0.1:{closed_port()}", TOWER_CONNECT_TIMEOUT="0.5", TOWER_ENV="dev"
    )
    code, out, err = await shell(["kubectl", "get", "pods"], down)
    assert code == 126 and out == ""
    assert "tower unreachable" in err


async def test_path_self_removal_never_recurses(tower: Tower, tmp_path: Path, stub_dir: Path) -> None:
    gates, other = tmp_path / "gates", tmp_path / "gates2"
    install(gates, ["kubectl"])
    install(other, ["kubectl"])
    # Two gate directories ahead of the real tool: each wrapper skips the other's.
    env = agent_env(tower, tmp_path, [gates, other, stub_dir])
    code, out, err = await shell(["kubectl", "version", "--client"], env)
    assert code == 0, err
    assert argv_seen(out) == ["version", "--client"]
    await wait_for(lambda: bool(rows(tower.db, "SELECT action_id FROM actions")), 10)
    assert len(rows(tower.db, "SELECT action_id FROM actions")) == 1  # gated once, not twice
    # Only the wrapper itself on PATH: refuse clearly instead of exec'ing ourselves forever.
    env = agent_env(tower, tmp_path, [gates])
    env["PATH"] = str(gates)
    code, out, err = await shell([str(gates / "kubectl"), "get", "pods"], env)
    assert code == 126
    assert "the only kubectl on PATH is the towerctl wrapper itself" in err
    lookup = find_real("kubectl", f"{gates}/", os.pathsep.join([f"{gates}/.", str(other), str(stub_dir)]))
    assert lookup.real == str(stub_dir / "kubectl")
    assert str(gates) not in lookup.path.split(os.pathsep)


async def test_wait_mode_reports_the_exit_code(tower: Tower, tmp_path: Path, stub_dir: Path) -> None:
    gates = tmp_path / "gates"
    install(gates, ["kubectl"], mode="wait")
    env = agent_env(tower, tmp_path, [gates, stub_dir], STUB_EXIT="3")
    code, out, err = await shell(["kubectl", "rollout", "status", "deploy/web"], env)
    assert code == 3, err
    assert argv_seen(out) == ["rollout", "status", "deploy/web"]

    def outcome() -> list[tuple[Any, ...]]:
        return rows(tower.db, "SELECT a.state, o.exit_code FROM actions a JOIN outcomes o USING (action_id)")

    await wait_for(lambda: bool(outcome()), 10)
    assert outcome() == [("failed", 3)]


def test_uninstall_removes_only_wrappers_and_install_refuses_foreign_files(tmp_path: Path) -> None:
    gates = tmp_path / "gates"
    gates.mkdir()
    (gates / "helm").write_text("#!/bin/sh\necho mine\n")
    with pytest.raises(Exception, match="not a towerctl wrapper"):
        install(gates, ["helm"])
    with pytest.raises(Exception, match="not a plain command name"):
        install(gates, ["../kubectl"])
    install(gates, ["kubectl", "aws"])
    assert sorted(p.name for p in uninstall(gates)) == ["aws", "kubectl"]
    assert sorted(p.name for p in gates.iterdir()) == ["helm"]
