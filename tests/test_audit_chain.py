"""The audit chain's verification, pure and table-driven: every tamper kind is
found, at the right record, with the right reason."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent_shim.canonical import canonical_json
from towerctl.audit import chain
from towerctl.audit.chain import (
    GENESIS_HASH,
    AuditRow,
    ChainHead,
    CheckpointRow,
    record_hash,
    verify,
)
from towerctl.audit.signing import (
    CHECKPOINT_TAG,
    checkpoint_message,
    key_id,
    sign_checkpoint,
    verify_checkpoint,
)

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
N = 10
CHECKPOINT_AT = (4, 8)

Rows = list[AuditRow]
Cps = list[CheckpointRow]


def build(n: int = N) -> Rows:
    head, rows = ChainHead(), []
    for i in range(1, n + 1):
        row = head.append(
            ts_ms=1_700_000_000_000 + i,
            event="action.proposed" if i % 2 else "action.allowed",
            actor=f"agent:a{i % 3}",
            session_id="s-1",
            action_id=f"a-{(i + 1) // 2}" if i > 1 else None,
            data={"i": i, "command": f"kubectl get pods -n ns{i}", "ünï": "çødé"},
        )
        rows.append(row)
        head = ChainHead(row.seq, row.hash)
    return rows


def sign(rows: Rows, at: tuple[int, ...] = CHECKPOINT_AT, key: Ed25519PrivateKey = KEY) -> Cps:
    kid = key_id(key.public_key())
    return [CheckpointRow(s, rows[s - 1].hash, 1, kid, sign_checkpoint(key, s, rows[s - 1].hash)) for s in at]


def rechain(rows: Rows, start: int) -> Rows:
    """Recompute hashes and links from index ``start`` on, as an attacker with
    the database (but not the key) would after an edit."""
    out = list(rows[:start])
    prev = out[-1].hash if out else GENESIS_HASH
    for r in rows[start:]:
        h = record_hash(r.seq, prev, r.body.encode())
        out.append(dataclasses.replace(r, prev_hash=prev, hash=h))
        prev = h
    return out


def edit_body(row: AuditRow, **data: object) -> AuditRow:
    body = json.loads(row.body)
    body["data"].update(data)
    return dataclasses.replace(row, body=canonical_json(body).decode())


def with_body_seq(row: AuditRow, seq: int) -> AuditRow:
    body = json.loads(row.body)
    body["seq"] = seq
    return dataclasses.replace(row, seq=seq, body=canonical_json(body).decode())


# Each tamper takes the good rows and checkpoints and returns tampered ones.
Tamper = Callable[[Rows, Cps], tuple[Rows, Cps]]


def _edit(rows: Rows, cps: Cps) -> tuple[Rows, Cps]:
    rows[4] = edit_body(rows[4], command="kubectl delete ns prod")
    return rows, cps


def _edit_column(rows: Rows, cps: Cps) -> tuple[Rows, Cps]:
    rows[4] = dataclasses.replace(rows[4], actor="operator:mallory")
    return rows, cps


def _edit_ts_column(rows: Rows, cps: Cps) -> tuple[Rows, Cps]:
    rows[4] = dataclasses.replace(rows[4], ts_ms=rows[4].ts_ms + 1)
    return rows, cps


def _edit_prev_hash(rows: Rows, cps: Cps) -> tuple[Rows, Cps]:
    rows[4] = dataclasses.replace(rows[4], prev_hash="ab" * 32)
    return rows, cps


def _edit_and_rehash_one(rows: Rows, cps: Cps) -> tuple[Rows, Cps]:
    r = edit_body(rows[4], command="rm -rf /")
    rows[4] = dataclasses.replace(r, hash=record_hash(r.seq, r.prev_hash, r.body.encode()))
    return rows, cps


def _not_json_rehashed(rows: Rows, cps: Cps) -> tuple[Rows, Cps]:
    r = dataclasses.replace(rows[4], body="not json")
    rows[4] = dataclasses.replace(r, hash=record_hash(r.seq, r.prev_hash, b"not json"))
    return rechain(rows, 5)[: len(rows)], []


def _delete(rows: Rows, cps: Cps) -> tuple[Rows, Cps]:
    del rows[4]
    return rows, cps


def _delete_first(rows: Rows, cps: Cps) -> tuple[Rows, Cps]:
    del rows[0]
    return rows, cps


def _delete_and_renumber(rows: Rows, cps: Cps) -> tuple[Rows, Cps]:
    # Close the gap in the seq column; the hashed bodies still say who they are.
    del rows[4]
    return rows[:4] + [dataclasses.replace(r, seq=r.seq - 1) for r in rows[4:]], cps


def _swap_positions(rows: Rows, cps: Cps) -> tuple[Rows, Cps]:
    rows[4], rows[5] = rows[5], rows[4]
    return rows, cps


def _swap_contents(rows: Rows, cps: Cps) -> tuple[Rows, Cps]:
    # What a swap looks like in a table keyed by seq: everything but seq trades places.
    a, b = rows[4], rows[5]
    rows[4] = dataclasses.replace(b, seq=a.seq)
    rows[5] = dataclasses.replace(a, seq=b.seq)
    return rows, cps


def _duplicate(rows: Rows, cps: Cps) -> tuple[Rows, Cps]:
    rows.insert(5, rows[4])
    return rows, cps


def _truncate(rows: Rows, cps: Cps) -> tuple[Rows, Cps]:
    return rows[:6], cps


def _truncate_all(rows: Rows, cps: Cps) -> tuple[Rows, Cps]:
    return [], cps


def _rewrite_chain(rows: Rows, cps: Cps) -> tuple[Rows, Cps]:
    rows[2] = edit_body(rows[2], command="nothing to see")
    return rechain(rows, 2), cps


def _rewrite_chain_and_checkpoints(rows: Rows, cps: Cps) -> tuple[Rows, Cps]:
    rows, _ = _rewrite_chain(rows, cps)
    return rows, [dataclasses.replace(c, hash=rows[c.seq - 1].hash) for c in cps]


def _rewrite_and_resign_other_key(rows: Rows, cps: Cps) -> tuple[Rows, Cps]:
    rows, _ = _rewrite_chain(rows, cps)
    return rows, sign(rows, key=OTHER_KEY)


def _rewrite_and_resign_other_key_forged_id(rows: Rows, cps: Cps) -> tuple[Rows, Cps]:
    rows, forged = _rewrite_and_resign_other_key(rows, cps)
    return rows, [dataclasses.replace(c, key_id=cps[0].key_id) for c in forged]


def _garbage_signature(rows: Rows, cps: Cps) -> tuple[Rows, Cps]:
    cps[1] = dataclasses.replace(cps[1], signature="zz")
    return rows, cps


def _bool_for_int(rows: Rows, cps: Cps) -> tuple[Rows, Cps]:
    # JSON true == 1 in Python; the column check must not be fooled.
    body = json.loads(rows[0].body)
    body["ts_ms"] = True
    r = dataclasses.replace(rows[0], ts_ms=1, body=canonical_json(body).decode())
    rows[0] = dataclasses.replace(r, hash=record_hash(1, GENESIS_HASH, r.body.encode()))
    return rechain(rows, 1), []


TAMPERS: list[tuple[str, Tamper, int, str]] = [
    ("edited body", _edit, 5, chain.EDITED),
    ("edited column only", _edit_column, 5, chain.BODY_MISMATCH),
    ("edited ts column", _edit_ts_column, 5, chain.BODY_MISMATCH),
    ("edited prev_hash", _edit_prev_hash, 5, chain.EDITED),
    ("edited and its own hash recomputed", _edit_and_rehash_one, 6, chain.UNLINKED),
    ("body replaced by non-JSON, chain recomputed", _not_json_rehashed, 5, chain.BODY_MISMATCH),
    ("bool smuggled for an int", _bool_for_int, 1, chain.BODY_MISMATCH),
    ("deleted", _delete, 5, chain.DELETED),
    ("first deleted", _delete_first, 1, chain.DELETED),
    ("deleted and renumbered", _delete_and_renumber, 5, chain.DELETED),
    ("two swapped in order", _swap_positions, 5, chain.REORDERED),
    ("two swapped in place", _swap_contents, 5, chain.REORDERED),
    ("one duplicated", _duplicate, 6, chain.REORDERED),
    ("tail truncated", _truncate, 7, chain.truncated(6, 8)),
    ("everything truncated", _truncate_all, 1, chain.truncated(0, 8)),
    ("chain rewritten after an edit", _rewrite_chain, 4, chain.REWRITTEN),
    ("chain and checkpoint hashes rewritten", _rewrite_chain_and_checkpoints, 4, chain.BAD_SIGNATURE),
    ("re-signed with another key", _rewrite_and_resign_other_key, 4, chain.BAD_SIGNATURE),
    ("re-signed, key id forged", _rewrite_and_resign_other_key_forged_id, 4, chain.BAD_SIGNATURE),
    ("garbage signature", _garbage_signature, 8, chain.BAD_SIGNATURE),
]


def test_good_chain_verifies() -> None:
    rows = build()
    result = verify(rows, sign(rows), KEY.public_key())
    assert result == chain.VerifyResult(
        ok=True,
        records=N,
        checkpoints=2,
        first_bad_seq=None,
        problem=None,
        checkpoints_verified=True,
    )
    assert result.describe().startswith("audit log intact: 10 records, 2 checkpoints")


@pytest.mark.parametrize(
    ("tamper", "bad_seq", "problem"),
    [pytest.param(t, s, p, id=name) for name, t, s, p in TAMPERS],
)
def test_tamper_is_detected(tamper: Tamper, bad_seq: int, problem: str) -> None:
    rows = build()
    tampered, cps = tamper(list(rows), sign(rows))
    result = verify(tampered, cps, KEY.public_key())
    assert (result.ok, result.first_bad_seq, result.problem) == (False, bad_seq, problem)
    assert f"BROKEN at record {bad_seq}: {problem}" in result.describe()


def test_streams_records_once() -> None:
    rows = build()
    result = verify(iter(rows), sign(rows), KEY.public_key())
    assert result.ok and result.records == N


def test_without_key_checks_chain_and_checkpoint_hashes_but_not_signatures() -> None:
    rows = build()
    forged_rows, forged_cps = _rewrite_chain_and_checkpoints(list(rows), sign(rows))
    result = verify(forged_rows, forged_cps, None)
    assert result.ok and not result.checkpoints_verified
    assert "NOT verified" in result.describe()
    rewritten, cps = _rewrite_chain(list(rows), sign(rows))
    assert verify(rewritten, cps, None).problem == chain.REWRITTEN


def test_truncation_after_last_checkpoint_is_not_detectable() -> None:
    # The reason close() signs a final checkpoint: without one the tail is unprotected.
    rows = build()
    assert verify(rows[:9], sign(rows), KEY.public_key()).ok


def test_earliest_problem_wins() -> None:
    rows = build()
    tampered, cps = _rewrite_chain(list(rows), sign(rows))  # caught at checkpoint 4
    tampered[1] = edit_body(tampered[1], x=1)  # an edit at 2 comes first
    result = verify(tampered, cps, KEY.public_key())
    assert (result.first_bad_seq, result.problem) == (2, chain.EDITED)


@pytest.mark.parametrize(
    ("rows", "cps", "expected"),
    [
        pytest.param([], [], (True, 0, None, None), id="empty"),
        pytest.param(build(1), [], (True, 1, None, None), id="one record"),
    ],
)
def test_small_logs(rows: Rows, cps: Cps, expected: tuple[bool, int, int | None, str | None]) -> None:
    r = verify(rows, cps, KEY.public_key())
    assert (r.ok, r.records, r.first_bad_seq, r.problem) == expected


def test_record_hash_layout() -> None:
    body = b'{"x":1}'
    expected = hashlib.sha256(
        b"towerctl/audit/v1\x00" + (7).to_bytes(8, "big") + bytes.fromhex("11" * 32) + body
    ).hexdigest()
    assert record_hash(7, "11" * 32, body) == expected
    with pytest.raises(ValueError):
        record_hash(1, "11", body)


def test_append_builds_canonical_body_and_links() -> None:
    first = ChainHead().append(
        ts_ms=5, event="hub.started", actor="hub", session_id=None, action_id=None, data={"b": 1, "a": [1, 2]}
    )
    assert first.seq == 1 and first.prev_hash == GENESIS_HASH
    assert first.body == (
        '{"action_id":null,"actor":"hub","data":{"a":[1,2],"b":1},"event":"hub.started",'
        '"seq":1,"session_id":null,"ts_ms":5}'
    )
    assert first.data == {"a": [1, 2], "b": 1}
    second = ChainHead(first.seq, first.hash).append(
        ts_ms=6, event="hub.stopped", actor="hub", session_id=None, action_id=None, data={}
    )
    assert (second.seq, second.prev_hash) == (2, first.hash)


@pytest.mark.parametrize(
    ("ts_ms", "data"),
    [
        pytest.param(1.5, {}, id="float time"),
        pytest.param(True, {}, id="bool time"),
        pytest.param(1, {"rate": 0.5}, id="float in data"),
    ],
)
def test_append_refuses_floats(ts_ms: object, data: dict[str, object]) -> None:
    with pytest.raises((TypeError, ValueError)):
        ChainHead().append(
            ts_ms=ts_ms,  # type: ignore[arg-type]
            event="e.x",
            actor="a",
            session_id=None,
            action_id=None,
            data=data,
        )


ODD = 'naïve "q" \\ \t\n\x00\x1f \U0001f680 \u2028 </script>'


@pytest.mark.parametrize(
    ("event", "actor", "session_id", "action_id", "data"),
    [
        pytest.param("hub.started", "hub", None, None, {}, id="nulls, empty data"),
        pytest.param("action.running", "agent:a", "s-1", "a-1", {"from": "allowed"}, id="ids"),
        pytest.param(ODD, ODD, ODD, ODD, {ODD: [ODD, 1, None, True, {"z": -2**70, "a": ""}]}, id="odd text"),
        pytest.param("e", "a", "", "", {"k": {"deep": [[[]]]}}, id="empty ids"),
    ],
)
def test_records_assembled_field_by_field_are_the_canonical_encoding_of_the_dict(
    event: str, actor: str, session_id: str | None, action_id: str | None, data: dict[str, object]
) -> None:
    record = {
        "seq": 12,
        "ts_ms": 1_700_000_000_000,
        "event": event,
        "actor": actor,
        "session_id": session_id,
        "action_id": action_id,
        "data": data,
    }
    whole = canonical_json(record)
    head = ChainHead(11, "ab" * 32)
    fields = dict(
        ts_ms=1_700_000_000_000, event=event, actor=actor, session_id=session_id, action_id=action_id
    )
    for row in (
        head.append(**fields, data=data),
        head.append(**fields, data=data, typed=True),
        head.append(**fields, data=chain.CanonicalJSON(canonical_json(data).decode())),
    ):
        assert row.body.encode("utf-8") == whole
        assert row.hash == record_hash(12, "ab" * 32, whole)


def test_proposed_data_spliced_from_column_json_is_the_canonical_encoding() -> None:
    from towerctl.store import ops
    from towerctl.store.ops import proposed_data, to_json

    body = {"action_id": "a-1", "kind": "shell", "command": ODD, "declared_risk": None, "cwd": ""}
    cases = (
        ((), None, None, ["allowed", "running"]),
        ((ODD, "x"), {"match": ODD, "verdict": "ask", "kind": "*"}, 1_700_000_000_000, ["pending"]),
    )
    for reasons, rule, expires_at, states in cases:
        data = {
            "body": body,
            "digest": "d" * 64,
            "risk": "destructive",
            "reasons": list(reasons),
            "policy_verdict": "ask",
            "rule": rule,
            "expires_at": expires_at,
            "states": states,
        }
        spliced = proposed_data(
            to_json(body),
            "d" * 64,
            "ask",
            to_json(list(reasons)),
            "destructive",
            to_json(rule),
            expires_at=expires_at,
            states=to_json(states),
        )
        assert spliced.encode("utf-8") == canonical_json(data)
    # The states' JSON that action_proposed passes is made once, at import.
    assert to_json(["allowed", "running"]) == ops._STARTED
    assert {s: to_json([s]) for s in ops.INITIAL_STATES} == ops._STATES


@pytest.mark.parametrize("bad", [{"event": 1}, {"actor": None}, {"session_id": 5}, {"action_id": b"a"}])
def test_record_fields_of_the_wrong_type_are_refused(bad: dict[str, object]) -> None:
    fields: dict[str, object] = dict(event="e", actor="a", session_id=None, action_id=None) | bad
    with pytest.raises(TypeError):
        ChainHead().append(ts_ms=1, data={}, **fields)  # type: ignore[arg-type]


def test_checkpoint_message_and_signature() -> None:
    h = "22" * 32
    assert checkpoint_message(3, h) == CHECKPOINT_TAG + (3).to_bytes(8, "big") + bytes.fromhex(h)
    sig = sign_checkpoint(KEY, 3, h)
    pub = KEY.public_key()
    assert verify_checkpoint(pub, 3, h, sig)
    assert not verify_checkpoint(pub, 4, h, sig)
    assert not verify_checkpoint(pub, 3, "33" * 32, sig)
    assert not verify_checkpoint(OTHER_KEY.public_key(), 3, h, sig)
    assert not verify_checkpoint(pub, 3, "nothex", sig)
    assert len(key_id(pub)) == 16 and key_id(pub) != key_id(OTHER_KEY.public_key())
