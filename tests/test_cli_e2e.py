"""The README's flow, as a user runs it: real `towerctl` processes, real signals."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent_shim.action_ids import short_id
from agent_shim.protocol import ActionEvent
from towerctl.operator import OperatorClient

from .conftest import next_event

TOWERCTL = [sys.executable, "-m", "towerctl.cli"]


def cli_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOWER_")}
    env["TOWER_HOME"] = str(home)
    return env


async def towerctl(
    home: Path, *args: str, stdin: bytes | None = None, extra_env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *TOWERCTL,
        *args,
        env={**cli_env(home), **(extra_env or {})},
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


class Served:
    def __init__(
        self, home: Path, proc: asyncio.subprocess.Process, url: str, loop: str = "auto", banner: str = ""
    ) -> None:
        self.home, self.proc, self.url = home, proc, url
        self.loop, self.banner = loop, banner

    @property
    def admin_token(self) -> str:
        return (self.home / "tokens" / "admin.token").read_text().strip()

    def operator(self) -> OperatorClient:
        return OperatorClient(self.url, self.admin_token)


async def start_serve(
    home: Path, *args: str, **popen: Any
) -> tuple[asyncio.subprocess.Process, str, list[str]]:
    """``towerctl serve --port 0 ARGS`` as a child; its URL and the stderr lines
    up to the one that says where it listens (that one last)."""
    proc = await asyncio.create_subprocess_exec(
        *TOWERCTL,
        "serve",
        "--port",
        "0",
        *args,
        env=cli_env(home),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        **popen,
    )
    assert proc.stderr is not None
    said: list[str] = []
    while not said or "listening on " not in said[-1]:
        line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
        assert line, f"serve exited early: {said}"
        said.append(line)
    return proc, said[-1].split("listening on ", 1)[1].split()[0], said


@pytest.fixture(params=["auto", "asyncio"])
async def served(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    """``towerctl serve`` on its default loop (uvloop) and on asyncio's."""
    home = tmp_path / "home"
    proc, url, said = await start_serve(home, "--loop", request.param)
    banner = said[-1]
    try:
        yield Served(home, proc, url, request.param, banner)
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 15)


async def test_serve_runs_on_uvloop_unless_told_otherwise(served: Served) -> None:
    expected = "asyncio" if served.loop == "asyncio" or sys.platform == "win32" else "uvloop"
    assert f"{expected} event loop" in served.banner, served.banner


async def test_exec_waits_then_approve_runs_it(served: Served, tmp_path: Path) -> None:
    victim = tmp_path / "srv-data"
    victim.mkdir()
    async with served.operator() as op:
        exec_task = asyncio.create_task(
            towerctl(served.home, "exec", "--env", "prod", "--", "rm", "-rf", str(victim))
        )
        ev = await next_event(op, lambda m: isinstance(m, ActionEvent) and m.action.state == "pending", 30)
        code, out, err = await towerctl(served.home, "pending", "--json")
        assert code == 0, err
        listed = json.loads(out)
        assert [p["id"] for p in listed] == [ev.action.action.action_id]
        assert listed[0]["risk"] == "destructive" and listed[0]["reasons"]
        assert victim.exists()
        # As a person does it: the plain listing shows each id's end, which names it.
        code, out, err = await towerctl(served.home, "pending")
        assert code == 0, err
        shown = out.split()[0]
        assert shown == short_id(listed[0]["id"])
        code, out, err = await towerctl(served.home, "approve", shown)
        assert code == 0, err
        assert f"approved {listed[0]['id']}" in out
        code, out, err = await asyncio.wait_for(exec_task, 30)
        assert code == 0, err
        assert not victim.exists()
        await next_event(op, lambda m: isinstance(m, ActionEvent) and m.action.state == "succeeded", 30)
    code, out, err = await towerctl(served.home, "audit", "verify")
    assert code == 0, err
    assert "intact" in out


async def test_exec_denied_exits_126_with_reason(served: Served, tmp_path: Path) -> None:
    victim = tmp_path / "keep"
    victim.mkdir()
    async with served.operator() as op:
        exec_task = asyncio.create_task(
            towerctl(served.home, "exec", "--env", "prod", "--", "rm", "-rf", str(victim))
        )
        ev = await next_event(op, lambda m: isinstance(m, ActionEvent) and m.action.state == "pending", 30)
        code, _, err = await towerctl(
            served.home, "deny", ev.action.action.action_id, "--reason", "not during the freeze"
        )
        assert code == 0, err
        code, _, err = await asyncio.wait_for(exec_task, 30)
    assert code == 126
    assert "not during the freeze" in err
    assert victim.exists()


async def test_exec_passes_exit_code_and_tamper_is_detected(served: Served) -> None:
    code, _, _ = await towerctl(served.home, "exec", "--env", "dev", "--", "sh", "-c", "exit 3")
    assert code == 3
    code, out, err = await towerctl(served.home, "audit", "verify", "--json")
    assert json.loads(out)["ok"] is True
    assert code == 0, err
    db = served.home / "tower.db"
    con = sqlite3.connect(db)
    try:
        seq, body = con.execute(
            "SELECT seq, body FROM audit WHERE event = 'action.proposed' LIMIT 1"
        ).fetchone()
        con.execute("UPDATE audit SET body = ? WHERE seq = ?", (body.replace("exit 3", "exit 0"), seq))
        con.commit()
    finally:
        con.close()
    code, _, err = await towerctl(served.home, "audit", "verify")
    assert code != 0
    assert f"record {seq}" in err


async def test_policy_check_and_jsonl(tmp_path: Path) -> None:
    home = tmp_path / "h"
    code, out, _ = await towerctl(
        home, "policy", "check", "--env", "prod", "--kind", "shell", "--", "terraform destroy"
    )
    assert code == 0
    assert "verdict: deny" in out
    lines = (
        b'{"env":"prod","kind":"shell","command":"ls -la"}\n'
        b'{"env":"dev","kind":"sql","command":"DROP TABLE users"}\n'
        b"not json\n"
    )
    code, out, _ = await towerctl(home, "policy", "check", "--jsonl", stdin=lines)
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows[0]["verdict"] == "allow" and rows[0]["risk"] == "read"
    assert rows[1]["risk"] == "destructive" and rows[1]["reasons"]
    assert "error" in rows[2]
    assert code == 1


async def test_every_command_has_help(tmp_path: Path) -> None:
    from towerctl.cli import COMMANDS

    for name in COMMANDS:
        code, out, err = await towerctl(tmp_path, name, "--help")
        assert code == 0, (name, err)
        assert "Usage:" in out


async def test_sigterm_to_the_whole_group_stops_serve_cleanly(tmp_path: Path) -> None:
    """systemd's stop (KillMode=control-group) and `timeout` send SIGTERM to every
    process of the service at once, the writer process included. The hub must
    still stop as it does on its own SIGTERM: exit 0, no traceback, the log
    closed by `hub.stopped` under a signed checkpoint."""
    home = tmp_path / "home"
    proc, _, _ = await start_serve(home, "--audit-check-every", "0", start_new_session=True)
    assert proc.stderr is not None
    os.killpg(proc.pid, signal.SIGTERM)
    rest = (await asyncio.wait_for(proc.stderr.read(), 30)).decode()
    assert await asyncio.wait_for(proc.wait(), 30) == 0, rest
    assert "Traceback" not in rest, rest
    with contextlib.closing(sqlite3.connect(home / "tower.db")) as conn:
        event, seq = conn.execute("SELECT event, seq FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        (signed,) = conn.execute("SELECT max(seq) FROM checkpoints").fetchone()
    assert (event, signed) == ("hub.stopped", seq)


async def test_exec_fails_closed_when_the_tower_cannot_be_reached(tmp_path: Path) -> None:
    """Even a command the policy allows: a one-shot process that never reached the
    tower would run it unrecorded, its proposal dying with it."""
    from .test_hooks import closed_port

    marker = tmp_path / "ran"
    env = {
        "TOWER_URL": f"ws://127.0.0.1:{closed_port()}",
        "TOWER_TOKEN": "twr_x",
        "TOWER_CONNECT_TIMEOUT": "0.5",
        "TOWER_NO_DAEMON": "1",  # in-process; the daemon's refusal is tested with the gates
    }
    code, out, err = await towerctl(
        tmp_path / "home", "exec", "--env", "dev", "--", "touch", str(marker), extra_env=env
    )
    assert code == 126 and out == "", err
    assert "tower unreachable" in err and "failing closed" in err
    assert "retrying" not in err  # said once, in the refusal
    assert not marker.exists()
