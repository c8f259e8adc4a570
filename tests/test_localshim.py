"""The local shim daemon and its fast client, driven as an agent's shell drives them.

Real hub (the ``tower`` fixture), real SQLite, real unix sockets and real
subprocesses: the installed wrapper runs the stdlib-only fast client, which
starts (or reuses) the daemon, which holds one tower session per settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent_shim.protocol import ActionEvent
from towerctl import config
from towerctl.integrations import gate_install, gate_lookup, gate_wrapper
from towerctl.integrations.gate_wrapper import install
from towerctl.localshim import daemon as shimd
from towerctl.localshim import fastclient

from .conftest import Tower, next_event, wait_for
from .test_gate import agent_env, argv_seen, rows, shell
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


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, 0)
            return True
        return False
    return state != "Z"


def _private_tmp() -> Path:
    d = Path(tempfile.mkdtemp(prefix="tls-", dir="/tmp"))
    d.chmod(0o700)
    return d


def _exists(path: str | Path) -> bool:
    return os.path.exists(path)


def _daemons(sock: str) -> list[Path]:
    return [
        p
        for p in Path("/proc").iterdir()
        if p.name.isdigit()
        and _alive(int(p.name))
        and sock.encode() in _cmdline(p)
        and b"towerctl.localshim.daemon" in _cmdline(p)
    ]


def _private_socket(path: str) -> bool:
    sock = Path(path)
    return sock.is_socket() and sock.stat().st_mode & 0o777 == 0o600


@pytest.fixture
async def rt() -> AsyncIterator[Path]:
    """A short private runtime dir (sun_path is ~100 bytes); any daemon in it is stopped after."""
    d = _private_tmp()
    try:
        yield d
    finally:
        sock = fastclient_socket(d)
        reply = await asyncio.to_thread(shimd.request, sock, "stop", 5.0)
        if reply is not None:
            pid = int(reply["pid"])
            await wait_for(lambda: not _alive(pid), 15)
        shutil.rmtree(d, ignore_errors=True)


def fastclient_socket(directory: Path) -> str:
    return os.path.join(directory, f"shimd-{fastclient.install_key()}.sock")


def gate_env(tower: Tower, tmp_path: Path, rt: Path, path: list[Path], **extra: str) -> dict[str, str]:
    env = agent_env(tower, tmp_path, path, TOWER_RUNTIME_DIR=str(rt), **extra)
    if "TOWER_NO_DAEMON" not in extra:
        del env["TOWER_NO_DAEMON"]
    return env


def sessions_of_actions(db: Path) -> set[str]:
    return {r[0] for r in rows(db, "SELECT session_id FROM actions")}


async def test_allowed_reads_exec_the_real_tool_over_one_reused_session(
    tower: Tower, tmp_path: Path, stub_dir: Path, rt: Path
) -> None:
    gates = tmp_path / "gates"
    install(gates, ["kubectl"])
    wrapper = (gates / "kubectl").read_text()
    assert " -I -S -c " in wrapper and "fastclient" in wrapper
    env = gate_env(tower, tmp_path, rt, [gates, stub_dir], STUB_EXIT="7")
    args = ["get", "pods", "-n", "shop", "--selector", "app=web shop", "-o", "json"]
    code, out, err = await shell(["kubectl", *args], env)
    assert code == 7, err
    assert argv_seen(out) == args
    code, out, err = await shell(["kubectl", "get", "nodes"], env)
    assert code == 7, err
    assert argv_seen(out) == ["get", "nodes"]
    await wait_for(lambda: rows(tower.db, "SELECT state FROM actions") == [("running",), ("running",)], 10)
    commands = {r[0] for r in rows(tower.db, "SELECT command FROM actions")}
    assert commands == {"kubectl get pods -n shop --selector 'app=web shop' -o json", "kubectl get nodes"}
    # Both calls went through one tower session held by the daemon.
    assert len(sessions_of_actions(tower.db)) == 1
    ((agent, kind_count),) = rows(
        tower.db, "SELECT s.agent, COUNT(*) FROM actions a JOIN sessions s USING (session_id) GROUP BY 1"
    )
    assert agent == "deploy-bot" and kind_count == 2
    assert len(rows(tower.db, "SELECT session_id FROM sessions")) == 1
    # The socket is private.
    assert _private_socket(fastclient_socket(rt))


async def test_destructive_call_waits_for_an_operator_then_runs(
    tower: Tower, tmp_path: Path, stub_dir: Path, rt: Path
) -> None:
    gates = tmp_path / "gates"
    install(gates, ["kubectl"])
    env = gate_env(tower, tmp_path, rt, [gates, stub_dir], TOWER_ENV="prod")
    async with tower.operator("alice") as op:
        agent = asyncio.create_task(shell(["kubectl", "delete", "deployment", "web"], env))
        ev = await next_event(op, lambda m: isinstance(m, ActionEvent) and m.action.state == "pending", 30)
        assert ev.action.action.command == "kubectl delete deployment web"
        assert ev.action.risk == "destructive" and not agent.done()
        await op.decide(ev.action.action.action_id, True, reason="rollback agreed")
        code, out, err = await asyncio.wait_for(agent, 30)
    assert code == 0, err
    assert argv_seen(out) == ["delete", "deployment", "web"]
    assert "waiting for an operator's approval" in err


async def test_denials_and_an_unreachable_hub_exit_126(
    tower: Tower, tmp_path: Path, stub_dir: Path, rt: Path
) -> None:
    gates = tmp_path / "gates"
    install(gates, ["kubectl"])
    env = gate_env(tower, tmp_path, rt, [gates, stub_dir], TOWER_ENV="prod")
    code, out, err = await shell(["kubectl", "delete", "namespace", "prod"], env)
    assert (code, out) == (126, "")
    assert "never by an agent" in err
    async with tower.operator("bob") as op:
        agent = asyncio.create_task(shell(["kubectl", "scale", "deploy/web", "--replicas=0"], env))
        ev = await next_event(op, lambda m: isinstance(m, ActionEvent) and m.action.state == "pending", 30)
        await op.decide(ev.action.action.action_id, False, reason="not during the sale")
        code, out, err = await asyncio.wait_for(agent, 30)
    assert (code, out) == (126, "")
    assert "denied by bob: not during the sale" in err
    down = dict(
        env, TOWER_URL=f"ws://127.0.0.1:{closed_port()}", TOWER_CONNECT_TIMEOUT="0.5", TOWER_ENV="dev"
    )
    code, out, err = await shell(["kubectl", "get", "pods"], down)
    assert (code, out) == (126, "")
    assert "tower unreachable" in err
    no_token = dict(env, TOWER_TOKEN="")
    code, out, err = await shell(["kubectl", "get", "pods"], no_token)
    assert code == 126 and "no agent token" in err
    # No daemon can be used: an unsafe runtime directory, a socket path too long.
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    for where, why in ((shared, "mode 0700"), (rt / ("x" * 120), "too long")):
        code, out, err = await shell(
            ["kubectl", "get", "pods"], dict(env, TOWER_ENV="dev", TOWER_RUNTIME_DIR=str(where))
        )
        assert (code, out) == (126, ""), err
        assert why in err and "failing closed" in err


async def test_wait_mode_reports_exit_code_and_duration(
    tower: Tower, tmp_path: Path, stub_dir: Path, rt: Path
) -> None:
    gates = tmp_path / "gates"
    install(gates, ["kubectl"], mode="wait")
    env = gate_env(tower, tmp_path, rt, [gates, stub_dir], STUB_EXIT="3")
    code, out, err = await shell(["kubectl", "rollout", "status", "deploy/web"], env)
    assert code == 3, err
    assert argv_seen(out) == ["rollout", "status", "deploy/web"]

    def outcome() -> list[tuple[Any, ...]]:
        return rows(
            tower.db,
            "SELECT a.state, o.exit_code, o.duration_ms FROM actions a JOIN outcomes o USING (action_id)",
        )

    await wait_for(lambda: bool(outcome()), 10)
    ((state, exit_code, duration),) = outcome()
    assert (state, exit_code) == ("failed", 3) and duration is not None and duration >= 0


async def test_no_daemon_keeps_the_in_process_path(
    tower: Tower, tmp_path: Path, stub_dir: Path, rt: Path
) -> None:
    gates = tmp_path / "gates"
    install(gates, ["kubectl"])
    env = gate_env(tower, tmp_path, rt, [gates, stub_dir], TOWER_NO_DAEMON="1")
    code, out, err = await shell(["kubectl", "get", "pods"], env)
    assert code == 0, err
    assert argv_seen(out) == ["get", "pods"]
    assert not _exists(fastclient_socket(rt))  # no daemon was involved
    await wait_for(lambda: rows(tower.db, "SELECT state FROM actions") == [("running",)], 10)


async def test_concurrent_first_calls_start_one_daemon(
    tower: Tower, tmp_path: Path, stub_dir: Path, rt: Path
) -> None:
    gates = tmp_path / "gates"
    install(gates, ["kubectl"])
    env = gate_env(tower, tmp_path, rt, [gates, stub_dir])
    results = await asyncio.gather(*(shell(["kubectl", "get", "pods", str(i)], env) for i in range(4)))
    assert [r[0] for r in results] == [0, 0, 0, 0], [r[2] for r in results]
    sock = fastclient_socket(rt)
    daemons = _daemons(sock)
    assert len(daemons) == 1, daemons
    await wait_for(lambda: len(rows(tower.db, "SELECT action_id FROM actions")) == 4, 10)
    assert len(sessions_of_actions(tower.db)) == 1


def _cmdline(p: Path) -> bytes:
    try:
        return p.joinpath("cmdline").read_bytes()
    except OSError:
        return b""


# ----------------------------------------------------------- the daemon itself


async def _talk(path: str, payload: bytes) -> list[dict[str, Any]]:
    reader, writer = await asyncio.open_unix_connection(path, limit=2**20)
    try:
        writer.write(payload)
        await writer.drain()
        out = []
        while line := await asyncio.wait_for(reader.readline(), 15):
            out.append(json.loads(line))
        return out
    finally:
        writer.close()


@pytest.fixture
async def inproc(rt: Path) -> AsyncIterator[shimd.Daemon]:
    """A daemon served in this event loop (so tests can look inside and patch it)."""
    d = shimd.Daemon(str(rt / "d.sock"), idle_timeout=60)
    ready = asyncio.Event()
    task = asyncio.create_task(d.serve(ready.set))
    await asyncio.wait_for(ready.wait(), 10)
    try:
        yield d
    finally:
        d.stopping.set()
        await asyncio.wait_for(task, 15)
    assert not _exists(d.socket_path)


def _admit(tower: Tower, **over: Any) -> bytes:
    req: dict[str, Any] = {
        "v": 1,
        "op": "admit",
        "mode": "exec",
        "url": tower.url,
        "token": tower.tokens["agent"],
        "env": "dev",
        "agent": "raw-client",
        "hub_key": "",
        "ca": "",
        "connect_timeout": 3.0,
        "kind": "k8s",
        "command": "kubectl get pods",
        "argv": ["kubectl", "get", "pods"],
        "shape": "argv",
        "target": "",
        "cwd": "/",
    }
    req.update(over)
    return json.dumps(req).encode() + b"\n"


async def test_malformed_requests_get_errors_and_the_daemon_keeps_serving(
    tower: Tower, inproc: shimd.Daemon
) -> None:
    path = inproc.socket_path
    bad = [
        b"not json\n",
        b"[1, 2]\n",
        b'{"v": 99, "op": "ping"}\n',
        b'{"v": 1, "op": "explode"}\n',
        b'{"v": 1, "op": "admit"}\n',
        _admit(tower, argv=[]),
        _admit(tower, argv="kubectl get pods"),
        _admit(tower, connect_timeout="soon"),
        _admit(tower, mode="detach"),
        b"x" * (fastclient.MAX_LINE + 10) + b"\n",
    ]
    for payload in bad:
        replies = await _talk(path, payload)
        assert len(replies) == 1 and replies[0]["type"] == "error", (payload[:80], replies)
    # An action the shim's schema refuses is a denial, not a crash.
    (reply,) = await _talk(path, _admit(tower, kind="teleport"))
    assert reply["verdict"] == "deny" and "cannot be put to review" in reply["message"]
    # A command that does not match what would run is refused.
    (reply,) = await _talk(path, _admit(tower, argv=["kubectl", "delete", "pods"]))
    assert reply["verdict"] == "deny" and "differs" in reply["message"]
    (reply,) = await _talk(path, b'{"v": 1, "op": "ping"}\n')
    assert reply == {"type": "pong", "pid": os.getpid()}
    (reply,) = await _talk(path, _admit(tower))
    assert reply["verdict"] == "allow" and reply["action_id"]
    (reply,) = await _talk(path, _admit(tower, command="kubectl get nodes", argv=["kubectl", "get", "nodes"]))
    assert reply["verdict"] == "allow"
    assert len(inproc.shims) == 1  # one session for both
    await wait_for(lambda: len(rows(tower.db, "SELECT action_id FROM actions")) == 3, 10)
    assert len(sessions_of_actions(tower.db)) == 1


async def test_other_uids_are_refused(tower: Tower, inproc: shimd.Daemon) -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        assert shimd.peer_uid(a) == os.getuid()
    assert shimd.peer_allowed(os.getuid(), os.getuid())
    assert not shimd.peer_allowed(os.getuid() + 1, os.getuid())
    assert not shimd.peer_allowed(None, os.getuid())  # unknown peer: refused
    inproc.peer_uid = lambda _sock: os.getuid() + 1
    # Refused before anything is read (what a foreign client sent is never looked at).
    (reply,) = await _talk(inproc.socket_path, b"")
    assert reply["type"] == "error" and "refused: peer uid" in reply["message"]
    assert not inproc.shims and rows(tower.db, "SELECT action_id FROM actions") == []


def _spawn_daemon(sock: str, idle: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "towerctl.localshim.daemon", "--socket", sock, "--idle-timeout", str(idle)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def test_idle_exit(rt: Path) -> None:
    sock = str(rt / "idle.sock")
    proc = _spawn_daemon(sock, 2.0)
    try:
        await wait_for(lambda: shimd.request(sock, "ping", 1.0) is not None, 20)
        await wait_for(lambda: proc.poll() is not None, 15)
        assert proc.returncode == 0
        assert not _exists(sock)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()


async def test_sigterm_closes_the_tower_sessions(tower: Tower, rt: Path) -> None:
    sock = str(rt / "term.sock")
    proc = _spawn_daemon(sock, 600)
    try:
        await wait_for(lambda: shimd.request(sock, "ping", 1.0) is not None, 20)
        (reply,) = await _talk(sock, _admit(tower))
        assert reply["verdict"] == "allow"
        await wait_for(lambda: rows(tower.db, "SELECT status FROM sessions") == [("active",)], 10)
        proc.send_signal(signal.SIGTERM)
        await wait_for(lambda: proc.poll() is not None, 15)
        assert proc.returncode == 0
        assert not _exists(sock)
        # The shim closed its tower connection cleanly (1000): the session is over, not lost.
        await wait_for(lambda: rows(tower.db, "SELECT status FROM sessions") == [("ended",)], 10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()


# ------------------------------------------------------- the client's mirrors


def test_fast_client_imports_nothing_but_the_standard_library() -> None:
    directory = os.path.dirname(gate_wrapper.fastclient_path())
    code = (
        "import sys; sys.path.append(sys.argv[1]); import fastclient, json as j;"
        "print(j.dumps(sorted(m.split('.')[0] for m in sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code, directory], capture_output=True, text=True, check=True
    ).stdout
    loaded = set(json.loads(out)) - {"json", "re", "enum", "functools", "collections", "operator", "keyword"}
    third_party = {m for m in loaded if m not in sys.stdlib_module_names and not m.startswith("_")}
    assert third_party <= {"fastclient", "shimclient", "__main__"}, third_party
    # The hot path stays off the costly stdlib modules too.
    lean = subprocess.run(
        [sys.executable, "-I", "-S", "-c", "import sys; sys.path.append(sys.argv[1]); import fastclient;"
         "print(' '.join(sorted(sys.modules)))", directory],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert not {"re", "json", "socket", "enum", "typing", "towerctl", "pydantic"} & set(lean)
    # And it fails closed on a bad invocation.
    bad = subprocess.run(
        [sys.executable, "-I", "-S", "-c", gate_wrapper.FAST_ENTRY, directory], capture_output=True
    )
    assert bad.returncode == 126


def test_mirrors_agree_with_the_package() -> None:
    assert fastclient.KINDS == gate_lookup.KINDS
    assert fastclient.TARGET_VARS == gate_lookup.TARGET_VARS
    assert fastclient.MARKER == gate_wrapper.MARKER
    for s in ["", "a", "app=web shop", "it's", "$(rm -rf /)", "a\nb", "ü", "--x=1", "@%+=:,./-_"]:
        assert fastclient.quote(s) == shlex.quote(s)
    assert fastclient.join(["kubectl", "get", "a b", ""]) == shlex.join(["kubectl", "get", "a b", ""])
    for name in ["kubectl", "kubectl-argo-rollouts", "a.b+c", "", "-x", "../k", "k\n", "x" * 129, "é"]:
        assert fastclient.plain_tool_name(name) == bool(gate_install._TOOL_NAME.fullmatch(name)), name
    value = {"a": [1, 2.5, True, False, None, 'é\n"x"'], "b": {"c": ""}}
    assert json.loads(fastclient.dumps(value)) == value
    assert fastclient.loads(json.dumps(value)) == value
    for junk in ["", "{", '{"a": 1} x', "NaN", "[Infinity]"]:
        with pytest.raises(ValueError):
            fastclient.loads(junk)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    for k in list(os.environ):
        if k.startswith(("TOWER_", "XDG_")):
            monkeypatch.delenv(k)
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    yield monkeypatch


def _same(default_agent: str = "") -> None:
    mine = fastclient.resolve(default_agent=default_agent)
    theirs = config.resolve(role="agent")
    assert mine["url"] == theirs.url and mine["token"] == theirs.token and mine["env"] == theirs.env
    assert mine["hub_key"] == theirs.hub_key
    if not default_agent:
        assert mine["agent"] == theirs.agent


def test_settings_resolve_like_the_package(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _same()
    home = tmp_path / "th"
    clean_env.setenv("TOWER_HOME", str(home))
    _same()
    (home / "tokens").mkdir(parents=True)
    (home / "tokens" / "agent.token").write_text("tok-file\n")
    (home / "hub.url").write_text("ws://127.0.0.1:9999\n")
    (home / "hub-key.pub").write_text("ab" * 32)
    _same()
    (home / "config.toml").write_text(
        'url = "ws://cfg:1"\nagent_token = "cfg-tok"\nenv = "staging"\nagent = "a1"\n'
    )
    _same()
    clean_env.setenv("TOWER_URL", "ws://env:2")
    clean_env.setenv("TOWER_TOKEN", "env-tok")
    clean_env.setenv("TOWER_AGENT", "bot")
    clean_env.setenv("TOWER_HUB_KEY", "cd" * 32)
    _same()
    clean_env.delenv("TOWER_HOME")
    clean_env.setenv("XDG_DATA_HOME", str(tmp_path / "xd"))
    clean_env.setenv("XDG_CONFIG_HOME", str(tmp_path / "xc"))
    _same()
    assert fastclient.data_dir() == str(config.data_dir())
    assert fastclient.config_path() == str(config.config_path())
    (tmp_path / "xc" / "towerctl").mkdir(parents=True)
    (tmp_path / "xc" / "towerctl" / "config.toml").write_text('bogus = "x"\n')
    with pytest.raises(fastclient.Refused, match="unknown keys"):
        fastclient.resolve()


# ------------------------------------------------------------- towerctl exec


async def towerctl_exec(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    return await shell([sys.executable, "-m", "towerctl.cli", "exec", *args], env)


async def test_exec_goes_through_the_daemon(tower: Tower, tmp_path: Path, rt: Path) -> None:
    env = gate_env(tower, tmp_path, rt, [])
    code, out, err = await towerctl_exec(env, "--env", "dev", "--reason", "check", "--", "sh", "-c", "exit 3")
    assert code == 3, err
    code, out, err = await towerctl_exec(env, "echo 'a  b' | tr a z")
    assert (code, out) == (0, "z  b\n"), err
    assert _exists(fastclient_socket(rt))

    def outcomes() -> list[tuple[Any, ...]]:
        return rows(
            tower.db,
            "SELECT a.command, instr(a.body, '\"check\"') > 0, a.state, o.exit_code"
            " FROM actions a JOIN outcomes o USING (action_id) ORDER BY a.command",
        )

    await wait_for(lambda: len(outcomes()) == 2, 10)
    assert outcomes() == [
        ("echo 'a  b' | tr a z", 0, "succeeded", 0),
        ("sh -c 'exit 3'", 1, "failed", 3),  # with its --reason
    ]
    assert len(sessions_of_actions(tower.db)) == 1
    code, out, err = await towerctl_exec(
        dict(env, TOWER_ENV="prod"), "kubectl", "delete", "namespace", "prod"
    )
    assert (code, out) == (126, "") and "never by an agent" in err
    code, out, err = await towerctl_exec(env, "--help")  # not ours: click answers
    assert code == 0 and "Run ARGV under supervision" in out


def test_exec_arguments_parse_like_click() -> None:
    from towerctl.cli import exec_cmd

    assert fastclient.SHELL_CHARS == exec_cmd._SHELL_CHARS
    parse = fastclient.parse_exec
    assert parse(["--env", "prod", "--", "ls", "-la"]) == ({"env": "prod"}, ["ls", "-la"])
    assert parse(["--env=prod", "--agent", "a", "ls", "--env", "x"]) == (
        {"env": "prod", "agent": "a"},
        ["ls", "--env", "x"],
    )
    assert parse(["--", "--help"]) == ({}, ["--help"])
    for handed_to_click in (["--help"], ["--bogus", "ls"], ["--env"], [], ["--env", "dev"], ["--"]):
        assert parse(handed_to_click) is None, handed_to_click
    for argv in (["ls", "-la"], ["echo hi | cat"], ["a b"], ["x"], ["rm", "-rf", "/tmp/a b"]):
        command, run = exec_cmd._as_action_command(tuple(argv))
        mine = fastclient.exec_command(argv)
        assert (mine[0], mine[1]) == (command, run)


async def test_wait_mode_tool_is_terminated_when_the_session_is_killed(
    tower: Tower, tmp_path: Path, rt: Path
) -> None:
    real = tmp_path / "slowbin"
    real.mkdir()
    (real / "kubectl").write_text("#!/bin/sh\nexec sleep 60\n")
    (real / "kubectl").chmod(0o755)
    gates = tmp_path / "gates"
    install(gates, ["kubectl"], mode="wait")
    env = gate_env(tower, tmp_path, rt, [gates, real])
    agent = asyncio.create_task(shell(["kubectl", "get", "pods", "--watch"], env))
    await wait_for(lambda: rows(tower.db, "SELECT state FROM actions") == [("running",)], 20)
    ((session_id,),) = rows(tower.db, "SELECT session_id FROM actions")
    async with tower.operator("admin") as op:
        await op.control(session_id, "kill", reason="runaway watch")
    code, _out, err = await asyncio.wait_for(agent, 20)
    assert code == 128 + signal.SIGTERM, err
    assert "session killed" in err
    # Killed means killed: the agent's next call through the same session is refused.
    code, _out, err = await shell(["kubectl", "get", "pods"], env)
    assert code == 126 and "denied" in err
