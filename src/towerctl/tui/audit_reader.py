"""Reading the hub's audit log from its database file, for the embedded console.

The hub streams no audit records over the wire; when the console runs beside
the database (``towerctl up``) it can read them itself. Both readers run in a
worker thread (SQLite is blocking), open the file read-only through
:mod:`towerctl.audit.verify` and never write: they must not change the
evidence they show.

Two reads, of very different cost: :func:`read_audit_count` is one indexed
lookup (the header's record count follows the log with it, several times a
minute); :func:`read_audit` verifies the whole chain and reads the latest
records (the audit view, and the header's verdict), which grows with the log.
"""

from __future__ import annotations

import sqlite3
from collections import deque
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from towerctl.audit.summary import record_detail
from towerctl.audit.verify import AuditReadError, export_audit, open_readonly, verify_database
from towerctl.tui.state import AuditRecord

#: The most recent records kept for display; verification still covers them all.
MAX_RECORDS: Final = 2000


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@dataclass(frozen=True, slots=True)
class AuditReading:
    """One verification of the log: its verdict, in a line and in a few words,
    how many records it covered, and the latest records (for the audit view).

    ``ok`` is None when the log could not be read at all.
    """

    ok: bool | None
    line: str
    short: str
    verified: int
    records: list[AuditRecord]


def read_audit_count(db_path: Path) -> int | None:
    """How many records the log holds now, or None when it cannot be read.

    Cheap at any size: the highest sequence number, one lookup in the table's
    primary key (``count(*)`` would read every page of the log). In an intact
    log records are numbered 1, 2, 3... so the two agree; a log where they do
    not is reported by the verification, which counts the rows it walks.
    """
    try:
        with closing(open_readonly(db_path)) as conn:
            row = conn.execute("SELECT max(seq) FROM audit").fetchone()
    except (AuditReadError, sqlite3.Error):
        return None
    value = row[0] if row else None
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def read_audit(db_path: Path, key_path: Path | None) -> AuditReading:
    """Verify the whole log and read its latest ``MAX_RECORDS`` records."""
    try:
        result = verify_database(db_path, key_path)
        records: deque[AuditRecord] = deque(maxlen=MAX_RECORDS)
        for rec in export_audit(db_path):
            records.append(
                AuditRecord(
                    seq=_int(rec.get("seq")),
                    ts_ms=_int(rec.get("ts_ms")),
                    event=_text(rec.get("event")),
                    actor=_text(rec.get("actor")),
                    session_id=_text(rec.get("session_id")),
                    action_id=_text(rec.get("action_id")),
                    detail=record_detail(rec.get("data", rec.get("body_raw", ""))),
                )
            )
    except AuditReadError as exc:
        return AuditReading(None, f"cannot read the audit log: {exc}", "unreadable", 0, [])
    if result.ok:
        sigs = "signed" if result.checkpoints_verified else "signatures not checked (no key)"
        line = f"intact · {result.records} records · {result.checkpoints} checkpoints {sigs}"
        short = f"✓ intact ({result.records})"
    elif result.tables:
        line = f"chain intact, but the tables DISAGREE with it: {result.problem}"
        short = "✗ tables disagree"
    else:
        line = f"BROKEN at record {result.first_bad_seq}: {result.problem}"
        short = f"✗ BROKEN at #{result.first_bad_seq}"
    return AuditReading(result.ok, line, short, result.records, list(records))
