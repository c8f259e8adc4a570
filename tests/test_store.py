"""The store against real SQLite files: lifecycle, group commit, failure
isolation, checkpoints, and tampering with the file behind its back."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import closing
from functools import partial
from pathlib import Path
from typing import get_args

import pytest

from agent_shim.canonical import canonical_json
from agent_shim.types import RISKS, VERDICTS, ActionState
from towerctl.audit import chain
from towerctl.audit.signing import load_public_key
from towerctl.audit.verify import export_audit, verify_database
from towerctl.store import (
    ActionRow,
    AlreadyDecided,
    DecisionRow,
    InvalidTransition,
    NotFound,
    OutcomeRow,
    SessionRow,
    Store,
    StoreError,
    TokenRow,
)
from towerctl.store.ops import to_json
from towerctl.store.schema import MIGRATIONS, apply_migration, migrate, user_version
from towerctl.store.tx import Tx

T0 = 1_750_000_000_000
DIGEST = "d" * 64


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "tower.db"


@pytest.fixture
def key(tmp_path: Path) -> Path:
    return tmp_path / "keys" / "audit.key"


@pytest.fixture
async def store(db: Path, key: Path) -> AsyncIterator[Store]:
    s = await Store.open(db, key_path=key)
    yield s
    await s.close()


def session(sid: str = "s-1", status: str = "active") -> SessionRow:
    return SessionRow(
        session_id=sid,
        agent="claude",
        env="prod",
        host="web-1",
        pid=4242,
        status=status,
        started_at=T0,
        last_seen=T0,
    )


def action(
    aid: str = "a-1",
    *,
    sid: str = "s-1",
    state: str = "pending",
    verdict: str = "ask",
    digest: str = DIGEST,
    expires_at: int | None = T0 + 300_000,
) -> ActionRow:
    return ActionRow(
        action_id=aid,
        session_id=sid,
        kind="k8s",
        command="kubectl delete deployment api",
        target="prod-cluster",
        digest=digest,
        risk="destructive",
        reasons=("deletes a deployment",),
        policy_verdict=verdict,
        rule={"kind": "k8s", "match": "kubectl delete*", "verdict": verdict},
        state=state,
        body=to_json({"action_id": aid, "kind": "k8s", "command": "kubectl delete deployment api"}),
        created_at=T0,
        updated_at=T0,
        expires_at=expires_at,
    )


def decision(aid: str = "a-1", verdict: str = "approved", operator: str = "alice") -> DecisionRow:
    return DecisionRow(
        decision_id=f"d-{aid}-{operator}",
        action_id=aid,
        verdict=verdict,
        operator=operator,
        reason="looks right",
        digest=DIGEST,
        decided_at=T0 + 10,
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def events(rows: list[chain.AuditRow]) -> list[str]:
    return [r.event for r in rows]


# ------------------------------------------------------------------ opening


async def test_open_creates_schema_private_files_and_key(db: Path, key: Path) -> None:
    s = await Store.open(db, key_path=key)
    try:
        assert mode(key) == 0o600
        assert mode(db) == 0o600
        with closing(sqlite3.connect(db)) as conn:
            assert user_version(conn) == len(MIGRATIONS)
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert {
            "tokens",
            "sessions",
            "actions",
            "decisions",
            "outcomes",
            "policies",
            "env_state",
            "audit",
            "checkpoints",
        } <= tables
        assert await s.checkpoint() is None  # nothing to sign yet
    finally:
        await s.close()
    assert verify_database(db, key).ok


async def test_migrations_are_idempotent(db: Path, key: Path) -> None:
    await (await Store.open(db, key_path=key)).close()
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        assert migrate(conn) == len(MIGRATIONS)
        assert migrate(conn) == len(MIGRATIONS)
    s = await Store.open(db, key_path=key)
    await s.close()
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(StoreError, match="newer than this towerctl"):
        await Store.open(db, key_path=key)


def _old_database(db: Path, key: Path, version: int) -> list[tuple[object, ...]]:
    """A log as towerctl wrote it under schema ``version``: a session, a
    pending action and a finished one (its outcome in the outcomes table of
    versions 1-2). Returns the audit table's rows."""
    from towerctl.audit.signing import load_or_create_key
    from towerctl.store import ops, ops_sessions

    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA foreign_keys = ON")
        for step in MIGRATIONS[:version]:
            apply_migration(conn, step)
        conn.execute(f"PRAGMA user_version = {version}")
        tx = Tx(conn, load_or_create_key(key))
        conn.execute("BEGIN IMMEDIATE")
        ops_sessions.session_started(tx, session(), resumed=False, ts_ms=T0)
        ops.action_proposed(tx, action(), actor="agent:claude", ts_ms=T0 + 1)
        done = action("a-2", state="allowed", verdict="allow")
        ops.action_proposed(tx, done, actor="agent:claude", ts_ms=T0 + 1, started=True)
        # Before 2026-11-29 every transition of a proposal had a record of its
        # own: a log holding both forms must still verify.
        for aid, event, data in (
            ("a-1", "action.pending", {"digest": DIGEST, "policy_verdict": "ask", "expires_at": None}),
            ("a-2", "action.allowed", {"digest": DIGEST, "policy_verdict": "allow", "expires_at": None}),
            ("a-2", "action.running", {"from": "allowed"}),
        ):
            tx.audit(event, actor="agent:claude", ts_ms=T0 + 1, session_id="s-1", action_id=aid, data=data)
        if version < 3:
            conn.execute(
                "INSERT INTO outcomes (action_id, status, exit_code, duration_ms, output_digest, output_tail,"
                " reported_at) VALUES ('a-2', 'failed', 3, 40, NULL, 'boom', ?)",
                (T0 + 2,),
            )
            failed = "UPDATE actions SET state = 'failed', updated_at = ? WHERE action_id = 'a-2'"
            conn.execute(failed, (T0 + 2,))
        else:
            conn.execute(
                "UPDATE actions SET state = 'failed', updated_at = ?1, outcome_status = 'failed',"
                " exit_code = 3, duration_ms = 40, output_tail = 'boom', reported_at = ?1"
                " WHERE action_id = 'a-2'",
                (T0 + 2,),
            )
        tx.audit(
            "action.failed",
            actor="agent:claude",
            ts_ms=T0 + 2,
            session_id="s-1",
            action_id="a-2",
            data={
                "exit_code": 3,
                "duration_ms": 40,
                "output_digest": None,
                "output_tail": "boom",
                "from": "running",
            },
        )
        conn.execute("COMMIT")
        return conn.execute("SELECT * FROM audit ORDER BY seq").fetchall()


@pytest.mark.parametrize("version", [1, 2, 3])
async def test_an_older_log_upgrades_with_its_records_hashes_and_outcomes_intact(
    db: Path, key: Path, version: int
) -> None:
    """Version 2 drops the audit log's per-action and per-session indexes;
    version 3 moves outcomes into their actions' rows; version 4 rewrites the
    value-list CHECKs (schema.py says why). A log written under an older
    version keeps every record and outcome, still verifies, and takes new
    outcomes."""
    before = _old_database(db, key, version)
    s = await Store.open(db, key_path=key)
    try:
        assert events(await s.audit_rows(action_id="a-1")) == ["action.proposed", "action.pending"]
        assert events(await s.audit_rows(action_id="a-2")) == [
            "action.proposed",
            "action.allowed",
            "action.running",
            "action.failed",
        ]
        assert await s.outcome("a-2") == OutcomeRow("a-2", "failed", 3, 40, None, "boom", T0 + 2)
        assert await s.outcome("a-1") is None
        await s.action_decided(decision(), new_state="approved", ts_ms=T0 + 3)
        await s.action_state("a-1", "running", actor="agent:claude", ts_ms=T0 + 4)
        fresh = OutcomeRow("a-1", "succeeded", 0, 9, None, "ok", T0 + 5)
        await s.action_finished(fresh, actor="agent:claude", ts_ms=T0 + 5, expect=("s-1", "running"))
        assert await s.outcome("a-1") == fresh
        with pytest.raises(InvalidTransition):
            await s.action_finished(fresh, actor="agent:claude", ts_ms=T0 + 6)
        assert (await s.verify()).ok
    finally:
        await s.close()
    with closing(sqlite3.connect(db)) as conn:
        assert user_version(conn) == len(MIGRATIONS)
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert not {"audit_by_action", "audit_by_session", "actions_by_session"} & indexes
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert not _in_list_checks(conn)
        assert conn.execute("SELECT * FROM audit ORDER BY seq").fetchall()[: len(before)] == before
        # The view keeps queries written against the old table working.
        assert conn.execute(
            "SELECT action_id, status, exit_code FROM outcomes ORDER BY action_id"
        ).fetchall() == [
            ("a-1", "succeeded", 0),
            ("a-2", "failed", 3),
        ]


def _in_list_checks(conn: sqlite3.Connection) -> list[str]:
    """Tables written per action whose stored CREATE TABLE still checks an IN list."""
    rows = conn.execute("SELECT name, sql FROM sqlite_master WHERE name IN ('actions', 'decisions')")
    return [name for name, sql in rows if " IN (" in sql]


#: (table, column, allowed values, nullable) of every value list schema v4 rewrote.
_VALUE_LISTS = [
    ("actions", "risk", RISKS, False),
    ("actions", "policy_verdict", VERDICTS, False),
    ("actions", "state", get_args(ActionState), False),
    ("actions", "outcome_status", ("succeeded", "failed"), True),
    ("decisions", "verdict", ("approved", "denied", "expired"), False),
]


def _set_column(table: str, column: str, value: str | None, conn: sqlite3.Connection) -> str:
    """Try ``value`` in action a-1's row (and roll it back): "ok" or the refusal."""
    conn.execute("SAVEPOINT probe")
    try:
        conn.execute(f"UPDATE {table} SET {column} = ? WHERE action_id = 'a-1'", (value,))
        return "ok"
    except sqlite3.IntegrityError as exc:
        return str(exc)
    finally:
        conn.execute("ROLLBACK TO probe")
        conn.execute("RELEASE probe")


@pytest.mark.parametrize(("table", "column", "allowed", "nullable"), _VALUE_LISTS)
async def test_the_value_list_checks_still_hold_every_value_and_only_those(
    db: Path, key: Path, table: str, column: str, allowed: tuple[str, ...], nullable: bool
) -> None:
    """Schema v4 checks value lists with chains of comparisons (cheaper than
    IN in SQLite 3.40): the same values pass, others fail, NULL as before,
    on the writer's own connection (the one that migrated) and on a new one."""
    s = await Store.open(db, key_path=key)
    try:
        await s.session_started(session(), resumed=False, ts_ms=T0)
        await s.action_proposed(action(), actor="agent:claude", ts_ms=T0 + 1)
        await s.action_decided(decision(), new_state="approved", ts_ms=T0 + 2)

        on_writer = s._writer.run_on_connection
        for value in allowed:
            assert await on_writer(partial(_set_column, table, column, value)) == "ok"
        refused = await on_writer(partial(_set_column, table, column, "bogus"))
        assert refused.startswith("CHECK constraint failed") and " OR " in refused
        expect_null = "ok" if nullable else "NOT NULL constraint failed"
        assert (await on_writer(partial(_set_column, table, column, None))).startswith(expect_null)
    finally:
        await s.close()
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        assert not _in_list_checks(conn)
        for value in allowed:
            assert _set_column(table, column, value, conn) == "ok"
        assert _set_column(table, column, "Running", conn).startswith("CHECK constraint failed")


def test_a_process_that_never_closes_its_store_still_exits(tmp_path: Path) -> None:
    """A hub that dies on an exception before close() must exit (for its
    supervisor to restart it), not hang in interpreter shutdown on the
    reader connection's thread."""
    db, key = str(tmp_path / "t.db"), str(tmp_path / "k")
    script = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from towerctl.store import Store\n"
        "kept = []\n"
        "async def main() -> None:\n"
        f"    kept.append(await Store.open(Path({db!r}), key_path=Path({key!r})))\n"
        "    sys.exit(3)\n"
        "asyncio.run(main())\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert proc.returncode == 3, proc.stderr.decode()


async def test_bad_options_are_refused(db: Path, key: Path) -> None:
    with pytest.raises(ValueError):
        await Store.open(db, key_path=key, synchronous="OFF")
    with pytest.raises(ValueError):
        await Store.open(db, key_path=key, checkpoint_every=0)


async def test_reopen_continues_the_chain(db: Path, key: Path) -> None:
    s = await Store.open(db, key_path=key, synchronous="FULL")
    await s.audit_note("hub.started", actor="hub", data={"pid": 1}, ts_ms=T0)
    await s.session_started(session(), resumed=False, ts_ms=T0)
    await s.close()
    s = await Store.open(db, key_path=key)
    try:
        await s.audit_note("hub.started", actor="hub", data={"pid": 2}, ts_ms=T0 + 1)
        rows = await s.audit_rows()
        assert [r.seq for r in rows] == [1, 2, 3]
        assert rows[2].prev_hash == rows[1].hash
        assert (await s.verify()).ok
    finally:
        await s.close()
    result = verify_database(db, key)
    assert (result.ok, result.records, result.checkpoints) == (True, 3, 2)


async def test_missing_or_wrong_key_with_checkpoints_refuses_to_open(
    db: Path, key: Path, tmp_path: Path
) -> None:
    s = await Store.open(db, key_path=key)
    await s.audit_note("hub.started", actor="hub", data={}, ts_ms=T0)
    await s.close()
    with pytest.raises(StoreError, match="missing"):
        await Store.open(db, key_path=tmp_path / "gone.key")
    assert not (tmp_path / "gone.key").exists()
    other = tmp_path / "other.key"
    await (await Store.open(tmp_path / "other.db", key_path=other)).close()
    with pytest.raises(StoreError, match="signed by key"):
        await Store.open(db, key_path=other)


async def test_key_readable_by_others_is_refused(db: Path, key: Path) -> None:
    await (await Store.open(db, key_path=key)).close()
    os.chmod(key, 0o644)
    with pytest.raises(StoreError, match="chmod 600"):
        await Store.open(db, key_path=key)


# ------------------------------------------------------------------ lifecycle


async def test_propose_decide_run_finish_round_trip(store: Store) -> None:
    await store.session_started(session(), resumed=False, ts_ms=T0)
    await store.action_proposed(action(), actor="agent:claude", ts_ms=T0 + 1)
    assert [a.action_id for a in await store.actions(states={"pending"})] == ["a-1"]
    got = await store.action_decided(decision(), new_state="approved", ts_ms=T0 + 2)
    assert got == decision()
    await store.action_state("a-1", "running", actor="agent:claude", ts_ms=T0 + 3)
    outcome = OutcomeRow("a-1", "succeeded", 0, 1234, "o" * 64, "deployment deleted", T0 + 4)
    await store.action_finished(outcome, actor="agent:claude", ts_ms=T0 + 4)

    row = await store.action("a-1")
    assert row is not None
    assert (row.state, row.updated_at, row.reasons, row.rule) == (
        "succeeded",
        T0 + 4,
        ("deletes a deployment",),
        action().rule,
    )
    assert row.body == action().body
    assert await store.decision("a-1") == decision()
    assert await store.outcome("a-1") == outcome
    assert await store.actions(states={"pending"}) == []

    rows = await store.audit_rows(action_id="a-1")
    assert events(rows) == ["action.proposed", "action.approved", "action.running", "action.succeeded"]
    assert [r.actor for r in rows] == ["agent:claude", "alice", "agent:claude", "agent:claude"]
    assert rows[0].data["body"] == json.loads(action().body) and rows[0].data["digest"] == DIGEST
    assert (rows[0].data["states"], rows[0].data["policy_verdict"]) == (["pending"], "ask")
    assert rows[0].data["expires_at"] == action().expires_at
    assert rows[1].data["operator"] == "alice" and rows[1].data["digest"] == DIGEST
    assert rows[3].data["exit_code"] == 0
    assert events(await store.audit_rows(session_id="s-1"))[0] == "session.started"
    assert events(await store.audit_rows(actor="alice")) == ["action.approved"]
    assert [r.seq for r in await store.audit_rows(since_seq=3, limit=2)] == [4, 5]
    assert (await store.verify()).ok


async def test_the_per_action_records_are_canonical_without_the_walk(store: Store) -> None:
    """The writer skips the float walk for the records of a proposal and its
    outcome (typed=True): re-encoding each stored body canonically must give
    back the very bytes that were hashed, odd text included."""
    odd = 'naïve "quoted" \\ tab\t nl\n nul\x00 emoji \U0001f680 \u2028'
    row = dataclasses.replace(
        action("a-odd", state="allowed", verdict="allow"),
        command=odd,
        body=to_json({"action_id": "a-odd", "kind": "shell", "command": odd, "declared_risk": None}),
        rule=None,
    )
    await store.session_started(session(), resumed=False, ts_ms=T0)
    await store.action_proposed(row, actor="agent:claude", ts_ms=T0 + 1, started=True)
    outcome = OutcomeRow("a-odd", "failed", 3, 12, None, odd, T0 + 2)
    await store.action_finished(outcome, actor="agent:claude", ts_ms=T0 + 2)
    rows = await store.audit_rows(action_id="a-odd")
    assert events(rows) == ["action.proposed", "action.failed"]
    for r in rows:
        assert canonical_json(json.loads(r.body)) == r.body.encode("utf-8")
    assert rows[0].data["body"] == json.loads(row.body) and rows[0].data["states"] == ["allowed", "running"]
    assert rows[1].data["output_tail"] == odd
    assert (await store.verify()).ok


@pytest.mark.parametrize(
    ("expect", "recorded_from"),
    [
        pytest.param(("s-1", "running"), "running", id="belief right: one compare-and-set"),
        pytest.param(("s-1", "allowed"), "running", id="stale state: the read decides"),
        pytest.param(("s-2", "running"), "running", id="wrong session: the read decides"),
        pytest.param(("s-1", "pending"), "running", id="unfinishable belief: the read decides"),
        pytest.param(None, "running", id="no belief"),
    ],
)
async def test_an_outcome_with_the_hubs_belief_records_the_truth(
    store: Store, expect: tuple[str, str] | None, recorded_from: str
) -> None:
    await store.session_started(session(), resumed=False, ts_ms=T0)
    await store.action_proposed(
        action("a-1", state="allowed", verdict="allow"), actor="agent:claude", ts_ms=T0 + 1, started=True
    )
    outcome = OutcomeRow("a-1", "succeeded", 0, 5, None, "ok", T0 + 2)
    await store.action_finished(outcome, actor="agent:claude", ts_ms=T0 + 2, expect=expect)
    row = await store.action("a-1")
    assert row is not None and (row.state, row.updated_at) == ("succeeded", T0 + 2)
    assert await store.outcome("a-1") == outcome
    last = (await store.audit_rows(action_id="a-1"))[-1]
    assert (last.event, last.session_id, last.data["from"]) == ("action.succeeded", "s-1", recorded_from)
    # A second report, whatever the caller believes, is refused and changes nothing.
    for again in (expect, ("s-1", "running"), None):
        with pytest.raises(InvalidTransition):
            await store.action_finished(outcome, actor="agent:claude", ts_ms=T0 + 3, expect=again)
    assert len(await store.audit_rows(action_id="a-1")) == 2
    assert (await store.verify()).ok


def test_a_right_belief_finishes_an_action_without_reading_it(db: Path) -> None:
    """The per-report fast path: one UPDATE that checks and moves, no SELECT."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from towerctl.store import ops, ops_sessions

    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("PRAGMA foreign_keys = ON")
        migrate(conn)
        tx = Tx(conn, Ed25519PrivateKey.generate())
        ops_sessions.session_started(tx, session(), resumed=False, ts_ms=T0)
        allowed = action("a-1", state="allowed", verdict="allow")
        ops.action_proposed(tx, allowed, actor="a", ts_ms=T0, started=True)
        statements: list[str] = []
        conn.set_trace_callback(statements.append)
        outcome = OutcomeRow("a-1", "failed", 2, 5, None, "", T0 + 1)
        ops.action_finished(tx, outcome, actor="a", ts_ms=T0 + 1, expect=("s-1", "running"))
        conn.set_trace_callback(None)
        assert [st.split()[0] for st in statements] == ["UPDATE", "INSERT"]  # the row, its audit record
        assert conn.execute("SELECT state FROM actions").fetchall() == [("failed",)]


async def test_second_decision_raises_already_decided(store: Store) -> None:
    await store.session_started(session(), resumed=False, ts_ms=T0)
    await store.action_proposed(action(), actor="agent:claude", ts_ms=T0)
    first, second = await asyncio.gather(
        store.action_decided(decision(operator="alice"), new_state="approved", ts_ms=T0 + 1),
        store.action_decided(decision(verdict="denied", operator="bob"), new_state="denied", ts_ms=T0 + 1),
        return_exceptions=True,
    )
    assert first == decision(operator="alice")
    assert isinstance(second, AlreadyDecided)
    assert second.existing == decision(operator="alice")
    with pytest.raises(AlreadyDecided) as exc:
        await store.action_decided(decision(operator="carol"), new_state="approved", ts_ms=T0 + 2)
    assert exc.value.existing.operator == "alice"
    assert events(await store.audit_rows(action_id="a-1")).count("action.approved") == 1


async def test_the_body_text_is_stored_as_given_in_the_row_and_the_record(store: Store) -> None:
    """``ActionRow.body`` is the hub's canonical text from the digest: the
    row's column holds exactly it, and the ``action.proposed`` record embeds
    it unchanged, so what was digested is what the log hashes."""
    await store.session_started(session(), resumed=False, ts_ms=T0)
    await store.action_proposed(action(), actor="agent:a", ts_ms=T0)
    got = await store.action("a-1")
    assert got is not None and got.body == action().body
    (record,) = [r for r in await store.audit_rows(limit=100) if r.action_id == "a-1"]
    assert '"body":' + action().body + "," in record.body
    assert (await store.verify()).ok


async def test_proposal_resend_is_idempotent_and_id_reuse_is_refused(store: Store) -> None:
    await store.session_started(session(), resumed=False, ts_ms=T0)
    await store.action_proposed(action(), actor="agent:claude", ts_ms=T0)
    await store.action_proposed(action(), actor="agent:claude", ts_ms=T0 + 5)
    assert len(await store.audit_rows(action_id="a-1")) == 1
    with pytest.raises(StoreError, match="different action"):
        await store.action_proposed(action(digest="e" * 64), actor="agent:claude", ts_ms=T0)


@pytest.mark.parametrize(
    ("setup", "attempt", "error"),
    [
        pytest.param(
            "pending",
            lambda s: s.action_state("a-1", "running", actor="x", ts_ms=T0 + 1),
            InvalidTransition,
            id="run a pending action",
        ),
        pytest.param(
            "denied",
            lambda s: s.action_state("a-1", "cancelled", actor="x", ts_ms=T0 + 1),
            InvalidTransition,
            id="cancel a denied action",
        ),
        pytest.param(
            "allowed",
            lambda s: s.action_decided(decision(), new_state="approved", ts_ms=T0 + 1),
            InvalidTransition,
            id="decide an allowed action",
        ),
        pytest.param(
            "pending",
            lambda s: s.action_decided(
                DecisionRow("d", "a-1", "approved", "alice", "", "f" * 64, T0),
                new_state="approved",
                ts_ms=T0 + 1,
            ),
            StoreError,
            id="decision for another digest",
        ),
        pytest.param(
            "pending",
            lambda s: s.action_decided(decision(), new_state="denied", ts_ms=T0 + 1),
            StoreError,
            id="new_state differs from verdict",
        ),
        pytest.param(
            "pending",
            lambda s: s.action_decided(decision(), new_state="approved", ts_ms=T0 + 300_001),
            InvalidTransition,
            id="approval after the deadline",
        ),
        pytest.param(
            "pending",
            lambda s: s.action_finished(
                OutcomeRow("a-1", "succeeded", 0, 1, None, "", T0), actor="x", ts_ms=T0
            ),
            InvalidTransition,
            id="finish a pending action",
        ),
        pytest.param(
            "denied",
            lambda s: s.action_state("a-1", "succeeded", actor="x", ts_ms=T0),
            InvalidTransition,
            id="generic transition to a final state",
        ),
        pytest.param(
            "none",
            lambda s: s.action_state("nope", "running", actor="x", ts_ms=T0),
            NotFound,
            id="unknown action",
        ),
        pytest.param(
            "none",
            lambda s: s.action_proposed(action(sid="nope"), actor="x", ts_ms=T0),
            NotFound,
            id="unknown session",
        ),
        pytest.param(
            "none",
            lambda s: s.action_proposed(action(state="allowed", verdict="ask"), actor="x", ts_ms=T0),
            StoreError,
            id="allowed without an allow verdict",
        ),
        pytest.param(
            "none",
            lambda s: s.action_proposed(action(state="pending", verdict="deny"), actor="x", ts_ms=T0),
            StoreError,
            id="pending although policy denies",
        ),
        pytest.param(
            "none",
            lambda s: s.audit_note("hub.started", actor="hub", data={}, ts_ms=1.5),
            StoreError,
            id="float time",
        ),
        pytest.param(
            "none",
            lambda s: s.audit_note("hub.started", actor="hub", data={"x": 0.1}, ts_ms=T0),
            StoreError,
            id="float in audit data",
        ),
    ],
)
async def test_illegal_changes_are_refused_and_leave_no_trace(
    store: Store, setup: str, attempt: Callable[[Store], object], error: type[Exception]
) -> None:
    await store.session_started(session(), resumed=False, ts_ms=T0)
    if setup != "none":
        verdict = {"pending": "ask", "allowed": "allow", "denied": "deny"}[setup]
        await store.action_proposed(action(state=setup, verdict=verdict), actor="a", ts_ms=T0)
    before = await store.audit_rows()
    with pytest.raises(error):
        await attempt(store)  # type: ignore[misc]
    assert await store.audit_rows() == before
    assert (await store.verify()).ok


async def test_second_outcome_is_refused(store: Store) -> None:
    await store.session_started(session(), resumed=False, ts_ms=T0)
    await store.action_proposed(action(state="allowed", verdict="allow"), actor="a", ts_ms=T0)
    out = OutcomeRow("a-1", "failed", 1, 10, None, "boom", T0 + 1)
    await store.action_finished(out, actor="agent:claude", ts_ms=T0 + 1)  # start report lost
    with pytest.raises(InvalidTransition, match="already reported"):
        await store.action_finished(out, actor="agent:claude", ts_ms=T0 + 2)
    assert (await store.action("a-1")).state == "failed"  # type: ignore[union-attr]


async def test_kill_cancels_and_sessions_resume_as_active(store: Store) -> None:
    await store.session_started(session(), resumed=False, ts_ms=T0)
    await store.action_proposed(action(), actor="a", ts_ms=T0)
    await store.session_status("s-1", "paused", actor="alice", reason="look", ts_ms=T0 + 1)
    await store.session_status("s-1", "resumed", actor="alice", reason="ok", ts_ms=T0 + 2)
    assert (await store.session("s-1")).status == "active"  # type: ignore[union-attr]
    await store.session_status("s-1", "killed", actor="bob", reason="rogue", ts_ms=T0 + 3)
    await store.action_state("a-1", "cancelled", actor="bob", ts_ms=T0 + 3, data={"reason": "session killed"})
    killed = await store.session("s-1")
    assert killed is not None and (killed.status, killed.ended_at) == ("killed", T0 + 3)
    assert [s.session_id for s in await store.sessions(statuses={"killed"})] == ["s-1"]
    assert await store.sessions(statuses={"active", "paused"}) == []
    rows = await store.audit_rows(session_id="s-1")
    assert events(rows)[-4:] == [
        "session.paused",
        "session.resumed",
        "session.killed",
        "action.cancelled",
    ]
    assert rows[-1].data == {"reason": "session killed", "from": "pending"}
    with pytest.raises(NotFound):
        await store.session_status("nope", "paused", actor="a", reason="", ts_ms=T0)
    await store.session_started(session(status="killed"), resumed=True, ts_ms=T0 + 9)
    assert events(await store.audit_rows(since_seq=rows[-1].seq)) == ["session.resumed"]
    back = await store.session("s-1")
    assert back is not None and (back.status, back.ended_at) == ("killed", T0 + 3)


async def test_tokens_policies_and_freezes(store: Store) -> None:
    tok = TokenRow("t-1", "ci", "agent", ("dev", "staging"), "h" * 64, T0)
    await store.token_added(tok, actor="admin", ts_ms=T0)
    await store.token_added(TokenRow("t-2", "ops", "admin", (), "i" * 64, T0), actor="admin", ts_ms=T0)
    assert await store.token_by_hash("h" * 64) == tok
    with pytest.raises(StoreError):
        await store.token_added(tok, actor="admin", ts_ms=T0)
    await store.token_revoked("t-1", actor="admin", ts_ms=T0 + 1)
    await store.token_revoked("t-1", actor="admin", ts_ms=T0 + 2)  # no-op
    assert await store.token_by_hash("h" * 64) is None
    assert [t.revoked_at for t in await store.tokens()] == [T0 + 1, None]
    with pytest.raises(NotFound):
        await store.token_revoked("t-9", actor="admin", ts_ms=T0)

    assert await store.policy_saved("prod", {"write": "ask"}, actor="admin", ts_ms=T0) == 1
    assert await store.policy_saved("prod", {"write": "deny"}, actor="admin", ts_ms=T0) == 2
    assert await store.policy_saved("dev", {"write": "allow"}, actor="admin", ts_ms=T0) == 1
    assert await store.latest_policies() == {
        "prod": (2, {"write": "deny"}),
        "dev": (1, {"write": "allow"}),
    }

    await store.env_frozen("prod", True, actor="alice", ts_ms=T0)
    await store.env_frozen("dev", True, actor="alice", ts_ms=T0)
    await store.env_frozen("dev", False, actor="alice", ts_ms=T0)
    assert await store.frozen_envs() == {"prod"}

    rows = await store.audit_rows()
    assert events(rows) == [
        "token.created",
        "token.created",
        "token.revoked",
        "policy.applied",
        "policy.applied",
        "policy.applied",
        "env.frozen",
        "env.frozen",
        "env.unfrozen",
    ]
    assert rows[0].data["hash"] == "h" * 64
    assert (await store.verify()).ok


async def test_actions_listing_keeps_the_newest(store: Store) -> None:
    await store.session_started(session("s-1"), resumed=False, ts_ms=T0)
    await store.session_started(session("s-2"), resumed=False, ts_ms=T0)
    for i in range(6):
        row = action(f"a-{i}", sid=f"s-{1 + i % 2}", state="allowed", verdict="allow")
        row = dataclasses.replace(row, rule=None, created_at=T0 + i, updated_at=T0 + i)
        await store.action_proposed(row, actor="a", ts_ms=T0 + i)
    assert [a.action_id for a in await store.actions(limit=3)] == ["a-3", "a-4", "a-5"]
    assert [a.action_id for a in await store.actions(session_id="s-2")] == ["a-1", "a-3", "a-5"]
    assert await store.actions(states=()) == []
    assert (await store.action("a-0")).rule is None  # type: ignore[union-attr]


# ------------------------------------------------------------- group commit


async def test_200_concurrent_writers_are_group_committed(store: Store) -> None:
    await store.session_started(session(), resumed=False, ts_ms=T0)
    batches = store.write_stats.batches
    await asyncio.gather(
        *(
            store.action_proposed(
                action(f"a-{i}", state="allowed", verdict="allow"), actor="agent:claude", ts_ms=T0 + i
            )
            for i in range(200)
        )
    )
    assert store.write_stats.batches - batches < 20  # not one commit each
    assert len(await store.actions(limit=1000)) == 200
    rows = await store.audit_rows(limit=10_000)
    assert [r.seq for r in rows] == list(range(1, 202))
    result = await store.verify()
    assert result.ok and result.records == 201


async def test_failing_op_does_not_sink_its_batch(store: Store) -> None:
    await store.session_started(session(), resumed=False, ts_ms=T0)
    batches = store.write_stats.batches
    results = await asyncio.gather(
        store.action_proposed(action("a-1", state="allowed", verdict="allow"), actor="a", ts_ms=T0),
        store.action_proposed(action("a-2", sid="no-such-session"), actor="a", ts_ms=T0),
        store.audit_note("hub.note", actor="hub", data={"n": 1}, ts_ms=T0),
        store.action_proposed(action("a-1", digest="e" * 64), actor="a", ts_ms=T0),
        store.action_proposed(action("a-3", state="allowed", verdict="allow"), actor="a", ts_ms=T0),
        return_exceptions=True,
    )
    assert store.write_stats.batches == batches + 1  # really one transaction
    assert results[0] is None and results[2] is None and results[4] is None
    assert isinstance(results[1], NotFound)
    assert isinstance(results[3], StoreError)
    assert {a.action_id for a in await store.actions()} == {"a-1", "a-3"}
    assert len(await store.audit_rows()) == 1 + 1 + 1 + 1
    assert (await store.verify()).ok


async def test_failed_op_takes_its_audit_records_with_it(store: Store) -> None:
    def half_done(tx: Tx) -> None:
        tx.audit("test.half", actor="t", ts_ms=T0, data={})
        raise RuntimeError("boom after the audit record")

    good = store.audit_note("test.before", actor="t", data={}, ts_ms=T0)
    bad = store._writer.submit(half_done)
    after = store.audit_note("test.after", actor="t", data={}, ts_ms=T0)
    results = await asyncio.gather(good, bad, after, return_exceptions=True)
    assert isinstance(results[1], StoreError) and "boom" in str(results[1])
    rows = await store.audit_rows()
    assert events(rows) == ["test.before", "test.after"]
    assert rows[1].prev_hash == rows[0].hash
    assert (await store.verify()).ok


async def test_locked_database_fails_the_callers_then_recovers(db: Path, key: Path) -> None:
    s = await Store.open(db, key_path=key, busy_timeout_ms=50)
    try:
        await s.audit_note("test.one", actor="t", data={}, ts_ms=T0)
        with closing(sqlite3.connect(db, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")
            results = await asyncio.gather(
                s.audit_note("test.two", actor="t", data={}, ts_ms=T0),
                s.audit_note("test.three", actor="t", data={}, ts_ms=T0),
                return_exceptions=True,
            )
            other.execute("ROLLBACK")
        assert all(isinstance(r, StoreError) and "locked" in str(r) for r in results)
        await s.audit_note("test.four", actor="t", data={}, ts_ms=T0)
        rows = await s.audit_rows()
        assert [(r.seq, r.event) for r in rows] == [(1, "test.one"), (2, "test.four")]
        assert (await s.verify()).ok
    finally:
        await s.close()


async def test_full_disk_fails_the_whole_batch_then_recovers(store: Store) -> None:
    await store.audit_note("test.one", actor="t", data={}, ts_ms=T0)

    def cap(conn: sqlite3.Connection) -> int:
        pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
        conn.execute(f"PRAGMA max_page_count = {pages}")
        return pages

    def uncap(conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA max_page_count = 1073741823")

    await store._writer.run_on_connection(cap)
    big = {"blob": "x" * 200_000}
    results = await asyncio.gather(
        store.audit_note("test.small", actor="t", data={}, ts_ms=T0),
        store.audit_note("test.big", actor="t", data=big, ts_ms=T0),
        return_exceptions=True,
    )
    assert all(isinstance(r, StoreError) and "full" in str(r) for r in results)
    await store._writer.run_on_connection(uncap)
    await store.audit_note("test.two", actor="t", data={}, ts_ms=T0)
    assert events(await store.audit_rows()) == ["test.one", "test.two"]
    assert (await store.verify()).ok


async def test_closed_store_refuses_writes(db: Path, key: Path) -> None:
    s = await Store.open(db, key_path=key)
    await s.close()
    await s.close()
    with pytest.raises(StoreError, match="closed"):
        await s.audit_note("test.late", actor="t", data={}, ts_ms=T0)


# ---------------------------------------------------------------- checkpoints


async def test_checkpoints_every_n_records_and_at_close(db: Path, key: Path) -> None:
    s = await Store.open(db, key_path=key, checkpoint_every=10)
    for i in range(25):
        await s.audit_note("test.n", actor="t", data={"i": i}, ts_ms=T0 + i)
    assert [c.seq for c in await s.checkpoints()] == [10, 20]
    cp = await s.checkpoint()
    assert cp is not None and cp.seq == 25
    assert await s.checkpoint() == cp  # nothing new: the same checkpoint, no new row
    await s.audit_note("test.n", actor="t", data={}, ts_ms=T0 + 99)
    await s.close()
    s = await Store.open(db, key_path=key, checkpoint_every=10)
    await s.close()  # nothing written since: no checkpoint added
    with closing(sqlite3.connect(db)) as conn:
        seqs = [r[0] for r in conn.execute("SELECT seq FROM checkpoints ORDER BY seq")]
    assert seqs == [10, 20, 25, 26]
    result = verify_database(db, key)
    assert (result.ok, result.checkpoints, result.checkpoints_verified) == (True, 4, True)


async def test_verify_with_public_key_only_and_without_key(db: Path, key: Path, tmp_path: Path) -> None:
    from towerctl.audit.signing import public_key_pem

    s = await Store.open(db, key_path=key)
    await s.audit_note("test.n", actor="t", data={}, ts_ms=T0)
    pub = tmp_path / "audit.pub"
    pub.write_bytes(public_key_pem(s.public_key))
    await s.close()
    assert load_public_key(pub).public_bytes_raw() == s.public_key.public_bytes_raw()
    assert verify_database(db, pub).checkpoints_verified
    no_key = verify_database(db, None)
    assert no_key.ok and not no_key.checkpoints_verified
    assert not verify_database(db, tmp_path / "absent.key").checkpoints_verified


# ------------------------------------------------------------------ tampering


def _swap(conn: sqlite3.Connection) -> None:
    cols = "ts_ms, event, actor, session_id, action_id, body, prev_hash, hash"
    a = conn.execute(f"SELECT {cols} FROM audit WHERE seq = 5").fetchone()
    b = conn.execute(f"SELECT {cols} FROM audit WHERE seq = 6").fetchone()
    sets = ", ".join(f"{c.strip()} = ?" for c in cols.split(","))
    conn.execute(f"UPDATE audit SET {sets} WHERE seq = 5", b)
    conn.execute(f"UPDATE audit SET {sets} WHERE seq = 6", a)


def _rewrite(conn: sqlite3.Connection) -> None:
    """Edit record 3 and recompute every later hash: only a checkpoint notices."""
    prev = conn.execute("SELECT hash FROM audit WHERE seq = 2").fetchone()[0]
    for seq, body in conn.execute("SELECT seq, body FROM audit WHERE seq > 2 ORDER BY seq").fetchall():
        if seq == 3:
            body = body.replace('"i":2', '"i":999')
        h = chain.record_hash(seq, prev, body.encode())
        conn.execute("UPDATE audit SET body = ?, prev_hash = ?, hash = ? WHERE seq = ?", (body, prev, h, seq))
        prev = h


TAMPER_SQL: list[tuple[str, Callable[[sqlite3.Connection], object], int, str]] = [
    (
        "edit",
        lambda c: c.execute("UPDATE audit SET body = replace(body, '\"i\":4', '\"i\":5') WHERE seq = 5"),
        5,
        chain.EDITED,
    ),
    (
        "edit column",
        lambda c: c.execute("UPDATE audit SET actor = 'nobody' WHERE seq = 7"),
        7,
        chain.BODY_MISMATCH,
    ),
    ("delete", lambda c: c.execute("DELETE FROM audit WHERE seq = 5"), 5, chain.DELETED),
    ("swap", _swap, 5, chain.REORDERED),
    ("truncate", lambda c: c.execute("DELETE FROM audit WHERE seq > 6"), 7, chain.truncated(6, 10)),
    ("rewrite", _rewrite, 4, chain.REWRITTEN),
]


@pytest.mark.parametrize(
    ("tamper", "bad_seq", "problem"),
    [pytest.param(t, s, p, id=name) for name, t, s, p in TAMPER_SQL],
)
async def test_tampering_with_the_file_is_named(
    db: Path, key: Path, tamper: Callable[[sqlite3.Connection], object], bad_seq: int, problem: str
) -> None:
    s = await Store.open(db, key_path=key, checkpoint_every=4)
    for i in range(10):
        await s.audit_note("test.n", actor="t", data={"i": i}, ts_ms=T0 + i)
    await s.close()
    assert verify_database(db, key).ok
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        tamper(conn)
    result = verify_database(db, key)
    assert (result.ok, result.first_bad_seq, result.problem) == (False, bad_seq, problem)


async def test_truncated_log_refuses_to_reopen(db: Path, key: Path) -> None:
    s = await Store.open(db, key_path=key, checkpoint_every=4)
    for i in range(10):
        await s.audit_note("test.n", actor="t", data={"i": i}, ts_ms=T0 + i)
    await s.close()
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("DELETE FROM audit WHERE seq > 6")
    with pytest.raises(StoreError, match="truncated"):
        await Store.open(db, key_path=key)


async def test_export_carries_enough_to_reverify(store: Store, db: Path) -> None:
    from agent_shim.canonical import canonical_json

    await store.session_started(session(), resumed=False, ts_ms=T0)
    await store.audit_note("hub.note", actor="hub", data={"ünicode": "✓"}, ts_ms=T0)
    exported = list(export_audit(db))
    assert [e["seq"] for e in exported] == [1, 2]
    prev = chain.GENESIS_HASH
    for rec in exported:
        body = canonical_json({k: v for k, v in rec.items() if k not in ("prev_hash", "hash")})
        assert rec["prev_hash"] == prev
        assert chain.record_hash(int(rec["seq"]), prev, body) == rec["hash"]  # type: ignore[call-overload]
        prev = str(rec["hash"])


async def test_decision_with_checkpoint_is_signed_in_the_same_commit(store: Store) -> None:
    await store.session_started(session(), resumed=False, ts_ms=T0)
    await store.action_proposed(action(), actor="agent:claude", ts_ms=T0)
    batches = store.write_stats.batches
    alice = decision(operator="alice")
    await store.action_decided(alice, new_state="approved", ts_ms=T0 + 1, checkpoint=True)
    assert store.write_stats.batches == batches + 1  # one commit, not a second one for the checkpoint
    approved = [r for r in await store.audit_rows(action_id="a-1") if r.event == "action.approved"]
    assert len(approved) == 1
    assert (await store.checkpoints())[-1].seq == approved[0].seq
    assert (await store.verify()).ok


class _DefensiveConnection:
    """A connection whose SQLite refuses to edit its own schema, as one in
    SQLITE_DBCONFIG_DEFENSIVE mode does (Python 3.11 cannot set that mode)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        return self._conn.execute(sql, *args)

    def executemany(self, sql: str, rows: object) -> sqlite3.Cursor:
        if "sqlite_master" in sql:
            raise sqlite3.OperationalError("table sqlite_master may not be modified")
        return self._conn.executemany(sql, rows)  # type: ignore[arg-type]


def test_an_sqlite_that_refuses_schema_edits_keeps_its_in_lists_and_still_upgrades(tmp_path: Path) -> None:
    with closing(sqlite3.connect(tmp_path / "d.db", isolation_level=None)) as conn:
        assert all(isinstance(step, str) for step in MIGRATIONS[:3]) and callable(MIGRATIONS[3])
        for step in MIGRATIONS[:3]:
            apply_migration(conn, step)
        conn.execute("PRAGMA user_version = 3")
        conn.execute("BEGIN IMMEDIATE")
        apply_migration(_DefensiveConnection(conn), MIGRATIONS[3])  # type: ignore[arg-type]
        conn.execute("COMMIT")
        assert _in_list_checks(conn) == ["actions", "decisions"]
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert migrate(conn) == len(MIGRATIONS)  # and the real one does edit it
        assert not _in_list_checks(conn)
