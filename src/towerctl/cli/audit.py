"""``towerctl audit``: prove the log untouched, export it, read one action's story."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import click

from towerctl.cli.common import db_option, emit_json, fail, json_option
from towerctl.config import default_db, default_key


def _db(db: str | None) -> Path:
    path = Path(db) if db else default_db()
    if not path.exists():
        fail(f"no database at {path}", 2)
    return path


@click.group()
def audit() -> None:
    """Verify, export and inspect the hash-chained audit log."""


@audit.command()
@db_option
@click.option(
    "--key", type=click.Path(dir_okay=False), default=None, help="Signing key (default: beside the db)."
)
@json_option
def verify(db: str | None, key: str | None, as_json: bool) -> None:
    """Exit 0 when the chain is intact; otherwise name the first bad record."""
    from towerctl.audit.verify import verify_database

    path = _db(db)
    key_path = Path(key) if key else default_key(path)
    result = verify_database(path, key_path if key_path.exists() else None)
    if as_json:
        emit_json(
            {
                "ok": result.ok,
                "records": result.records,
                "checkpoints": result.checkpoints,
                "first_bad_seq": result.first_bad_seq,
                "problem": result.problem,
            }
        )
    elif result.ok:
        click.echo(f"audit chain intact: {result.records} records, {result.checkpoints} signed checkpoints")
    else:
        click.echo(f"audit chain BROKEN at record {result.first_bad_seq}: {result.problem}", err=True)
    sys.exit(0 if result.ok else 1)


@audit.command()
@db_option
def export(db: str | None) -> None:
    """Write every record as one JSON line (with its hash) to stdout."""
    from towerctl.audit.verify import export_audit

    for record in export_audit(_db(db)):
        click.echo(json.dumps(record, sort_keys=True, separators=(",", ":")))


@audit.command()
@click.argument("ident")
@db_option
@json_option
def show(ident: str, db: str | None, as_json: bool) -> None:
    """Show the records of an action id (prefix ok), a session id, or one seq number."""
    path = _db(db)
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        con.row_factory = sqlite3.Row
        if ident.isdigit():
            rows = con.execute("SELECT * FROM audit WHERE seq = ?", (int(ident),)).fetchall()
        else:
            rows = con.execute(
                "SELECT * FROM audit WHERE action_id LIKE ? OR session_id = ? ORDER BY seq",
                (ident.replace("%", "") + "%", ident),
            ).fetchall()
    finally:
        con.close()
    if not rows:
        fail(f"no audit records for {ident}")
    records = [dict(r) for r in rows]
    if as_json:
        emit_json([{**r, "body": json.loads(r["body"])} for r in records])
        return
    from towerctl.textsafe import safe_text

    for r in records:
        body = json.loads(r["body"])
        data = body.get("data", {})
        detail = data.get("command") or data.get("reason") or data.get("operator") or ""
        shown = safe_text(str(detail), single_line=True)[:70]
        click.echo(f"#{r['seq']:<6} {r['event']:<18} {r['actor']:<22} {shown}")
