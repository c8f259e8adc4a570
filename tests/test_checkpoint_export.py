"""Checkpoints taken off the box: `audit checkpoint --export` and
`audit verify --checkpoint` catch a truncated or rewritten log even when the
attacker also rewrote the checkpoints table (but has no signing key)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from towerctl.audit.chain import ChainHead
from towerctl.cli import cli
from towerctl.store import Store


async def make_log(tmp_path: Path, records: int = 20) -> tuple[Path, Path]:
    db, key = tmp_path / "tower.db", tmp_path / "tower.db.signing-key"
    store = await Store.open(db, key_path=key, checkpoint_every=1000)
    try:
        for i in range(records):
            await store.audit_note("test.note", actor="t", data={"i": i}, ts_ms=1_000 + i)
    finally:
        await store.close()  # signs the final checkpoint
    return db, key


def run(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return res.exit_code, res.stdout, res.stderr


def export(db: Path, out: Path) -> dict[str, object]:
    code, _, err = run("audit", "checkpoint", "--db", str(db), "--export", str(out))
    assert code == 0, err
    doc: dict[str, object] = json.loads(out.read_text())
    return doc


def rechain(db: Path, keep: int | None = None, edit_seq: int | None = None) -> None:
    """What an attacker with the database but not the key can do: cut or edit
    records, recompute every hash, and drop the checkpoints they cannot sign."""
    con = sqlite3.connect(db)
    try:
        rows = con.execute(
            "SELECT seq, ts_ms, event, actor, session_id, action_id, body FROM audit ORDER BY seq"
        ).fetchall()
        con.execute("DELETE FROM audit")
        con.execute("DELETE FROM checkpoints")
        head = ChainHead()
        for seq, ts, event, actor, sid, aid, body in rows[: keep if keep is not None else len(rows)]:
            data = json.loads(body)["data"]
            if seq == edit_seq:
                data = {**data, "i": -1}
            row = head.append(ts_ms=ts, event=event, actor=actor, session_id=sid, action_id=aid, data=data)
            con.execute(
                "INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (row.seq, row.ts_ms, row.event, row.actor, row.session_id, row.action_id, row.body,
                 row.prev_hash, row.hash),
            )  # fmt: skip
            head = ChainHead(row.seq, row.hash)
        con.commit()
    finally:
        con.close()


async def test_export_then_verify_passes(tmp_path: Path) -> None:
    db, _ = await make_log(tmp_path)
    doc = export(db, tmp_path / "cp.json")
    assert set(doc) == {"format", "seq", "hash", "ts_ms", "key_id", "signature", "public_key"}
    assert doc["seq"] == 20
    code, out, err = run("audit", "verify", "--db", str(db), "--checkpoint", str(tmp_path / "cp.json"))
    assert code == 0, err
    assert "intact" in out


async def test_export_to_stdout(tmp_path: Path) -> None:
    db, _ = await make_log(tmp_path, 3)
    code, out, _ = run("audit", "checkpoint", "--db", str(db), "--export", "-")
    assert code == 0 and json.loads(out)["seq"] == 3


@pytest.mark.parametrize("attack", ["truncate", "rewrite"])
async def test_rechained_log_passes_locally_but_not_against_the_export(tmp_path: Path, attack: str) -> None:
    db, _ = await make_log(tmp_path)
    export(db, tmp_path / "cp.json")
    if attack == "truncate":
        rechain(db, keep=15)
    else:
        rechain(db, edit_seq=7)
    # On the box alone, the attack is invisible: the chain is self-consistent
    # and there is no checkpoint left to contradict it...
    code, _, _ = run("audit", "verify", "--db", str(db))
    assert code == 0
    # ...but the exported checkpoint contradicts it.
    code, _, err = run("audit", "verify", "--db", str(db), "--checkpoint", str(tmp_path / "cp.json"))
    assert code == 1
    assert ("truncated" in err) if attack == "truncate" else ("rewritten" in err)


async def test_forged_checkpoint_table_is_caught(tmp_path: Path) -> None:
    """Replacing the checkpoints with ones signed by another key fails too."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from towerctl.audit.signing import key_id, sign_checkpoint

    db, _ = await make_log(tmp_path)
    export(db, tmp_path / "cp.json")
    rechain(db, edit_seq=3)
    evil = Ed25519PrivateKey.generate()
    con = sqlite3.connect(db)
    seq, hash_ = con.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    con.execute(
        "INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?)",
        (seq, hash_, 1, key_id(evil.public_key()), sign_checkpoint(evil, seq, hash_)),
    )
    con.commit()
    con.close()
    code, _, _ = run("audit", "verify", "--db", str(db), "--checkpoint", str(tmp_path / "cp.json"))
    assert code == 1


async def test_tampered_export_file_is_rejected(tmp_path: Path) -> None:
    db, _ = await make_log(tmp_path)
    doc = export(db, tmp_path / "cp.json")
    doc["seq"] = 5
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    code, _, err = run("audit", "verify", "--db", str(db), "--checkpoint", str(tmp_path / "bad.json"))
    assert code == 2 and "signature" in err


async def test_checkpoint_from_another_key_with_explicit_key_is_refused(tmp_path: Path) -> None:
    db, _ = await make_log(tmp_path)
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other_db, _ = await make_log(other_dir)
    export(other_db, tmp_path / "other.json")
    code, _, err = run(
        "audit", "verify", "--db", str(db), "--key", str(tmp_path / "tower.db.signing-key"),
        "--checkpoint", str(tmp_path / "other.json"),
    )  # fmt: skip
    assert code == 2 and "not the key" in err


async def test_export_refuses_a_broken_chain(tmp_path: Path) -> None:
    db, _ = await make_log(tmp_path)
    con = sqlite3.connect(db)
    con.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 4")
    con.commit()
    con.close()
    code, _, err = run("audit", "checkpoint", "--db", str(db), "--export", str(tmp_path / "cp.json"))
    assert code == 1 and "BROKEN" in err
    assert not (tmp_path / "cp.json").exists()
