"""Reading the hub's audit log from its database file, for the embedded console.

The hub streams no audit records over the wire; when the console runs beside
the database (``towerctl up``) it can read them itself. This runs in a
thread (SQLite is blocking), opens the file read-only through
:mod:`towerctl.audit.verify` and never writes: it must not change the
evidence it shows.
"""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path
from typing import Final

from towerctl.audit.verify import AuditReadError, export_audit, verify_database
from towerctl.tui.state import AuditRecord

#: The most recent records kept for display; verification still covers them all.
MAX_RECORDS: Final = 2000


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def read_audit(db_path: Path, key_path: Path | None) -> tuple[bool | None, str, str, list[AuditRecord]]:
    """(chain intact?, a status line, the same in a few words, the latest records).

    Intact is None when the log cannot be read at all.
    """
    try:
        result = verify_database(db_path, key_path)
        records: deque[AuditRecord] = deque(maxlen=MAX_RECORDS)
        for rec in export_audit(db_path):
            data = rec.get("data", rec.get("body_raw", ""))
            if not isinstance(data, str):
                data = json.dumps(data, sort_keys=True, separators=(",", ":"))
            records.append(
                AuditRecord(
                    seq=_int(rec.get("seq")),
                    ts_ms=_int(rec.get("ts_ms")),
                    event=_text(rec.get("event")),
                    actor=_text(rec.get("actor")),
                    session_id=_text(rec.get("session_id")),
                    action_id=_text(rec.get("action_id")),
                    detail=data,
                )
            )
    except AuditReadError as exc:
        return None, f"cannot read the audit log: {exc}", "unreadable", []
    if result.ok:
        sigs = "signed" if result.checkpoints_verified else "signatures not checked (no key)"
        line = f"intact · {result.records} records · {result.checkpoints} checkpoints {sigs}"
        short = f"✓ intact ({result.records})"
    else:
        line = f"BROKEN at record {result.first_bad_seq}: {result.problem}"
        short = f"✗ BROKEN at #{result.first_bad_seq}"
    return result.ok, line, short, list(records)
