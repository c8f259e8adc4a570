"""`towerctl up` and its demo agents: real hub, real shims, real SQLite, a real process in a pty.

The demo agents must show the product working (sessions in every environment,
reads, writes and deletions, a prod approval that unblocks its agent) while
running nothing on this machine; `up` must bind 127.0.0.1 only, fall back to a
free port when its own is taken, share the local token files between the real
and the demo database, and sign the audit log when the console quits.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import errno
import fcntl
import gc
import logging
import os
import random
import re
import select
import socket
import sqlite3
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import towerctl.demo
import towerctl.demo_episodes
import towerctl.demo_nonprod_agents
import towerctl.demo_prod_agents
import towerctl.demo_script
from agent_shim import Action, Shim
from agent_shim.gate import judge
from agent_shim.policy import policy_for
from agent_shim.types import RISKS
from towerctl.audit.verify import verify_database
from towerctl.cli import cli
from towerctl.cli.common import loop_name
from towerctl.cli.up import Embedded, start_embedded
from towerctl.demo import demo_policy, run_demo_agents
from towerctl.demo_script import PERSONAS, episode_values, fill, persona

from .conftest import Tower, wait_for

SEED = 7
#: Fast enough for a test, slow enough that the hub keeps up: a backlog past the
#: hub's receive queue makes its shutdown wait out websockets' close timeout.
FAST = (0.01, 0.05)


# ------------------------------------------------------------------ demo agents


async def test_demo_agents_fill_every_env_and_a_prod_approval_lets_its_agent_carry_on(tower: Tower) -> None:
    stop = asyncio.Event()
    async with tower.operator("alice") as op:
        demo = asyncio.create_task(
            run_demo_agents(tower.url, tower.tokens["agent"], count=6, stop=stop, seed=SEED, pace=FAST)
        )
        try:
            await wait_for(lambda: {s.env for s in op.sessions.values()} == {"dev", "staging", "prod"})
            await wait_for(lambda: any(a.env == "prod" for a in op.pending.values()))
            await wait_for(lambda: {a.risk for a in op.actions.values()} == set(RISKS))
            assert {a.action.kind for a in op.actions.values()} >= {"shell", "sql"}
            assert any(a.state == "succeeded" for a in op.actions.values()), "reads run without waiting"

            prod = next(a for a in op.pending.values() if a.env == "prod")
            aid, sid = prod.action.action_id, prod.session_id
            assert prod.action.reason and prod.action.target, "demo actions say why and where"
            assert sum(1 for a in op.actions.values() if a.session_id == sid) >= 1
            await op.decide(aid, True)
            await wait_for(lambda: op.actions[aid].state == "succeeded")
            assert op.actions[aid].output_tail, "the simulated outcome is reported"
            # The agent carries on: it proposes something after the approved action.
            await wait_for(
                lambda: any(
                    a.session_id == sid and a.created_at > op.actions[aid].created_at
                    for a in op.actions.values()
                )
            )
        finally:
            stop.set()
            records = await asyncio.wait_for(demo, 10)
    assert [r.error for r in records] == [""] * 6
    assert all(r.proposed > 0 and not r.killed for r in records)


async def test_a_killed_demo_agent_ends_and_the_others_go_on(tower: Tower) -> None:
    stop = asyncio.Event()
    async with tower.operator("admin") as op:
        demo = asyncio.create_task(
            run_demo_agents(tower.url, tower.tokens["agent"], count=3, stop=stop, seed=SEED, pace=FAST)
        )
        try:
            await wait_for(lambda: len(op.sessions) == 3)
            victim = next(s for s in op.sessions.values() if s.agent == "refactor-agent")
            await op.control(victim.session_id, "kill", "demo test")
            await wait_for(lambda: op.sessions[victim.session_id].status == "killed")
            # A killed agent ends at once, idle or not: its connection closes.
            await wait_for(lambda: not op.sessions[victim.session_id].connected)
        finally:
            stop.set()
            records = await asyncio.wait_for(demo, 10)
    by_agent = {r.agent: r for r in records}
    assert by_agent["refactor-agent"].killed
    assert not by_agent["deploy-bot"].killed and by_agent["deploy-bot"].error == ""


def test_the_demo_cannot_execute_anything() -> None:
    """Source-level guarantee: no module that can start a process, no call that could."""
    allowed_imports = {
        "__future__",
        "asyncio",
        "contextlib",
        "dataclasses",
        "logging",
        "random",
        "typing",
        "agent_shim",
        "agent_shim.policy",
        "agent_shim.types",
        "towerctl.demo_script",
        "towerctl.demo_episodes",
        "towerctl.demo_prod_agents",
        "towerctl.demo_nonprod_agents",
    }
    forbidden_names = {
        "subprocess",
        "system",
        "popen",
        "Popen",
        "run_shell",
        "create_subprocess_exec",
        "create_subprocess_shell",
        "execv",
        "execvp",
        "spawn",
        "fork",
        "eval",
        "exec",
        "__import__",
        "import_module",
    }
    demo_modules = (
        towerctl.demo,
        towerctl.demo_script,
        towerctl.demo_episodes,
        towerctl.demo_prod_agents,
        towerctl.demo_nonprod_agents,
    )
    for module in demo_modules:
        assert module.__file__ is not None
        tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert {a.name for a in node.names} <= allowed_imports, ast.dump(node)
            elif isinstance(node, ast.ImportFrom):
                assert node.module in allowed_imports, node.module
            elif isinstance(node, ast.Name):
                assert node.id not in forbidden_names, (module.__name__, node.id)
            elif isinstance(node, ast.Attribute):
                assert node.attr not in forbidden_names, (module.__name__, node.attr)


def test_demo_scripts_are_valid_and_tell_the_story() -> None:
    """Every template fills, every action validates, and the classifier sees the intended mix."""
    assert {persona(i).env for i in range(3)} == {"dev", "staging", "prod"}
    assert persona(len(PERSONAS)).agent == f"{PERSONAS[0].agent}-2"
    rng = random.Random(SEED)
    risks: dict[str, set[str]] = {}
    commands: list[tuple[str, str]] = []
    for who in PERSONAS:
        for episode in who.episodes:
            for step in (*episode.steps, *episode.replan):
                values = episode_values(rng)
                action = Action(
                    action_id="a" * 32,
                    kind=step.kind,
                    command=fill(step.command, values),
                    target=step.target or who.target,
                    reason=fill(step.reason, values),
                    rollback=fill(step.rollback, values),
                    dry_run=fill(step.dry_run, values),
                    declared_risk=step.declared,
                )
                fill(step.output, values), fill(step.fail_output, values)
                ruling = judge(policy_for(demo_policy(), who.env), who.env, action)
                risks.setdefault(who.env, set()).add(ruling.evaluation.risk)
                commands.append((action.command, ruling.evaluation.risk))
    assert risks["prod"] == set(RISKS) and risks["dev"] >= {"read", "destructive"}
    risk_of = dict(commands)
    assert risk_of["rm -rf /var/tmp/build-cache"] == "destructive"
    assert risk_of["terraform apply -auto-approve"] == "destructive"
    assert risk_of["DELETE FROM sessions WHERE created_at < now() - interval '30 days'"] == "destructive"
    assert risk_of["kubectl delete pod web-7d9f8b6c4-m4k7d -n payments"] == "destructive"
    assert risk_of["kubectl rollout restart deploy/web -n payments"] == "write"
    assert risk_of["SELECT count(*) FROM orders"] == "read"
    # The prod rules refuse one scripted step, so a policy denial shows up too.
    canary = Action(action_id="a" * 32, kind="shell", command="kubectl delete namespace payments-canary")
    assert judge(policy_for(demo_policy(), "prod"), "prod", canary).verdict == "deny"


# ------------------------------------------------------------------ start_embedded


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "home"
    monkeypatch.setenv("TOWER_HOME", str(path))
    for var in ("TOWER_URL", "TOWER_TOKEN", "TOWER_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    return path


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


@contextlib.contextmanager
def listening_socket() -> Iterator[int]:
    """A port on 127.0.0.1 that someone else is listening on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield int(sock.getsockname()[1])


def audit_tail(db: Path) -> tuple[str, int, int]:
    """(last event, last record seq, last checkpointed seq) of a closed database."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        event, seq = conn.execute("SELECT event, seq FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        (signed,) = conn.execute("SELECT max(seq) FROM checkpoints").fetchone()
    return str(event), int(seq), int(signed)


async def test_start_embedded_bootstraps_tokens_url_file_and_signs_on_stop(home: Path) -> None:
    emb = await start_embedded(port=0)
    try:
        assert emb.url.startswith("ws://127.0.0.1:")
        assert emb.db == home / "tower.db" and emb.db.exists()
        for role in ("admin", "agent"):
            path = home / "tokens" / f"{role}.token"
            assert mode(path) == 0o600 and path.read_text().strip() == emb.tokens[role]
        assert (home / "hub.url").read_text().strip() == emb.url and mode(home / "hub.url") == 0o600
        async with Shim(emb.url, emb.agent_token, agent="probe", env="dev") as shim:
            assert shim.connected
            # What `towerctl sessions` in another shell does: URL and token from the files.
            result = await asyncio.to_thread(CliRunner().invoke, cli, ["sessions", "--json"])
            assert result.exit_code == 0, result.output
            assert '"probe"' in result.output
    finally:
        await emb.stop()
    assert not (home / "hub.url").exists(), "a stopped hub's URL is retracted"
    event, seq, signed = audit_tail(emb.db)
    assert event == "hub.stopped" and signed == seq, "the final checkpoint covers the last record"
    assert verify_database(emb.db, emb.key).ok


async def test_demo_database_is_separate_and_shares_the_token_files(home: Path) -> None:
    real = await start_embedded(port=0)
    await real.stop()
    admin_file = home / "tokens" / "admin.token"
    admin = admin_file.read_text()
    real_records = audit_tail(real.db)[1]

    demo: Embedded = await start_embedded(port=0, demo=True)
    try:
        assert demo.db == home / "demo.db" and demo.db != real.db
        assert admin_file.read_text() == admin, "the demo never replaces the real token files"
        assert demo.created == []
        async with Shim(demo.url, demo.agent_token, agent="probe", env="prod") as shim:
            assert shim.connected, "the shared agent token is valid in the demo database"
    finally:
        await demo.stop()
    assert audit_tail(real.db)[1] == real_records, "nothing of the demo reached the real database"

    again = await start_embedded(port=0)
    try:
        assert again.admin_token == admin.strip() and again.created == []
    finally:
        await again.stop()


async def test_a_taken_port_falls_back_to_a_free_one_and_says_so(home: Path) -> None:
    with listening_socket() as taken:
        emb = await start_embedded(port=taken)
        try:
            assert emb.port_taken == taken
            assert emb.hub.port != taken and emb.hub.config.host == "127.0.0.1"
            assert any(f"port {taken}" in note and "taken" in note for note in emb.notes)
            async with Shim(emb.url, emb.agent_token, agent="probe", env="dev") as shim:
                assert shim.connected
        finally:
            await emb.stop()
    free = await start_embedded(port=0)
    try:
        assert free.port_taken is None and not any("taken" in n for n in free.notes)
    finally:
        await free.stop()


def test_up_is_listed_and_documented() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0 and re.search(r"\bup\b.*--demo", result.output)
    result = CliRunner().invoke(cli, ["up", "--help"])
    assert result.exit_code == 0
    assert "--demo" in result.output and "--agents" in result.output and "127.0.0.1" in result.output
    assert re.search(r"--loop \[auto\|uvloop\|asyncio\]", result.output)


@pytest.mark.parametrize(("choice", "expected"), [("auto", "uvloop"), ("asyncio", "asyncio")])
def test_up_runs_hub_and_console_on_the_loop_it_is_given(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, choice: str, expected: str
) -> None:
    """``up`` picks its loop like ``serve``: the console and the hub share it."""
    seen: list[str] = []

    async def hub_and_console(**kwargs: object) -> int:
        seen.append(loop_name(asyncio.get_running_loop()))
        return 0

    monkeypatch.setenv("TOWER_HOME", str(tmp_path))
    monkeypatch.setattr("towerctl.cli.up.run_up", hub_and_console)
    root, thresholds = logging.getLogger(), gc.get_threshold()
    handlers = list(root.handlers)
    try:
        result = CliRunner().invoke(cli, ["up", "--loop", choice, "--db", str(tmp_path / "t.db")])
    finally:
        gc.set_threshold(*thresholds)  # up tunes the collector for serving
        for handler in root.handlers[len(handlers) :]:  # and logs to a file
            root.removeHandler(handler)
            handler.close()
    assert result.exit_code == 0, result.output
    assert seen == [expected if sys.platform != "win32" else "asyncio"]


# ------------------------------------------------------------------ the real process

ANSI = re.compile(rb"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|P[^\x1b]*\x1b\\|[@-Z\\-_])")


class Pty:
    """A child process on a pseudo-terminal, with everything it wrote so far."""

    def __init__(self, args: list[str], env: dict[str, str], size: tuple[int, int] = (120, 36)) -> None:
        self.master, slave = os.openpty()
        cols, rows = size
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.proc = subprocess.Popen(
            args, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True, close_fds=True
        )
        os.close(slave)
        self.raw = b""

    @property
    def text(self) -> str:
        return ANSI.sub(b"", self.raw).decode("utf-8", "replace")

    def read_until(self, needle: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while needle not in self.text:
            left = deadline - time.monotonic()
            if left <= 0 or not self._read(left):
                raise AssertionError(f"{needle!r} not seen; screen so far:\n{self.text[-3000:]}")
        return self.text

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 65536)
        except OSError as exc:  # EIO: the child closed the terminal
            if exc.errno == errno.EIO:
                return False
            raise
        self.raw += chunk
        return bool(chunk)

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._read(0.05)
        return self.proc.wait(timeout=max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        os.close(self.master)


def test_up_demo_in_a_terminal_draws_agents_then_q_stops_everything(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOWER_")}
    env.update(TOWER_HOME=str(home), TERM="xterm-256color", COLUMNS="120", LINES="36")
    with listening_socket() as taken:
        term = Pty([sys.executable, "-m", "towerctl.cli", "up", "--demo", "--port", str(taken)], env)
        try:
            screen = term.read_until("deploy-bot", timeout=20)
            assert f"port {taken} on 127.0.0.1 is taken" in screen
            assert "demo database" in screen and "simulated agents" in screen
            # The hub and the console share serve's loop: uvloop, a dependency off Windows.
            assert re.search(r"uvloop\s+event\s+loop", screen), screen[-3000:]
            term.read_until("Pending approvals", timeout=10)
            url = (home / "hub.url").read_text().strip()
            assert url.startswith("ws://127.0.0.1:") and not url.endswith(f":{taken}")
            term.send(b"q")
            assert term.wait(timeout=15) == 0, term.text[-3000:]
        finally:
            term.close()
    assert "hub stopped; audit log signed" in term.text
    assert re.search(r"demo agents proposed \d+ actions", term.text)
    for role in ("admin", "agent"):
        assert mode(home / "tokens" / f"{role}.token") == 0o600
    assert (home / "demo.db").exists() and not (home / "tower.db").exists()
    assert not (home / "hub.url").exists()
    event, seq, signed = audit_tail(home / "demo.db")
    assert event == "hub.stopped" and signed == seq
