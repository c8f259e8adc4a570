"""Schema migrations, applied in order and counted in ``PRAGMA user_version``.

Append a script to ``MIGRATIONS`` to change the schema; never edit one that has
shipped. Each script runs in one transaction together with the bump of
``user_version``, so a crash mid-migration leaves the previous version intact,
and two processes opening the same file at once migrate it only once.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from typing import Final

_V1: Final = """
CREATE TABLE tokens (
    token_id   TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    role       TEXT NOT NULL CHECK (role IN ('agent', 'viewer', 'approver', 'admin')),
    envs       TEXT NOT NULL,
    hash       TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
) STRICT;

CREATE TABLE sessions (
    session_id TEXT PRIMARY KEY,
    agent      TEXT NOT NULL,
    env        TEXT NOT NULL,
    host       TEXT NOT NULL,
    pid        INTEGER,
    status     TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL,
    ended_at   INTEGER
) STRICT;
CREATE INDEX sessions_by_status ON sessions (status);

CREATE TABLE actions (
    action_id      TEXT PRIMARY KEY,
    session_id     TEXT NOT NULL REFERENCES sessions (session_id),
    kind           TEXT NOT NULL,
    command        TEXT NOT NULL,
    target         TEXT,
    digest         TEXT NOT NULL,
    risk           TEXT NOT NULL CHECK (risk IN ('read', 'write', 'destructive')),
    reasons        TEXT NOT NULL,
    policy_verdict TEXT NOT NULL CHECK (policy_verdict IN ('allow', 'ask', 'deny')),
    rule           TEXT,
    state          TEXT NOT NULL CHECK (state IN ('allowed', 'denied', 'pending', 'approved',
                       'expired', 'running', 'succeeded', 'failed', 'cancelled')),
    body           TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    expires_at     INTEGER
) STRICT;
CREATE INDEX actions_by_state ON actions (state, created_at);
CREATE INDEX actions_by_session ON actions (session_id, created_at);
CREATE INDEX actions_by_created ON actions (created_at);

CREATE TABLE decisions (
    decision_id TEXT PRIMARY KEY,
    action_id   TEXT NOT NULL UNIQUE REFERENCES actions (action_id),
    verdict     TEXT NOT NULL CHECK (verdict IN ('approved', 'denied', 'expired')),
    operator    TEXT NOT NULL,
    reason      TEXT NOT NULL,
    digest      TEXT NOT NULL,
    decided_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE outcomes (
    action_id     TEXT PRIMARY KEY REFERENCES actions (action_id),
    status        TEXT NOT NULL CHECK (status IN ('succeeded', 'failed')),
    exit_code     INTEGER,
    duration_ms   INTEGER NOT NULL,
    output_digest TEXT,
    output_tail   TEXT NOT NULL,
    reported_at   INTEGER NOT NULL
) STRICT;

CREATE TABLE policies (
    env        TEXT NOT NULL,
    version    INTEGER NOT NULL CHECK (version > 0),
    doc        TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (env, version)
) STRICT;

CREATE TABLE env_state (
    env        TEXT PRIMARY KEY,
    frozen     INTEGER NOT NULL CHECK (frozen IN (0, 1)),
    updated_by TEXT NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

-- No foreign keys on the audit log: it also records rejected messages that
-- name unknown sessions and actions, and it must outlive anything it names.
CREATE TABLE audit (
    seq        INTEGER PRIMARY KEY CHECK (seq > 0),
    ts_ms      INTEGER NOT NULL,
    event      TEXT NOT NULL,
    actor      TEXT NOT NULL,
    session_id TEXT,
    action_id  TEXT,
    body       TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
) STRICT;
CREATE INDEX audit_by_action ON audit (action_id, seq) WHERE action_id IS NOT NULL;
CREATE INDEX audit_by_session ON audit (session_id, seq) WHERE session_id IS NOT NULL;

CREATE TABLE checkpoints (
    seq       INTEGER PRIMARY KEY CHECK (seq > 0),
    hash      TEXT NOT NULL,
    ts_ms     INTEGER NOT NULL,
    key_id    TEXT NOT NULL,
    signature TEXT NOT NULL
) STRICT;

"""

# Version 2: the audit log's per-action and per-session indexes go. No query of
# the product used them (`towerctl audit show` matches id prefixes with LIKE,
# which scans; the TUI and `audit export` read in seq order), and because ids
# are random and a thousand sessions append at once, every record dirtied a
# random leaf page of each: dropping both cut the writer's time per allowed
# action by a quarter and its disk writes from ~48 to ~21 KiB (measured in
# docs/performance.md). The log itself, its order and its hashes are untouched.
_V2: Final = """
DROP INDEX IF EXISTS audit_by_action;
DROP INDEX IF EXISTS audit_by_session;
"""

# Version 3: an action's outcome lives in its own row instead of a table of
# its own. The outcomes table was keyed by the (random) action id and checked
# it against actions with a foreign key, so every report inserted into one
# more random B-tree and read another: with a log of 120k actions that was
# ~10 % of the writer's time and a quarter of its disk writes per action
# (docs/performance.md). A report is now one compare-and-set UPDATE of the
# action's row. ``outcomes`` stays as a view with the same columns, so that
# queries written against it (by people or scripts) keep working.
# The actions-by-session index goes too: no query of the product reads
# through it (the console's session history is the hub's own, the store's
# ``actions(session_id=...)`` walks actions_by_created from the newest), and
# with a thousand sessions acting at once it put every new action on one of
# a thousand hot leaf pages: 12 % of the writer's time and a third of its
# disk writes per action on a 120k-action log.
_V3: Final = """
DROP INDEX IF EXISTS actions_by_session;
ALTER TABLE actions ADD COLUMN outcome_status TEXT CHECK (outcome_status IN ('succeeded', 'failed'));
ALTER TABLE actions ADD COLUMN exit_code INTEGER;
ALTER TABLE actions ADD COLUMN duration_ms INTEGER;
ALTER TABLE actions ADD COLUMN output_digest TEXT;
ALTER TABLE actions ADD COLUMN output_tail TEXT;
ALTER TABLE actions ADD COLUMN reported_at INTEGER;
UPDATE actions
   SET (outcome_status, exit_code, duration_ms, output_digest, output_tail, reported_at) =
       (SELECT o.status, o.exit_code, o.duration_ms, o.output_digest, o.output_tail, o.reported_at
          FROM outcomes o WHERE o.action_id = actions.action_id)
 WHERE action_id IN (SELECT action_id FROM outcomes);
DROP TABLE outcomes;
CREATE VIEW outcomes AS
    SELECT action_id, outcome_status AS status, exit_code, duration_ms, output_digest, output_tail,
           reported_at
      FROM actions WHERE outcome_status IS NOT NULL;
"""

# Version 4: the value lists of the tables written for every action are
# checked by a chain of comparisons instead of ``IN (...)``. The constraints
# are the same (NULL passes both ways), but SQLite 3.40 evaluates a CHECK with
# an IN list at ~5 us per list per row written: 19 us of the ~40 us an
# ``actions`` INSERT takes, and again on every outcome's UPDATE
# (docs/performance.md). SQLite cannot ALTER a CHECK, and copying the whole
# log into a rebuilt table would make the upgrade as slow as the log is long,
# so the stored CREATE TABLE text is edited in place by SQLite's documented
# procedure for changing CHECK constraints (lang_altertable.html, "making
# other kinds of table schema changes"): writable_schema, then a bump of
# schema_version so every connection re-reads it.
_PLAIN_CHECK_TABLES: Final = ("actions", "decisions")
_IN_CHECK: Final = re.compile(r"CHECK \((\w+) IN \(([^()]*)\)\)")


def _or_chain(match: re.Match[str]) -> str:
    column, values = match.group(1), re.findall(r"'[^']*'", match.group(2))
    return "CHECK (" + " OR ".join(f"{column} = {value}" for value in values) + ")"


def _v4_checks_without_in_lists(conn: sqlite3.Connection) -> None:
    updates: list[tuple[str, str]] = []
    for table in _PLAIN_CHECK_TABLES:
        row = conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
        if row is not None and (new := _IN_CHECK.sub(_or_chain, str(row[0]))) != row[0]:
            updates.append((new, table))
    if not updates:
        return
    (version,) = conn.execute("PRAGMA schema_version").fetchone()
    conn.execute("SAVEPOINT plain_checks")
    try:
        conn.execute("PRAGMA writable_schema = ON")
        try:
            conn.executemany("UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = ?", updates)
            conn.execute(f"PRAGMA schema_version = {int(version) + 1}")
        finally:
            conn.execute("PRAGMA writable_schema = OFF")
    except sqlite3.DatabaseError:
        # An SQLite in "defensive" mode refuses to edit its schema. The IN
        # lists then stay: the same constraints, only slower; the upgrade
        # must not fail over a speed-up.
        conn.execute("ROLLBACK TO plain_checks")
    conn.execute("RELEASE plain_checks")


#: A script (statements run in order) or a function of the connection; each
#: runs inside the migration's transaction.
Migration = str | Callable[[sqlite3.Connection], None]

MIGRATIONS: Final[tuple[Migration, ...]] = (_V1, _V2, _V3, _v4_checks_without_in_lists)


class SchemaError(Exception):
    """The database was written by a newer towerctl, or a migration failed."""


def _statements(script: str) -> list[str]:
    """Split a script into statements (``executescript`` would commit the
    surrounding transaction, and the migration must stay atomic)."""
    out: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        raise SchemaError(f"incomplete statement in migration: {buf.strip()[:80]}")
    return out


def apply_migration(conn: sqlite3.Connection, step: Migration) -> None:
    """Run one step of MIGRATIONS in the caller's transaction (no version bump)."""
    if callable(step):
        step(conn)
    else:
        for statement in _statements(step):
            conn.execute(statement)


def user_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema up to date; returns the version now in force.

    ``conn`` must be in autocommit mode (``isolation_level=None``).
    """
    target = len(MIGRATIONS)
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = user_version(conn)
            if current > target:
                raise SchemaError(
                    f"database schema version {current} is newer than this towerctl "
                    f"({target}); upgrade towerctl"
                )
            if current == target:
                conn.execute("COMMIT")
                return current
            apply_migration(conn, MIGRATIONS[current])
            conn.execute(f"PRAGMA user_version = {current + 1}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
