"""Reading the audit log straight from the SQLite file, without the hub.

Synchronous and read-only on purpose: ``towerctl audit verify`` must work on a
copy of the database, with no event loop, while the hub may still be writing,
and must never change the evidence it is checking.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from towerctl.audit.chain import REWRITTEN, AuditRow, CheckpointRow, VerifyResult, verify
from towerctl.audit.signing import load_public_key
from towerctl.audit.tables import LogFacts, TableRows, disagreements

_AUDIT_SQL = (
    "SELECT seq, ts_ms, event, actor, session_id, action_id, body, prev_hash, hash FROM audit ORDER BY seq"
)
_CHECKPOINT_SQL = "SELECT seq, hash, ts_ms, key_id, signature FROM checkpoints ORDER BY seq"


class AuditReadError(Exception):
    """The file is missing, unreadable, or not a towerctl database."""


def _text(raw: bytes) -> str:
    # Keeps bytes that are not UTF-8 (a tampered row) instead of failing the
    # whole read; the chain then reports that row as edited.
    return raw.decode("utf-8", "surrogateescape")


def open_readonly(db_path: Path) -> sqlite3.Connection:
    """A connection that cannot change the file (and does not create one)."""
    if not db_path.is_file():
        raise AuditReadError(f"no database at {db_path}")
    uri = db_path.resolve().as_uri() + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise AuditReadError(f"cannot open {db_path}: {exc}") from exc
    conn.text_factory = _text
    return conn


def _audit_row(r: tuple[object, ...]) -> AuditRow:
    seq, ts_ms, event, actor, session_id, action_id, body, prev_hash, hash_ = r
    return AuditRow(
        seq=seq,  # type: ignore[arg-type]  # whatever is stored; the chain judges it
        ts_ms=ts_ms,  # type: ignore[arg-type]
        event=event,  # type: ignore[arg-type]
        actor=actor,  # type: ignore[arg-type]
        session_id=session_id,  # type: ignore[arg-type]
        action_id=action_id,  # type: ignore[arg-type]
        body=_text(body) if isinstance(body, bytes) else str(body),
        prev_hash=str(prev_hash),
        hash=str(hash_),
    )


def _checkpoint_row(r: tuple[object, ...]) -> CheckpointRow:
    seq, hash_, ts_ms, kid, signature = r
    return CheckpointRow(
        seq=seq,  # type: ignore[arg-type]
        hash=str(hash_),
        ts_ms=ts_ms,  # type: ignore[arg-type]
        key_id=str(kid),
        signature=str(signature),
    )


def verify_connection(
    conn: sqlite3.Connection,
    public_key: Ed25519PublicKey | None,
    exported: CheckpointRow | None = None,
) -> VerifyResult:
    """Verify inside one read transaction, so that a hub writing meanwhile
    cannot make the checkpoints look newer than the records read, nor the
    tables newer than the log (each change and its record commit together).

    ``exported``: a checkpoint kept off the box, added to the stored ones (it
    wins over a stored one claiming the same seq). An intact chain is then
    held against the tables the hub acts on (:mod:`towerctl.audit.tables`): a
    token, policy, freeze, decision or killed session changed in a table and
    not in the log fails too."""
    try:
        conn.execute("BEGIN")
        try:
            checkpoints = [_checkpoint_row(r) for r in conn.execute(_CHECKPOINT_SQL)]
            same: list[CheckpointRow] = []
            if exported is not None:
                same = [c for c in checkpoints if c.seq == exported.seq]
                checkpoints = [c for c in checkpoints if c.seq != exported.seq] + [exported]
            facts = LogFacts()
            result = verify(_folded(conn, facts), checkpoints, public_key)
            if not result.ok:
                return result
            if exported is not None and any(
                c.hash != exported.hash or c.signature != exported.signature for c in same
            ):  # the stored copy of the exported checkpoint was rewritten
                return dataclasses.replace(result, ok=False, first_bad_seq=exported.seq, problem=REWRITTEN)
            found = disagreements(facts, _table_rows(conn, facts))
        finally:
            conn.execute("COMMIT")
    except sqlite3.Error as exc:
        raise AuditReadError(f"cannot read the audit log: {exc}") from exc
    if not found:
        return result
    return dataclasses.replace(result, ok=False, problem=found[0], tables=tuple(found))


def _folded(conn: sqlite3.Connection, facts: LogFacts) -> Iterator[AuditRow]:
    for r in conn.execute(_AUDIT_SQL):
        row = _audit_row(r)
        facts.add(row)
        yield row


_SESSIONS_IN: Final = "SELECT session_id, status FROM sessions WHERE session_id IN"
_ACTIONS_IN: Final = "SELECT action_id, state FROM actions WHERE action_id IN"


def _rows_of(conn: sqlite3.Connection, sql: str, ids: Iterable[str]) -> list[tuple[object, ...]]:
    """``sql`` (ending in ``IN``) for these ids, in chunks under SQLite's bound-parameter limit."""
    wanted = sorted(ids)
    out: list[tuple[object, ...]] = []
    for i in range(0, len(wanted), 500):
        chunk = wanted[i : i + 500]
        out += conn.execute(f"{sql} ({','.join('?' * len(chunk))})", chunk).fetchall()
    return out


def _table_rows(conn: sqlite3.Connection, facts: LogFacts) -> TableRows:
    return TableRows(
        tokens=conn.execute("SELECT token_id, name, role, envs, hash, revoked_at FROM tokens").fetchall(),
        policies=conn.execute("SELECT env, version, doc FROM policies").fetchall(),
        env_state=conn.execute("SELECT env, frozen FROM env_state").fetchall(),
        decisions=conn.execute(
            "SELECT decision_id, action_id, verdict, operator, digest FROM decisions"
        ).fetchall(),
        live_sessions=_rows_of(conn, _SESSIONS_IN, facts.killed),
        decided_actions=_rows_of(conn, _ACTIONS_IN, facts.decided),
    )


def verify_database(db_path: Path, key_path: Path | None) -> VerifyResult:
    """Verify the chain and, when the key file exists, the checkpoint signatures.

    ``key_path`` may be the hub's private key file or an exported public key.
    A missing key file is not an error: the result then says that checkpoint
    signatures were not verified.
    """
    public_key = load_public_key(key_path) if key_path is not None and key_path.exists() else None
    with closing(open_readonly(db_path)) as conn:
        return verify_connection(conn, public_key)


def export_audit(db_path: Path) -> Iterator[dict[str, object]]:
    """Every record in seq order: the hashed body's fields plus ``prev_hash`` and
    ``hash``, enough to re-verify the chain from the export alone (the body is
    the canonical JSON of the first seven fields). A body that no longer parses
    is exported as ``body_raw`` next to its columns."""
    with closing(open_readonly(db_path)) as conn:
        try:
            cursor = conn.execute(_AUDIT_SQL)
            for r in cursor:
                row = _audit_row(r)
                try:
                    parsed = json.loads(row.body)
                except ValueError:
                    parsed = None
                if isinstance(parsed, dict):
                    rec: dict[str, object] = dict(parsed)
                else:
                    rec = {
                        "seq": row.seq,
                        "ts_ms": row.ts_ms,
                        "event": row.event,
                        "actor": row.actor,
                        "session_id": row.session_id,
                        "action_id": row.action_id,
                        "body_raw": row.body,
                    }
                rec["prev_hash"] = row.prev_hash
                rec["hash"] = row.hash
                yield rec
        except sqlite3.Error as exc:
            raise AuditReadError(f"cannot read the audit log: {exc}") from exc


CHECKPOINT_FORMAT = "towerctl-checkpoint/v1"


def latest_checkpoint(db_path: Path) -> CheckpointRow | None:
    with closing(open_readonly(db_path)) as conn:
        try:
            sql = _CHECKPOINT_SQL.replace("ORDER BY seq", "ORDER BY seq DESC LIMIT 1")
            row = conn.execute(sql).fetchone()
        except sqlite3.Error as exc:
            raise AuditReadError(f"cannot read the checkpoints: {exc}") from exc
    return _checkpoint_row(row) if row is not None else None


def checkpoint_document(cp: CheckpointRow, public_key: Ed25519PublicKey) -> dict[str, object]:
    """What ``audit checkpoint --export`` writes: the signed checkpoint and the
    public key that verifies it, to keep somewhere the hub host cannot reach."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(encoding=serialization.Encoding.Raw, format=serialization.PublicFormat.Raw)
    return {
        "format": CHECKPOINT_FORMAT,
        "seq": cp.seq,
        "hash": cp.hash,
        "ts_ms": cp.ts_ms,
        "key_id": cp.key_id,
        "signature": cp.signature,
        "public_key": raw.hex(),
    }


def load_checkpoint_document(path: Path) -> tuple[CheckpointRow, Ed25519PublicKey]:
    """Read an exported checkpoint; raises ``AuditReadError`` unless it is well
    formed and its signature verifies with the public key it carries."""
    from towerctl.audit.signing import key_id, verify_checkpoint

    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AuditReadError(f"cannot read checkpoint file {path}: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != CHECKPOINT_FORMAT:
        raise AuditReadError(f"{path} is not a {CHECKPOINT_FORMAT} file")
    try:
        seq, hash_, ts_ms = doc["seq"], doc["hash"], doc["ts_ms"]
        kid, signature, pub_hex = doc["key_id"], doc["signature"], doc["public_key"]
        if type(seq) is not int or type(ts_ms) is not int:
            raise TypeError("seq and ts_ms must be integers")
        if not all(isinstance(v, str) for v in (hash_, kid, signature, pub_hex)):
            raise TypeError("hash, key_id, signature and public_key must be strings")
        public_key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(pub_hex))
    except (KeyError, TypeError, ValueError) as exc:
        raise AuditReadError(f"{path}: malformed checkpoint: {exc}") from exc
    cp = CheckpointRow(seq=seq, hash=hash_, ts_ms=ts_ms, key_id=kid, signature=signature)
    if kid != key_id(public_key) or not verify_checkpoint(public_key, seq, hash_, signature):
        raise AuditReadError(f"{path}: the checkpoint's signature does not verify")
    return cp, public_key


def verify_against_checkpoint(
    db_path: Path, checkpoint: CheckpointRow, public_key: Ed25519PublicKey
) -> VerifyResult:
    """Verify the log with the exported checkpoint's key (not the one on the
    hub host) and the exported checkpoint added to the stored ones: a chain
    that was cut below it, or rewritten up to it, fails even if the
    checkpoints table was rewritten too."""
    with closing(open_readonly(db_path)) as conn:
        return verify_connection(conn, public_key, exported=checkpoint)
