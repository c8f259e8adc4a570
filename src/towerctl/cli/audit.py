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
@click.option(
    "--checkpoint",
    "checkpoint_file",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="Also check against a checkpoint exported with `audit checkpoint --export` "
    "(its public key is used, not the one on this host).",
)
@json_option
def verify(db: str | None, key: str | None, checkpoint_file: str | None, as_json: bool) -> None:
    """Exit 0 when the chain is intact and the tables agree with it; otherwise
    name the first bad record, or how the tables differ.

    The tables checked are the ones the hub acts on and an attacker with write
    access to the database would change: tokens, policies, environment
    freezes, decisions and killed sessions.

    With --checkpoint, a log cut below the exported checkpoint, or rewritten up
    to it, is detected even if whoever did it also rewrote the checkpoints
    table (they would need the private key to forge the exported one).
    """
    from towerctl.audit.signing import KeyFileError, load_public_key
    from towerctl.audit.verify import (
        AuditReadError,
        load_checkpoint_document,
        verify_against_checkpoint,
        verify_database,
    )

    path = _db(db)
    key_path = Path(key) if key else default_key(path)
    try:
        if checkpoint_file is not None:
            cp, public_key = load_checkpoint_document(Path(checkpoint_file))
            if key:
                local = load_public_key(key_path)
                if local.public_bytes_raw() != public_key.public_bytes_raw():
                    fail(f"{key_path} is not the key that signed {checkpoint_file}", 2)
            result = verify_against_checkpoint(path, cp, public_key)
        else:
            result = verify_database(path, key_path if key_path.exists() else None)
    except (AuditReadError, KeyFileError) as exc:
        fail(str(exc), 2)
    if as_json:
        emit_json(
            {
                "ok": result.ok,
                "records": result.records,
                "checkpoints": result.checkpoints,
                "first_bad_seq": result.first_bad_seq,
                "problem": result.problem,
                "tables": list(result.tables),
            }
        )
    elif result.ok:
        click.echo(f"audit chain intact: {result.records} records, {result.checkpoints} signed checkpoints")
    elif result.tables:
        from towerctl.textsafe import safe_text

        click.echo(
            f"audit chain intact ({result.records} records), but the hub's tables DISAGREE with it:", err=True
        )
        for finding in result.tables:
            click.echo(f"  {safe_text(finding, single_line=True)}", err=True)
    else:
        click.echo(f"audit chain BROKEN at record {result.first_bad_seq}: {result.problem}", err=True)
    sys.exit(0 if result.ok else 1)


@audit.command()
@db_option
@click.option(
    "--key", type=click.Path(dir_okay=False), default=None, help="Signing key (default: beside the db)."
)
@click.option(
    "--export",
    "export_file",
    type=click.Path(dir_okay=False, allow_dash=True),
    required=True,
    help="Write the latest signed checkpoint as JSON to this file ('-' for stdout).",
)
def checkpoint(db: str | None, key: str | None, export_file: str) -> None:
    """Export the latest signed checkpoint (seq, hash, ts, key_id, signature,
    public key) for off-box storage; `audit verify --checkpoint FILE` checks
    the log against it later.

    The chain is verified first: a checkpoint of a broken log is not exported.
    """
    from towerctl.audit.signing import KeyFileError, load_public_key, verify_checkpoint
    from towerctl.audit.verify import AuditReadError, checkpoint_document, latest_checkpoint, verify_database

    path = _db(db)
    key_path = Path(key) if key else default_key(path)
    try:
        public_key = load_public_key(key_path)
        result = verify_database(path, key_path)
        cp = latest_checkpoint(path)
    except (AuditReadError, KeyFileError) as exc:
        fail(str(exc), 2)
    if not result.ok:
        fail(f"audit chain BROKEN at record {result.first_bad_seq}: {result.problem}; not exporting", 1)
    if cp is None:
        return fail(
            "no signed checkpoint yet (the hub writes one every N records, on prod decisions, at shutdown)",
            1,
        )
    if not verify_checkpoint(public_key, cp.seq, cp.hash, cp.signature):
        fail(f"checkpoint {cp.seq} does not verify with {key_path}", 1)
    text = json.dumps(checkpoint_document(cp, public_key), indent=2, sort_keys=True) + "\n"
    if export_file == "-":
        click.echo(text, nl=False)
    else:
        out = Path(export_file)
        out.write_text(text, encoding="utf-8")
        click.echo(f"checkpoint at record {cp.seq} written to {out}", err=True)


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
    """Show the records of an action id (its start or end is enough), a session id, or one seq number."""
    path = _db(db)
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        con.row_factory = sqlite3.Row
        rows = []
        if ident.isdigit():
            rows = con.execute("SELECT * FROM audit WHERE seq = ?", (int(ident),)).fetchall()
        if not rows:  # an id's end can be all digits too
            # Either end of an action id (agent_shim.action_ids), matched literally.
            bare = ident.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            rows = con.execute(
                "SELECT * FROM audit WHERE action_id LIKE ? ESCAPE '\\' OR action_id LIKE ? ESCAPE '\\'"
                " OR session_id = ? ORDER BY seq",
                (bare + "%", "%" + bare, ident),
            ).fetchall()
    finally:
        con.close()
    if not rows:
        fail(f"no audit records for {ident}")
    records = [dict(r) for r in rows]
    if as_json:
        emit_json([{**r, "body": json.loads(r["body"])} for r in records])
        return
    from towerctl.audit.summary import record_gist
    from towerctl.textsafe import safe_text

    for r in records:
        body = json.loads(r["body"])
        data = body.get("data", {}) if isinstance(body, dict) else {}
        shown = safe_text(record_gist(data), single_line=True)[:90]
        click.echo(f"#{r['seq']:<6} {r['event']:<18} {r['actor']:<22} {shown}")
