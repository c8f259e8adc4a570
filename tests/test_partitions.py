"""Partitions and slow peers.

* A shim cut off from the hub while it waits for a decision denies at its
  approval timeout (the command never runs) and, once the network is back,
  the hub's database holds exactly one outcome for the action.
* An operator client that stops reading never stalls the hub or the other
  operators: its queue stays bounded and it gets a fresh snapshot instead
  of the backlog once it reads again.
* A reconnect storm after a hub restart is absorbed: every shim comes back
  (with jittered backoff, not in lockstep) and resumes its session.

The network faults come from a small TCP proxy on 127.0.0.1 that the test
controls; nothing waits on a fixed sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from agent_shim import Action, ActionDenied, Shim, new_action_id
from agent_shim.policy import EnvPolicy
from agent_shim.protocol import PROTOCOL_VERSION, ActionEvent, Alert
from towerctl.audit.verify import verify_database
from towerctl.hub.fanout import QUEUE_LIMIT

from .conftest import Tower, next_event, wait_for
from .test_faults import check_invariants

# ----------------------------------------------------------------- the proxy


class Proxy:
    """A TCP relay to the hub that can drop every byte (``blackhole``: both
    ends think the link is up, nothing arrives), sever its connections, and
    refuse new ones (accept, then close at once)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.blackhole = False
        self.refuse = False
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refuse:
            writer.close()
            return
        self.accepted += 1
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._links |= {writer, up_w}
        for src, dst in ((reader, up_w), (up_r, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while data := await src.read(65536):
                if self.blackhole:
                    continue  # lost in the partition
                dst.write(data)
                await dst.drain()
        dst.close()

    def sever(self) -> None:
        """Close every relayed connection (an RST-like end of the partition)."""
        for w in list(self._links):
            if (sock := w.get_extra_info("socket")) is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            w.close()
        self._links.clear()

    async def close(self) -> None:
        self.sever()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for t in list(self._tasks):
            t.cancel()


@pytest.fixture
async def proxy(tower: Tower) -> AsyncIterator[Proxy]:
    p = Proxy(tower.hub.port)
    await p.start()
    try:
        yield p
    finally:
        await p.close()


#: One-second approvals keep the partition tests short.
DEV_ASK = EnvPolicy(read="allow", write="allow", destructive="ask", approval_timeout_s=1, rules=())


def rows(db: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def audit_events(db: Path, action_id: str) -> Counter[str]:
    return Counter(str(r[0]) for r in rows(db, "SELECT event FROM audit WHERE action_id = ?", (action_id,)))


def destructive(marker: Path) -> Action:
    return Action(action_id=new_action_id(), kind="shell", command=f"rm -rf {marker}", target="dev-box")


async def final_checks(tower: Tower) -> None:
    """Stop the hub (flushes the store), check the invariants from the DB and
    `audit verify`, and start it again so the fixture can stop it."""
    port = tower.hub.port
    await tower.hub.stop()
    check_invariants(tower.db)
    result = verify_database(tower.db, tower.key)
    assert result.ok, result
    tower.hub.config.port = port
    await tower.hub.start()


async def partitioned_wait(
    tower: Tower, proxy: Proxy, shim: Shim, action: Action, cut: str, *, approve_during_cut: bool
) -> None:
    """Propose ``action``, wait until the hub holds it as pending, cut the
    link, and check that the shim denies it at its timeout."""
    task = asyncio.create_task(shim.admit(action))
    async with tower.operator() as op:
        await wait_for(lambda: action.action_id in op.pending)
        if cut == "blackhole":
            proxy.blackhole = True
        else:
            proxy.refuse = True
            proxy.sever()
            await wait_for(lambda: not shim.connected)
        if approve_during_cut:
            await op.decide(action.action_id, approve=True)
    started = time.monotonic()
    with pytest.raises(ActionDenied):
        await asyncio.wait_for(task, 10)
    # Denied at the timeout, not before (a decision could still have come).
    assert time.monotonic() - started >= 0.3


async def heal(proxy: Proxy, shim: Shim) -> None:
    proxy.blackhole = False
    proxy.refuse = False
    before = proxy.accepted
    proxy.sever()  # a partitioned TCP stream is dead; the shim must reconnect
    await wait_for(lambda: proxy.accepted > before and shim.connected, 10)


@pytest.mark.parametrize("cut", ["blackhole", "sever"])
async def test_cut_off_mid_wait_denies_at_timeout_and_hub_records_it_once(
    tower: Tower, proxy: Proxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cut: str
) -> None:
    monkeypatch.setattr("agent_shim.client.DECISION_GRACE_S", 0.3)
    await tower.set_policy("dev", DEV_ASK)
    marker = tmp_path / "never"
    marker.mkdir()
    async with Shim(proxy.url, tower.tokens["agent"], agent="cut", env="dev", reconnect_max_s=0.2) as shim:
        sid = shim.session_id
        action = destructive(marker)
        await partitioned_wait(tower, proxy, shim, action, cut, approve_during_cut=False)
        assert marker.exists()  # fail closed: nothing ran
        await heal(proxy, shim)
        assert shim.session_id == sid  # the same session resumed
        # The link works again: the next action goes through.
        assert (await shim.run_shell("true")).exit_code == 0
    db = tower.db
    assert rows(db, "SELECT state FROM actions WHERE action_id = ?", (action.action_id,)) == [("expired",)]
    assert rows(db, "SELECT verdict FROM decisions WHERE action_id = ?", (action.action_id,)) == [
        ("expired",)
    ]
    ev = audit_events(db, action.action_id)
    assert ev["action.proposed"] == 1 and ev["action.expired"] == 1, ev
    assert not {"action.running", "action.succeeded", "action.failed"} & set(ev), ev
    await final_checks(tower)


async def test_approval_lost_in_partition_is_reported_once_back(
    tower: Tower, proxy: Proxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("agent_shim.client.DECISION_GRACE_S", 0.3)
    await tower.set_policy("dev", DEV_ASK)
    marker = tmp_path / "never"
    marker.mkdir()
    async with Shim(proxy.url, tower.tokens["agent"], agent="cut", env="dev", reconnect_max_s=0.2) as shim:
        action = destructive(marker)
        await partitioned_wait(tower, proxy, shim, action, "blackhole", approve_during_cut=True)
        assert marker.exists()
        await heal(proxy, shim)
        db = tower.db
        try:
            # Once back, the shim tells the hub it did not use the approval: exactly one record.
            await wait_for(lambda: audit_events(db, action.action_id)["decision.refused_by_shim"] >= 1, 1.5)
        finally:
            ev = audit_events(db, action.action_id)
            assert not {"action.running", "action.succeeded", "action.failed"} & set(ev), ev
    assert audit_events(tower.db, action.action_id)["decision.refused_by_shim"] == 1
    await final_checks(tower)


async def test_proposal_lost_in_partition_is_reported_once_back(
    tower: Tower, proxy: Proxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("agent_shim.client.DECISION_GRACE_S", 0.3)
    await tower.set_policy("dev", DEV_ASK)
    marker = tmp_path / "never"
    marker.mkdir()
    async with Shim(proxy.url, tower.tokens["agent"], agent="cut", env="dev", reconnect_max_s=0.2) as shim:
        action = destructive(marker)
        proxy.blackhole = True  # the shim still thinks it is connected
        with pytest.raises(ActionDenied):
            await asyncio.wait_for(shim.admit(action), 10)
        assert marker.exists()
        await heal(proxy, shim)
        # The shim's outbox is ordered: once a later action is recorded, any
        # report about the lost one has been delivered too.
        later = await shim.run_shell("true")
        await wait_for(
            lambda: (
                rows(tower.db, "SELECT state FROM actions WHERE action_id = ?", (later.action.action_id,))
                == [("succeeded",)]
            )
        )
        assert marker.exists()
    assert rows(tower.db, "SELECT state FROM actions WHERE action_id = ?", (action.action_id,)) == [
        ("denied",)
    ]
    assert audit_events(tower.db, action.action_id)["action.proposed"] == 1
    await final_checks(tower)


# ------------------------------------------------------ a stalled operator


async def stalled_operator(tower: Tower, who: str):  # type: ignore[no-untyped-def]
    """A raw operator connection that says hello and then stops reading: a
    tiny receive buffer, and websockets pauses the transport as soon as one
    message is queued (``max_queue=1``) because nobody calls ``recv()``."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", tower.hub.port))
    sock.setblocking(False)
    ws = await connect(
        tower.url + "/operator",
        sock=sock,
        additional_headers={"Authorization": f"Bearer {tower.tokens[who]}"},
        compression=None,
        proxy=None,
        max_queue=1,
        max_size=None,
        ping_interval=None,
    )
    await ws.send(json.dumps({"type": "hello", "protocol": PROTOCOL_VERSION, "client": "stalled"}))
    return ws


async def test_stalled_operator_never_stalls_the_hub_or_other_operators(tower: Tower) -> None:
    svc = tower.hub.service
    assert svc is not None
    n_events, batch = 5000, 100
    payload = "x" * 3900  # ~4 KiB a frame: 20 MiB in all, far beyond any socket buffer
    stalled = await stalled_operator(tower, "viewer")
    async with (
        tower.operator("admin") as healthy,
        Shim(tower.url, tower.tokens["agent"], agent="busy", env="dev") as shim,
    ):
        await wait_for(lambda: len(svc.fanout.operators) == 2)
        lagging, good = tower.operator_conn("viewer"), tower.operator_conn("admin")
        alerts = 0
        seen_backlog = 0
        shim_latency: list[float] = []

        async def count_alerts() -> None:
            nonlocal alerts
            async for msg in healthy.events():
                if isinstance(msg, Alert) and msg.message.startswith("flood"):
                    alerts += 1

        counter = asyncio.create_task(count_alerts())
        try:
            for i in range(0, n_events, batch):
                for j in range(i, i + batch):
                    svc.alert("info", f"flood {j} {payload}")
                seen_backlog = max(seen_backlog, lagging.backlog)
                assert lagging.backlog <= QUEUE_LIMIT
                # The hub keeps serving agents in the middle of the flood...
                t0 = time.monotonic()
                if i % (10 * batch) == 0:
                    assert (await shim.run_shell("true")).exit_code == 0
                    shim_latency.append(time.monotonic() - t0)
                # ...and the healthy operator keeps up (a condition wait, not a sleep).
                await wait_for(lambda: good.backlog < QUEUE_LIMIT // 4, 5)
            await wait_for(lambda: alerts == n_events, 10)
        finally:
            counter.cancel()
        assert good.resyncs == 0  # the healthy operator got every event, in order, no resync
        # One overflow, one resync however long the stall: the snapshot is
        # built when the socket takes data again, not at every overflow.
        assert lagging.resyncs == 1, "the stalled operator never overflowed: the test proves nothing"
        # A request from the lagging operator: its reply must survive the dropped backlog.
        await stalled.send(json.dumps({"type": "freeze", "req": "stall-1", "env": "dev", "frozen": True}))
        await wait_for(lambda: lagging.backlog >= 1)
        for j in range(QUEUE_LIMIT + 10):  # overflow again, with the reply queued
            svc.alert("info", f"flood again {j}")
        assert lagging.resyncs == 1 and lagging.backlog <= QUEUE_LIMIT
        assert seen_backlog <= QUEUE_LIMIT
        assert max(shim_latency) < 2.0, shim_latency
        # The healthy operator sees a new action at once.
        action = await shim.run_shell("echo after-flood")
        ev = await next_event(
            healthy,
            lambda m: isinstance(m, ActionEvent) and m.action.action.action_id == action.action.action_id,
        )
        assert ev.action.state in ("allowed", "succeeded")

        # The stalled operator reads again: far fewer frames than were sent
        # (the backlog was dropped), a fresh snapshot, the reply it is owed,
        # then live events again.
        kinds: Counter[str] = Counter()
        frames = 0
        snapshot_after_flood = False
        reply: dict[str, object] = {}
        async with asyncio.timeout(10):
            while not (snapshot_after_flood and reply):
                msg = json.loads(await stalled.recv())
                frames += 1
                kinds[msg["type"]] += 1
                if msg["type"] == "snapshot" and kinds["alert"] > 0:
                    snapshot_after_flood = True
                if msg["type"] == "result" and msg["req"] == "stall-1":
                    reply = msg
            svc.alert("info", "marker after the flood")
            while True:
                msg = json.loads(await stalled.recv())
                frames += 1
                kinds[msg["type"]] += 1
                if msg["type"] == "alert" and msg["message"] == "marker after the flood":
                    break
        assert kinds["snapshot"] == 2, kinds  # the first one, and one resync
        assert reply.get("ok") is False and reply.get("code") == "forbidden", reply  # a viewer may not freeze
        assert kinds["alert"] < n_events, kinds
        assert frames < n_events
        # An abrupt end of the stalled peer is cleaned up too.
        stalled.transport.abort()
        await wait_for(lambda: len(svc.fanout.operators) == 1)


async def test_operator_that_sends_requests_but_never_reads_is_disconnected(tower: Tower) -> None:
    """Replies are never dropped for a snapshot, so they are what could grow
    without bound: a peer that keeps asking and never reads is cut off."""
    svc = tower.hub.service
    assert svc is not None
    stalled = await stalled_operator(tower, "viewer")
    async with tower.operator("admin") as healthy:
        await wait_for(lambda: len(svc.fanout.operators) == 2)
        lagging = tower.operator_conn("viewer")
        payload = "y" * 3900
        for j in range(QUEUE_LIMIT + 2000):  # fill the socket buffers, then overflow once
            svc.alert("info", f"fill {j} {payload}")
            if j % 100 == 0:
                await asyncio.sleep(0)  # let the senders run
        await wait_for(lambda: lagging.resyncs == 1)
        request = json.dumps({"type": "freeze", "req": "r", "env": "dev", "frozen": True})
        with contextlib.suppress(ConnectionClosed):  # the hub may cut it off before the last one
            for _ in range(QUEUE_LIMIT + 100):
                await stalled.send(request)
        await wait_for(lambda: len(svc.fanout.operators) == 1, 10)
        assert lagging.backlog <= QUEUE_LIMIT
        # The healthy operator never noticed.
        assert not healthy.closed.is_set()
        async with tower.operator("alice") as other:
            assert "alice" in other.operators


# ---------------------------------------------------------- reconnect storm


class Recorder:
    """Listens on the hub's port while the hub is down: reads each upgrade
    request, notes which shim sent it (``?shim=N`` in its URL) and when,
    then hangs up, so every shim keeps retrying on its own backoff."""

    def __init__(self) -> None:
        self.attempts: dict[int, list[float]] = {}
        self.total = 0
        self._server: asyncio.Server | None = None

    async def start(self, port: int) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        now = time.monotonic()
        with contextlib.suppress(OSError, TimeoutError, ValueError, IndexError):
            line = (await asyncio.wait_for(reader.readline(), 5)).decode()
            shim = int(line.split("?shim=", 1)[1].split("/", 1)[0])
            self.attempts.setdefault(shim, []).append(now)
            self.total += 1
        writer.close()

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


def storm_shims(tower: Tower, n: int, cap: float) -> list[Shim]:
    """``n`` shims whose URLs name them (``?shim=i``; the hub ignores the query)."""
    return [
        Shim(f"{tower.url}/agent?shim={i}", tower.tokens["agent"], agent=f"storm{i}", env="dev",
             reconnect_max_s=cap, connect_timeout=20)
        for i in range(n)
    ]  # fmt: skip


async def test_reconnect_backoff_is_jittered(tower: Tower) -> None:
    """At the backoff cap a shim sleeps ``cap * uniform(0.5, 1.5)`` between
    attempts. Without jitter no interval between two attempts of one shim
    could be shorter than ``cap`` (the sleep is a lower bound whatever the
    load), and all shims would retry in lockstep; with it a good share is
    shorter. (Few shims here, so that the event loop's own load does not
    stretch the intervals; the storm below uses hundreds.)"""
    n, cap = 40, 0.2  # backoff: 0.05, 0.1, 0.2, 0.2, ... each times uniform(0.5, 1.5)
    shims = storm_shims(tower, n, cap)
    try:
        await asyncio.gather(*(s.start() for s in shims))
        assert all(s.connected for s in shims)
        port = tower.hub.port
        await tower.hub.stop()
        recorder = Recorder()
        await recorder.start(port)
        await wait_for(lambda: not any(s.connected for s in shims), 10)
        await wait_for(lambda: sum(len(a) >= 6 for a in recorder.attempts.values()) >= 0.9 * n, 20)
        await recorder.stop()
        tower.hub.config.port = port
        await tower.hub.start()
        await wait_for(lambda: all(s.connected for s in shims), 20)
    finally:
        await asyncio.gather(*(s.close() for s in shims))
    gaps = [b - a for times in recorder.attempts.values() for a, b in itertools.pairwise(times[2:])]
    assert len(gaps) > 2 * n
    early = sum(g < 0.9 * cap for g in gaps) / len(gaps)
    # uniform(0.5, 1.5) < 0.9 for 40% of the draws; lockstep gives 0%.
    assert early > 0.15, f"no jitter: only {early:.0%} of retry intervals are shorter than the cap"


async def test_reconnect_storm_is_absorbed_and_every_session_resumes(tower: Tower) -> None:
    n, cap = 300, 0.3
    shims = storm_shims(tower, n, cap)
    ran: list[str] = []

    async def act(shim: Shim, what: str) -> None:
        approved = await shim.admit(Action(action_id=new_action_id(), kind="shell", command=f"echo {what}"))
        approved.set_result(0, b"ok")
        shim.report(approved)
        ran.append(approved.action.action_id)

    try:
        await asyncio.gather(*(s.start() for s in shims))
        assert all(s.connected for s in shims)
        sids = [s.session_id for s in shims]
        await asyncio.gather(*(act(s, "before") for s in shims))

        port = tower.hub.port
        await tower.hub.stop()
        await wait_for(lambda: not any(s.connected for s in shims), 10)
        # All of them come back to the restarted hub (same port, same database).
        tower.hub.config.port = port
        await tower.hub.start()
        await wait_for(lambda: all(s.connected for s in shims), 30)
        # Every shim resumed its own session and works.
        assert [s.session_id for s in shims] == sids
        svc = tower.hub.service
        assert svc is not None
        await wait_for(lambda: sum(1 for s in svc.reg.sessions.values() if s.conn is not None) == n)
        await asyncio.gather(*(act(s, "after") for s in shims))
    finally:
        await asyncio.gather(*(s.close() for s in shims))

    def recorded() -> bool:
        got = rows(tower.db, "SELECT COUNT(*) FROM actions WHERE state = 'succeeded'")
        return got == [(2 * n,)]

    await wait_for(recorded, 20)
    stored = {str(r[0]) for r in rows(tower.db, "SELECT action_id FROM actions")}
    assert stored == set(ran) and len(ran) == 2 * n  # nothing lost
    assert rows(tower.db, "SELECT COUNT(*) FROM sessions") == [(n,)]  # no session was started twice
    await final_checks(tower)
