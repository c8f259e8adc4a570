"""Fault injection with real processes and real signals: `kill -9` the hub at
each point of an action's life, restart it on the same port, and check that
nothing runs without a recorded approval, nothing runs twice, nothing is lost
or duplicated, and `towerctl audit verify` passes."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
import socket
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from agent_shim import Action, Shim, new_action_id
from agent_shim.protocol import ActionEvent
from towerctl.operator import OperatorClient

from .test_cli_e2e import TOWERCTL, cli_env, towerctl

DEV_FAST = """
[environments.dev]
read = "allow"
write = "allow"
destructive = "ask"
max_actions_per_minute = 100000
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """One `towerctl serve` process; stderr is drained so it never blocks."""

    def __init__(self, proc: asyncio.subprocess.Process, url: str, drain: asyncio.Task[None]) -> None:
        self.proc, self.url, self._drain = proc, url, drain

    async def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(self.proc.wait(), 15)
        self._drain.cancel()

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            await asyncio.wait_for(self.proc.wait(), 30)
        self._drain.cancel()


async def serve(home: Path, port: int, *extra: str) -> Served:
    proc = await asyncio.create_subprocess_exec(
        *TOWERCTL,
        "serve",
        "--port",
        str(port),
        *extra,
        env=cli_env(home),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    stderr = proc.stderr
    url = ""
    while not url:
        line = (await asyncio.wait_for(stderr.readline(), 30)).decode()
        assert line, "serve exited early"
        if "listening on" in line:
            url = line.split("listening on ", 1)[1].split()[0]

    async def drain() -> None:
        while await stderr.readline():
            pass

    return Served(proc, url, asyncio.create_task(drain()))


@pytest.fixture
async def hubs(tmp_path: Path) -> AsyncIterator[list[Served]]:
    """Every hub a test starts; whatever is still running is stopped at the end."""
    started: list[Served] = []
    try:
        yield started
    finally:
        for s in started:
            with contextlib.suppress(ProcessLookupError, TimeoutError):
                await s.stop()


def token(home: Path, role: str) -> str:
    return (home / "tokens" / f"{role}.token").read_text().strip()


def hub_key(home: Path) -> str:
    return (home / "hub-key.pub").read_text().strip()


def db_path(home: Path) -> Path:
    return home / "tower.db"


async def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    async def loop() -> None:
        while not predicate():  # noqa: ASYNC110 - a bounded condition wait, not a fixed delay
            await asyncio.sleep(0.01)

    await asyncio.wait_for(loop(), timeout)


async def pending_action(op: OperatorClient, timeout: float = 20.0) -> str:
    if op.pending:
        return next(iter(op.pending))
    ev = await asyncio.wait_for(
        _scan(op, lambda m: isinstance(m, ActionEvent) and m.action.state == "pending"), timeout
    )
    return str(ev.action.action.action_id)


async def _scan(op: OperatorClient, match: Callable[[object], bool]) -> ActionEvent:
    async for msg in op.events():
        if match(msg):
            return msg  # type: ignore[return-value]
    raise AssertionError("operator connection closed")


def query(db: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def check_invariants(db: Path) -> None:
    """Every executed action has exactly one approval with a matching digest,
    or was allowed by policy; no audit record of an action is duplicated."""
    executed = query(
        db,
        "SELECT action_id, digest, policy_verdict FROM actions"
        " WHERE state IN ('running', 'succeeded', 'failed')",
    )
    for action_id, digest, verdict in executed:
        decisions = query(db, "SELECT verdict, digest FROM decisions WHERE action_id = ?", (action_id,))
        if verdict == "allow":
            assert decisions == [], f"{action_id}: allowed by policy yet has decisions {decisions}"
        else:
            assert decisions == [("approved", digest)], f"{action_id} ran with decisions {decisions}"
    per_action = Counter(
        query(db, "SELECT action_id, event FROM audit WHERE action_id IS NOT NULL AND event LIKE 'action.%'")
    )
    dupes = {k: n for k, n in per_action.items() if n > 1}
    assert not dupes, f"duplicated audit records: {dupes}"


async def audit_verify_passes(home: Path) -> None:
    code, out, err = await towerctl(home, "audit", "verify")
    assert code == 0, err
    assert "intact" in out


def prod_action(marker: Path) -> Action:
    return Action(action_id=new_action_id(), kind="shell", command=f"rm -rf {marker}", target="prod-db")


# --------------------------------------------------------------------------


async def test_kill9_after_propose_then_restart_offers_it_again(tmp_path: Path, hubs: list[Served]) -> None:
    home, port = tmp_path / "home", free_port()
    hubs.append(await serve(home, port))
    runs = 0
    async with Shim(
        hubs[0].url, token(home, "agent"), agent="a", env="prod", hub_key=hub_key(home), reconnect_max_s=0.2
    ) as shim:
        action = prod_action(tmp_path / "x")
        task = asyncio.create_task(shim.admit(action))
        async with OperatorClient(hubs[0].url, token(home, "admin")) as op:
            assert await pending_action(op) == action.action_id
        await hubs[0].kill9()
        await wait_until(lambda: not shim.connected)
        hubs.append(await serve(home, port))
        await wait_until(lambda: shim.connected)
        async with OperatorClient(hubs[1].url, token(home, "admin")) as op:
            # The restarted hub offers the same action again...
            assert await pending_action(op) == action.action_id
            await op.decide(action.action_id, approve=True)
        # ...and the waiting agent gets the approval and runs it once.
        approved = await asyncio.wait_for(task, 20)
        runs += 1
        approved.set_result(0, "ok")
        shim.report(approved)
    await hubs[1].stop()
    assert runs == 1
    db = db_path(home)
    assert query(db, "SELECT state FROM actions WHERE action_id = ?", (action.action_id,)) == [("succeeded",)]
    check_invariants(db)
    await audit_verify_passes(home)


async def test_kill9_after_decision_before_start_runs_once(tmp_path: Path, hubs: list[Served]) -> None:
    """The agent (`towerctl exec`) is stopped with SIGSTOP so that the approval
    is committed but not acted on; then the hub dies with SIGKILL."""
    home, port = tmp_path / "home", free_port()
    hubs.append(await serve(home, port))
    counter = tmp_path / "ran.txt"
    agent = await asyncio.create_subprocess_exec(
        *TOWERCTL, "exec", "--env", "prod", "--", "sh", "-c", f"echo ran >> {counter}",
        env=cli_env(home),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with OperatorClient(hubs[0].url, token(home, "admin")) as op:
            action_id = await pending_action(op)
            agent.send_signal(signal.SIGSTOP)
            await op.decide(action_id, approve=True)  # returns once the decision is committed
        await hubs[0].kill9()
        assert query(db_path(home), "SELECT verdict FROM decisions WHERE action_id = ?", (action_id,)) == [
            ("approved",)
        ]
        hubs.append(await serve(home, port))
        agent.send_signal(signal.SIGCONT)
        _, err = await asyncio.wait_for(agent.communicate(), 60)
        assert agent.returncode == 0, err.decode()
    finally:
        if agent.returncode is None:
            agent.send_signal(signal.SIGCONT)
            agent.kill()
            await agent.wait()
    assert counter.read_text().splitlines() == ["ran"]  # exactly once
    await hubs[1].stop()
    db = db_path(home)
    assert query(db, "SELECT state FROM actions WHERE action_id = ?", (action_id,)) == [("succeeded",)]
    check_invariants(db)
    await audit_verify_passes(home)


async def test_kill9_during_a_burst_loses_and_duplicates_nothing(tmp_path: Path, hubs: list[Served]) -> None:
    home, port = tmp_path / "home", free_port()
    policy = tmp_path / "policy.toml"
    policy.write_text(DEV_FAST)
    hubs.append(await serve(home, port, "--policy", str(policy)))
    n_shims, per_shim = 4, 50
    done: list[str] = []
    killed = asyncio.Event()
    halfway = asyncio.Event()
    ids = itertools.count()

    async def agent(shim: Shim) -> None:
        for _ in range(per_shim):
            action = Action(action_id=new_action_id(), kind="shell", command=f"echo {next(ids)}")
            approved = await shim.admit(action)
            approved.set_result(0, "ok")
            shim.report(approved)
            done.append(action.action_id)
            if len(done) >= n_shims * per_shim // 3:
                halfway.set()
            if not killed.is_set() and len(done) >= n_shims * per_shim // 3:
                await killed.wait()  # the rest runs while the hub is down and after it is back
            else:
                await asyncio.sleep(0)

    shims = [
        Shim(
            hubs[0].url,
            token(home, "agent"),
            agent=f"b{i}",
            env="dev",
            hub_key=hub_key(home),
            reconnect_max_s=0.2,
        )
        for i in range(n_shims)
    ]
    for s in shims:
        await s.start()
        assert s.connected
    tasks = [asyncio.create_task(agent(s)) for s in shims]
    await asyncio.wait_for(halfway.wait(), 30)
    await hubs[0].kill9()
    killed.set()
    await wait_until(lambda: not any(s.connected for s in shims))
    hubs.append(await serve(home, port, "--policy", str(policy)))
    await asyncio.wait_for(asyncio.gather(*tasks), 60)
    await wait_until(lambda: all(s.connected for s in shims))
    for s in shims:
        await s.close(drain_timeout=20)
    assert len(done) == n_shims * per_shim
    db = db_path(home)

    def all_recorded() -> bool:
        rows = query(db, "SELECT COUNT(*) FROM actions WHERE state = 'succeeded'")
        return rows[0][0] == len(done)

    await wait_until(all_recorded, 30)
    await hubs[1].stop()
    # Every action the agents ran has its records, once each: its proposal,
    # which says it was allowed and started, and its outcome.
    events = Counter(
        query(
            db,
            "SELECT action_id, event, body ->> '$.data.states' FROM audit WHERE action_id IS NOT NULL",
        )
    )
    for action_id in done:
        for event, states in (("action.proposed", '["allowed","running"]'), ("action.succeeded", None)):
            got = events[(action_id, event, states)]
            assert got == 1, (action_id, event, got)
    assert sum(events.values()) == 2 * len(done)
    check_invariants(db)
    await audit_verify_passes(home)
    stored = {r[0] for r in query(db, "SELECT action_id FROM actions")}
    assert stored == set(done)
    assert json.loads((await towerctl(home, "audit", "verify", "--json"))[1])["ok"] is True
