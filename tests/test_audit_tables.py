"""``audit verify`` holds the hub's tables to its log (``towerctl.audit.tables``).

The chain proves the log was not edited; these prove that the tables the hub
acts on (tokens, policies, freezes, decisions, killed sessions) were not edited
behind it. First the pure fold and comparison, table-driven; then a real hub's
database, built through the real shim and operator client, tampered with one
SQL statement at a time, and `towerctl audit verify` run on it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent_shim import ActionDenied, Shim
from agent_shim.policy import EnvPolicy
from towerctl.audit.chain import AuditRow
from towerctl.audit.tables import MAX_FINDINGS, LogFacts, TableRows, disagreements
from towerctl.audit.verify import verify_database
from towerctl.cli import cli

from .conftest import Tower, make_tower, next_event
from .test_control_path import shell


def record(
    seq: int, event: str, data: object, *, session: str | None = None, action: str | None = None
) -> AuditRow:
    body = json.dumps({"data": data, "event": event, "seq": seq})
    return AuditRow(seq, 1, event, "test", session, action, body, "", "")


TOKEN = {"token_id": "t1", "name": "ci", "role": "agent", "envs": ["dev"], "hash": "h1"}
DECISION = {"decision_id": "d1", "operator": "alice", "reason": "", "digest": "g1", "from": "pending"}
LOG = [
    record(1, "token.created", TOKEN),
    record(2, "token.created", {**TOKEN, "token_id": "t2", "name": "old", "hash": "h2"}),
    record(3, "token.revoked", {"token_id": "t2", "name": "old", "role": "agent"}),
    record(4, "policy.applied", {"env": "prod", "version": 1, "doc": {"write": "ask"}}),
    record(5, "env.frozen", {"env": "prod"}),
    record(6, "env.frozen", {"env": "dev"}),
    record(7, "env.unfrozen", {"env": "dev"}),
    record(8, "action.approved", DECISION, session="s1", action="a1"),
    record(9, "action.denied", {**DECISION, "decision_id": "d2"}, session="s1", action="a2"),
    record(10, "session.killed", {"reason": "", "from": "active", "status": "killed"}, session="s1"),
    record(11, "action.proposed", {"digest": "x"}, session="s1", action="a3"),  # not a fact: ignored
    record(12, "action.running", {"from": "approved"}, session="s1", action="a1"),
    record(13, "action.succeeded", {"exit_code": 0}, session="s1", action="a1"),
    record(14, "action.succeeded", {"exit_code": 0}, session="s1", action="a3"),  # undecided: not followed
]
TABLES = TableRows(
    tokens=[("t1", "ci", "agent", '["dev"]', "h1", None), ("t2", "old", "agent", '["dev"]', "h2", 5)],
    policies=[("prod", 1, '{"write":"ask"}')],
    env_state=[("prod", 1), ("dev", 0)],
    decisions=[("d1", "a1", "approved", "alice", "g1"), ("d2", "a2", "denied", "alice", "g1")],
    live_sessions=[("s1", "killed")],
    decided_actions=[("a1", "succeeded"), ("a2", "denied")],
)


def facts_of(rows: list[AuditRow]) -> LogFacts:
    facts = LogFacts()
    for row in rows:
        facts.add(row)
    return facts


def test_tables_that_match_the_log_have_nothing_to_report() -> None:
    assert disagreements(facts_of(LOG), TABLES) == []


def _replace(**kw: list[tuple[object, ...]]) -> TableRows:
    fields = {name: getattr(TABLES, name) for name in TableRows.__slots__}
    fields.update(kw)
    return TableRows(**fields)


@pytest.mark.parametrize(
    ("tables", "finding"),
    [
        (  # an admin token slipped into the table
            _replace(tokens=[*TABLES.tokens, ("t9", "x", "admin", "[]", "h9", None)]),
            "tokens: t9 (x, admin) has no token.created record",
        ),
        (  # an agent token made admin
            _replace(tokens=[("t1", "ci", "admin", '["dev"]', "h1", None), TABLES.tokens[1]]),
            "tokens: t1 differs from its records (role 'admin', recorded 'agent')",
        ),
        (  # a token's environments widened
            _replace(tokens=[("t1", "ci", "agent", "[]", "h1", None), TABLES.tokens[1]]),
            "tokens: t1 differs from its records (envs (), recorded ('dev',))",
        ),
        (  # a revoked token brought back
            _replace(tokens=[TABLES.tokens[0], ("t2", "old", "agent", '["dev"]', "h2", None)]),
            "tokens: t2 differs from its records (revoked False, recorded True)",
        ),
        (  # a token's hash swapped for one the attacker holds
            _replace(tokens=[("t1", "ci", "agent", '["dev"]', "evil", None), TABLES.tokens[1]]),
            "tokens: t1 differs from its records (hash 'evil', recorded 'h1')",
        ),
        (
            _replace(
                decisions=[("d1", "a1", "approved", "alice", "g1"), ("d2", "a2", "approved", "alice", "g1")]
            ),
            "decisions: d2 differs from its record (verdict 'approved', recorded 'denied')",
        ),
        (
            _replace(decisions=[*TABLES.decisions, ("d3", "a3", "approved", "mallory", "x")]),
            "decisions: d3 (approved of a3) has no record",
        ),
        (_replace(decisions=TABLES.decisions[:1]), "decisions: d2 has a record but no row"),
        (
            _replace(policies=[("prod", 1, '{"write":"allow"}')]),
            "policies: prod v1 differs from its policy.applied record",
        ),
        (
            _replace(policies=[*TABLES.policies, ("prod", 2, "{}")]),
            "policies: prod v2 has no policy.applied record",
        ),
        (
            _replace(env_state=[("prod", 0), ("dev", 0)]),
            "env_state: prod is not frozen, the log says the opposite",
        ),
        (_replace(env_state=[("dev", 0)]), "env_state: prod is frozen in the log but has no row"),
        (
            _replace(env_state=[*TABLES.env_state, ("staging", 1)]),
            "env_state: staging is frozen with no env.frozen record",
        ),
        (  # an approval that ran, made to look unused again: its decision would be re-sent
            _replace(decided_actions=[("a1", "approved"), ("a2", "denied")]),
            "actions: a1 is approved in the table, the log says succeeded",
        ),
        (_replace(decided_actions=[("a2", "denied")]), "actions: a1 has a decision record but no row"),
        (
            _replace(live_sessions=[("s1", "active")]),
            "sessions: s1 is active in the table, but the log says it was killed",
        ),
    ],
)
def test_each_quiet_edit_of_a_table_is_named(tables: TableRows, finding: str) -> None:
    assert disagreements(facts_of(LOG), tables) == [finding]


def test_odd_records_and_odd_rows_are_findings_not_crashes() -> None:
    odd = [*LOG, record(15, "token.created", {"token_id": "t3"}), record(16, "policy.applied", "not a dict")]
    found = disagreements(facts_of(odd), _replace(tokens=[*TABLES.tokens, (7, None, None, "{", None, 1)]))
    assert found[:2] == ["record 15: its data cannot be read", "record 16: its data cannot be read"]
    assert "tokens: 7 (None, None) has no token.created record" in found
    many = _replace(tokens=[(f"x{i}", "n", "admin", "[]", "h", None) for i in range(100)])
    assert len(disagreements(facts_of(LOG), many)) == MAX_FINDINGS


# ------------------------------------------------------------------ a real hub's database


async def build_database(tower: Tower) -> dict[str, str]:
    """A database holding every kind of fact, made the way the product makes them."""
    assert tower.hub.store is not None
    names: dict[str, str] = {}
    async with tower.operator() as op:
        await op.set_policy("dev", EnvPolicy(write="ask"))
        await op.freeze("staging", True, "change freeze")
        async with Shim(tower.url, tower.tokens["agent"], agent="a", env="prod") as shim:
            names["session"] = shim.session_id
            for approve in (True, False):
                task = asyncio.create_task(shim.admit(shell(f"kubectl delete pod web-{approve}")))
                ev = await next_event(
                    op, lambda m: getattr(m, "type", "") == "action" and m.action.state == "pending"
                )
                await op.decide(ev.action.action.action_id, approve=approve)
                if approve:
                    shim.report(await task)
                else:
                    with pytest.raises(ActionDenied):
                        await task
            killed = await op.control(shim.session_id, "kill", "runaway")  # answered once durable
            assert killed.ok, killed.message
    await tower.hub.store.token_revoked(
        next(t.token_id for t in await tower.hub.store.tokens() if t.name == "bob"), actor="test", ts_ms=1
    )
    return names


@pytest.fixture
async def built(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    (tmp_path / "hub").mkdir()
    tower = await make_tower(tmp_path / "hub")
    try:
        names = await build_database(tower)
    finally:
        await tower.hub.stop()
    return tower.db, tower.key, names


TAMPERS = {
    "an admin token added": (
        "INSERT INTO tokens (token_id, name, role, envs, hash, created_at) VALUES"
        " ('tk-evil', 'mallory', 'admin', '[]', 'feed', 1)",
        "tokens: tk-evil (mallory, admin) has no token.created record",
    ),
    "a revoked token revived": (
        "UPDATE tokens SET revoked_at = NULL WHERE name = 'bob'",
        "revoked False, recorded True",
    ),
    "a viewer made admin": (
        "UPDATE tokens SET role = 'admin' WHERE name = 'viewer'",
        "role 'admin', recorded 'viewer'",
    ),
    "a denial turned into an approval": (
        "UPDATE decisions SET verdict = 'approved' WHERE verdict = 'denied'",
        "verdict 'approved', recorded 'denied'",
    ),
    "a policy softened": (
        """UPDATE policies SET doc = json_set(doc, '$.write', 'allow') WHERE env = 'dev'""",
        "policies: dev v1 differs from its policy.applied record",
    ),
    "a freeze lifted": (
        "UPDATE env_state SET frozen = 0 WHERE env = 'staging'",
        "env_state: staging is not frozen",
    ),
    "a killed session revived": ("UPDATE sessions SET status = 'active'", "the log says it was killed"),
    "an approval that ran made to look unused": (
        "UPDATE actions SET state = 'approved' WHERE state = 'succeeded'",
        "is approved in the table, the log says succeeded",
    ),
}


def tamper(db: Path, sql: str) -> int:
    """One SQL statement on the database file, as someone with write access would; rows changed."""
    con = sqlite3.connect(db)
    try:
        changed = con.execute(sql).rowcount
        con.commit()
        return changed
    finally:
        con.close()


async def test_the_product_s_own_database_agrees_with_its_log(
    built: tuple[Path, Path, dict[str, str]],
) -> None:
    db, key, _ = built
    result = verify_database(db, key)
    assert result.ok and not result.tables, result.describe()
    con = sqlite3.connect(db)
    try:  # every kind of fact is there to be compared
        for table in ("tokens", "policies", "env_state", "decisions"):
            assert con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] > 0, table
        assert con.execute("SELECT count(*) FROM sessions WHERE status = 'killed'").fetchone()[0] == 1
    finally:
        con.close()


@pytest.mark.parametrize("edit", sorted(TAMPERS))
async def test_a_table_edited_behind_the_log_fails_verify(
    built: tuple[Path, Path, dict[str, str]], tmp_path: Path, edit: str
) -> None:
    db, key, _ = built
    copy = tmp_path / "tampered.db"
    shutil.copy(db, copy)
    sql, finding = TAMPERS[edit]
    assert tamper(copy, sql) >= 1
    result = verify_database(copy, key)
    assert not result.ok and result.first_bad_seq is None
    assert any(finding in f for f in result.tables), result.tables
    assert result.problem == result.tables[0] and "DISAGREE" in result.describe()


def test_audit_verify_names_the_edit_and_exits_1(built: tuple[Path, Path, dict[str, str]]) -> None:
    db, key, _ = built
    tamper(db, TAMPERS["a denial turned into an approval"][0])
    runner = CliRunner()
    result = runner.invoke(cli, ["audit", "verify", "--db", str(db), "--key", str(key)])
    assert result.exit_code == 1
    assert "tables DISAGREE" in result.output and "verdict 'approved', recorded 'denied'" in result.output
    result = runner.invoke(cli, ["audit", "verify", "--db", str(db), "--key", str(key), "--json"])
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["first_bad_seq"] is None
    assert any("recorded 'denied'" in f for f in report["tables"])


def test_the_console_says_the_tables_disagree(built: tuple[Path, Path, dict[str, str]]) -> None:
    from towerctl.tui.audit_reader import read_audit

    db, key, _ = built
    assert read_audit(db, key).short.startswith("✓ intact")
    tamper(db, TAMPERS["a freeze lifted"][0])
    reading = read_audit(db, key)
    assert reading.ok is False and reading.short == "✗ tables disagree"
    assert "env_state: staging is not frozen" in reading.line


def test_verify_against_an_exported_checkpoint_holds_the_tables_too(
    built: tuple[Path, Path, dict[str, str]], tmp_path: Path
) -> None:
    db, key, _ = built
    runner = CliRunner()
    exported = tmp_path / "cp.json"
    result = runner.invoke(
        cli, ["audit", "checkpoint", "--db", str(db), "--key", str(key), "--export", str(exported)]
    )
    assert result.exit_code == 0, result.output
    verify = ["audit", "verify", "--db", str(db), "--checkpoint", str(exported)]
    assert runner.invoke(cli, verify).exit_code == 0
    tamper(db, TAMPERS["an admin token added"][0])
    result = runner.invoke(cli, verify)
    assert result.exit_code == 1 and "tk-evil (mallory, admin) has no token.created record" in result.output
