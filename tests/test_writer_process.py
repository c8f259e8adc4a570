"""The hub's writer in its own process (``Store.open(writer_process=True)``).

Same group-commit semantics as the thread writer; plus what a process adds:
errors and decisions cross the pipe intact, a dead writer process makes every
write fail (the hub then refuses: fail closed), and a writer whose parent was
SIGKILLed exits by itself instead of holding the database.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import socket
import sqlite3
import sys
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import cast

import pytest

from towerctl.store import (
    AlreadyDecided,
    Conflict,
    InvalidTransition,
    Store,
    StoreError,
    ops,
    ops_sessions,
    writer_child,
)
from towerctl.store.applier import Applier
from towerctl.store.models import ActionRow, DecisionRow, OutcomeRow, SessionRow
from towerctl.store.writer_proc import ProcessWriter

from .conftest import wait_for

pytestmark = pytest.mark.timeout(60)

T0 = 1_700_000_000_000
DIGEST = "ab" * 32


def session() -> SessionRow:
    return SessionRow(
        session_id="s-1", agent="a", env="prod", host="h", pid=1, status="active", started_at=T0, last_seen=T0
    )


def action(aid: str, *, state: str = "allowed", verdict: str = "allow") -> ActionRow:
    return ActionRow(
        action_id=aid,
        session_id="s-1",
        kind="shell",
        command=f"echo {aid}",
        target=None,
        digest=DIGEST,
        risk="read",
        reasons=("echo",),
        policy_verdict=verdict,
        rule=None,
        state=state,
        body=f'{{"action_id":"{aid}","command":"echo {aid}"}}',
        created_at=T0,
        updated_at=T0,
        expires_at=T0 + 60_000 if state == "pending" else None,
    )


def key_of(tmp_path: Path) -> Path:
    return tmp_path / "k" / "audit.key"


async def open_store(tmp_path: Path) -> Store:
    return await Store.open(tmp_path / "t.db", key_path=key_of(tmp_path), writer_process=True)


async def verify(tmp_path: Path, key: Path) -> bool:
    store = await Store.open(tmp_path / "t.db", key_path=key)
    try:
        return (await store.verify()).ok
    finally:
        await store.close()


async def test_a_concurrent_lifecycle_commits_in_batches_and_verifies(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    try:
        assert isinstance(store._writer, ProcessWriter)
        assert store._writer.pid != os.getpid()
        await store.session_started(session(), resumed=False, ts_ms=T0)

        async def one(i: int) -> None:
            aid = f"a-{i:04d}"
            assert await store.action_proposed(action(aid), actor="agent:a", ts_ms=T0 + 1) is None
            store.queue_action_state(aid, "running", actor="agent:a", ts_ms=T0 + 2)
            outcome = OutcomeRow(
                action_id=aid,
                status="succeeded",
                exit_code=0,
                duration_ms=1,
                output_digest=None,
                output_tail="ok",
                reported_at=T0 + 3,
            )
            await store.queue_action_finished(outcome, actor="agent:a", ts_ms=T0 + 3)

        await asyncio.gather(*(one(i) for i in range(300)))
        stats = store.write_stats
        assert stats.operations >= 901 and stats.largest_batch > 1  # batched, not one by one
        # A re-sent proposal answers with its state; a clash is a Conflict, across the pipe.
        assert await store.action_proposed(action("a-0001"), actor="agent:a", ts_ms=T0 + 5) == "succeeded"
        clash = replace(action("a-0001"), digest="cd" * 32)
        with pytest.raises(Conflict, match="different action"):
            await store.action_proposed(clash, actor="agent:a", ts_ms=T0 + 5)
        with pytest.raises(InvalidTransition):
            await store.action_state("a-0002", "running", actor="x", ts_ms=T0 + 6)
    finally:
        await store.close()
    assert await verify(tmp_path, key_of(tmp_path))
    with sqlite3.connect(tmp_path / "t.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM outcomes").fetchone() == (300,)


def _hold(fifo: str, conn: sqlite3.Connection) -> int:
    """Runs in the writer process: busy until the test writes a byte to ``fifo``."""
    with open(fifo, "rb") as f:
        return len(f.read(1))


def _release(fifo: Path) -> None:
    with open(fifo, "wb") as f:  # blocks until the writer process has it open
        f.write(b"x")


async def test_writes_queued_while_the_writer_process_is_busy_are_sent_to_it(tmp_path: Path) -> None:
    """A write waits for the transaction under way and then its own, never for
    batches the hub holds back: while the child is busy, everything queued
    goes down the socket (where the child merges it into one transaction)."""
    store = await open_store(tmp_path)
    fifo = tmp_path / "hold"
    os.mkfifo(fifo)
    released = False
    try:
        await store.session_started(session(), resumed=False, ts_ms=T0)
        writer = cast(ProcessWriter, store._writer)
        held = asyncio.ensure_future(writer.run_on_connection(partial(_hold, str(fifo))))
        await wait_for(lambda: len(writer._inflight) == 1)  # the child is busy from here
        writes = []
        for i in range(6):
            writes.append(
                asyncio.ensure_future(store.action_proposed(action(f"a-{i}"), actor="agent:a", ts_ms=T0))
            )
            await asyncio.sleep(0)  # one loop turn: the writer's task sends what is queued
        await wait_for(lambda: writer._queue.empty() and len(writer._inflight) >= 3)
        assert not any(w.done() for w in writes)
        await asyncio.to_thread(_release, fifo)
        released = True
        assert await asyncio.wait_for(held, 10) == 1
        assert await asyncio.wait_for(asyncio.gather(*writes), 10) == [None] * 6
    finally:
        if not released:  # never leave the writer process blocked
            await asyncio.to_thread(_release, fifo)
        await store.close()
    assert await verify(tmp_path, key_of(tmp_path))


async def test_already_decided_crosses_the_pipe_with_the_winner(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    try:
        await store.session_started(session(), resumed=False, ts_ms=T0)
        await store.action_proposed(action("p-1", state="pending", verdict="ask"), actor="agent:a", ts_ms=T0)
        first = DecisionRow("d-1", "p-1", "approved", "alice", "ok", DIGEST, T0 + 1)
        second = DecisionRow("d-2", "p-1", "denied", "bob", "no", DIGEST, T0 + 1)
        results = await asyncio.gather(
            store.action_decided(first, new_state="approved", ts_ms=T0 + 1),
            store.action_decided(second, new_state="denied", ts_ms=T0 + 1),
            return_exceptions=True,
        )
        assert results[0] == first
        assert isinstance(results[1], AlreadyDecided)
        assert results[1].existing.operator == "alice"  # who won, not just a message
    finally:
        await store.close()
    assert await verify(tmp_path, key_of(tmp_path))


async def test_a_dead_writer_process_fails_every_write_closed(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    writer = store._writer
    assert isinstance(writer, ProcessWriter)
    try:
        await store.session_started(session(), resumed=False, ts_ms=T0)
        os.kill(writer.pid, signal.SIGKILL)
        with pytest.raises(StoreError):
            await store.action_proposed(action("x-1"), actor="agent:a", ts_ms=T0 + 1)
        with pytest.raises(StoreError):  # and every later one, at once
            await store.action_proposed(action("x-2"), actor="agent:a", ts_ms=T0 + 2)
    finally:
        with pytest.raises(StoreError):  # the final checkpoint cannot be written: said, not hidden
            await store.close()
    with sqlite3.connect(tmp_path / "t.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM actions").fetchone() == (0,)
    assert await verify(tmp_path, key_of(tmp_path))


_PARENT = """
import asyncio, sys
from pathlib import Path
from towerctl.store import Store

async def main() -> None:
    store = await Store.open(Path(sys.argv[1]), key_path=Path(sys.argv[2]), writer_process=True)
    await store.audit_note("hub.started", actor="test", data={}, ts_ms=1)
    print(store._writer.pid, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def exited(pid: int, timeout: float) -> None:
    """Wait for a process that is not our child to exit: its pidfd turns readable."""
    fd = os.pidfd_open(pid)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(fd, done.set)
    try:
        await asyncio.wait_for(done.wait(), timeout)
    finally:
        loop.remove_reader(fd)
        os.close(fd)


async def test_writer_exits_when_its_parent_is_killed(tmp_path: Path) -> None:
    parent = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _PARENT,
        str(tmp_path / "t.db"),
        str(tmp_path / "k.key"),
        stdout=asyncio.subprocess.PIPE,
    )
    assert parent.stdout is not None
    child = int((await asyncio.wait_for(parent.stdout.readline(), 30)).decode())
    fd = os.pidfd_open(child)  # fails if it is already gone
    os.close(fd)
    parent.send_signal(signal.SIGKILL)
    await parent.wait()
    await exited(child, 10)  # TimeoutError here: the writer outlived its hub
    # The database is not left locked: a new store opens and writes at once.
    store = await Store.open(tmp_path / "t.db", key_path=tmp_path / "k.key", busy_timeout_ms=500)
    try:
        await store.audit_note("hub.started", actor="test", data={}, ts_ms=2)
    finally:
        await store.close()
    assert await verify(tmp_path, tmp_path / "k.key")


@pytest.mark.parametrize("process", [True, False], ids=["process", "thread"])
async def test_the_wal_is_copied_back_when_the_writer_is_idle(tmp_path: Path, process: bool) -> None:
    """The checkpoint runs between batches, not inside a COMMIT: once
    IDLE_CHECKPOINT_COMMITS batches went by and the queue is empty, the
    database file alone (no -wal beside it) holds them; the next batch alone
    does not bring another checkpoint."""
    from towerctl.store.applier import IDLE_CHECKPOINT_COMMITS

    def rows_in_db_file_alone() -> int:
        alone = tmp_path / "alone.db"
        alone.write_bytes((tmp_path / "t.db").read_bytes())
        conn = sqlite3.connect(alone)
        try:
            n: int = conn.execute("SELECT COUNT(*) FROM actions").fetchone()[0]
        except sqlite3.OperationalError:  # not even the schema is in the file yet
            n = 0
        finally:
            conn.close()
        alone.unlink()
        return n

    store = await Store.open(tmp_path / "t.db", key_path=key_of(tmp_path), writer_process=process)
    try:
        writer = store._writer
        await store.session_started(session(), resumed=False, ts_ms=T0)
        for i in range(IDLE_CHECKPOINT_COMMITS - 2):
            await store.action_proposed(action(f"a-{i}"), actor="agent:a", ts_ms=T0 + 1)
        assert writer.stats.idle_checkpoints == 0
        assert rows_in_db_file_alone() == 0  # still only in the WAL
        await store.action_proposed(action("a-last"), actor="agent:a", ts_ms=T0 + 1)
        # Nothing else is queued, so the writer checkpoints after that batch.
        await asyncio.wait_for(writer.idle_checkpoints_reach(1), 10)
        assert rows_in_db_file_alone() == IDLE_CHECKPOINT_COMMITS - 1
        await store.action_proposed(action("a-next"), actor="agent:a", ts_ms=T0 + 1)
        assert writer.stats.idle_checkpoints == 1
        assert rows_in_db_file_alone() == IDLE_CHECKPOINT_COMMITS - 1  # a-next is in the WAL only
    finally:
        await store.close()


def _message(kind: str, payload: object) -> bytes:
    data = pickle.dumps((kind, payload), protocol=pickle.HIGHEST_PROTOCOL)
    return writer_child.HEADER.pack(len(data)) + data


def _count_rows(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM actions").fetchone()[0])


def test_batches_that_queued_up_commit_together_and_answer_one_by_one(tmp_path: Path) -> None:
    """What the child does when batches pile up while it is busy: it reads
    all of them (a connection call ends the group), runs them as one
    transaction, and still answers each batch with its own per-operation
    results, a failing operation failing only itself."""
    applier = Applier(
        tmp_path / "t.db", key_of(tmp_path), synchronous="FULL", busy_timeout_ms=1000, checkpoint_every=256
    )
    applier.open()
    parent, child = socket.socketpair()
    try:
        propose = partial(ops.action_proposed, actor="agent:a", ts_ms=T0 + 1)
        first = [partial(ops_sessions.session_started, row=session(), resumed=False, ts_ms=T0)]
        second = [partial(propose, row=action("a-1")), partial(propose, row=action("a-2"))]
        clashing = replace(action("a-1"), digest="cd" * 32)
        third = [partial(propose, row=clashing), partial(propose, row=action("a-3"))]
        for batch in (first, second, third):
            parent.sendall(_message("batch", batch))
        parent.sendall(_message("conn", _count_rows))
        parent.sendall(_message("batch", [partial(propose, row=action("a-4"))]))

        group, eof = writer_child._read_group(child)
        assert not eof
        assert [kind for kind, _ in group] == ["batch", "batch", "batch", "conn"]
        before = applier.commits_since_checkpoint
        batches = [payload for kind, payload in group if kind == "batch"]
        replies = writer_child._apply_batches(applier, batches)
        assert applier.commits_since_checkpoint == before + 1  # one transaction for three batches
        assert [kind for kind, _ in replies] == ["ok", "ok", "ok"]
        results = [cast(list[tuple[bool, object]], value) for _, value in replies]
        assert [[ok for ok, _ in r] for r in results] == [[True], [True, True], [False, True]]
        clash = results[2][0][1]
        assert isinstance(clash, Conflict) and "different action" in str(clash)

        # The batch after the connection call starts the next group.
        group, eof = writer_child._read_group(child)
        assert [kind for kind, _ in group] == ["batch"] and not eof
        parent.close()
        assert writer_child._read_group(child) == ([], True)
    finally:
        child.close()
        applier.close()
    with sqlite3.connect(tmp_path / "t.db") as conn:
        assert conn.execute("SELECT action_id FROM actions ORDER BY action_id").fetchall() == [
            ("a-1",),
            ("a-2",),
            ("a-3",),
        ]
