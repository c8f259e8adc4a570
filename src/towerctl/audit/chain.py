"""The audit hash chain and its verification, as pure functions over rows.

No I/O here, so that the writer, the verifier and the tests agree byte for byte
and a verification can be replayed from any source of rows (the database, an
export, a test table).

Each record commits to its sequence number, the previous record's hash and its
canonical body, so an edit, a deletion or a reordering breaks the chain at a
known place. An attacker who recomputes every hash after an edit is caught by
the signed checkpoints; one who also deletes the tail is caught by a checkpoint
that points past the end of the log.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, NotRequired, TypedDict, Unpack

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent_shim.canonical import canonical_str, canonical_text
from towerctl.audit.signing import key_id, verify_checkpoint

RECORD_TAG: Final = b"towerctl/audit/v1\x00"
GENESIS_HASH: Final = "0" * 64
BODY_KEYS: Final = frozenset({"seq", "ts_ms", "event", "actor", "session_id", "action_id", "data"})

EDITED: Final = "hash mismatch (record edited)"
DELETED: Final = "seq gap (record deleted)"
REORDERED: Final = "seq out of order (records reordered)"
UNLINKED: Final = "prev_hash does not link"
BODY_MISMATCH: Final = "body does not match columns"
BAD_SIGNATURE: Final = "checkpoint signature invalid"
REWRITTEN: Final = "checkpoint hash does not match record (chain rewritten)"


def truncated(last_seq: int, checkpoint_seq: int) -> str:
    return f"log truncated: last record {last_seq} < checkpoint {checkpoint_seq}"


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One audit record as stored. ``body`` is the canonical JSON that was hashed."""

    seq: int
    ts_ms: int
    event: str
    actor: str
    session_id: str | None
    action_id: str | None
    body: str
    prev_hash: str
    hash: str

    @property
    def data(self) -> dict[str, object]:
        """The event's payload, from the hashed body (the columns are only an index)."""
        parsed = json.loads(self.body)
        data = parsed.get("data") if isinstance(parsed, dict) else None
        return data if isinstance(data, dict) else {}


@dataclass(frozen=True, slots=True)
class CheckpointRow:
    seq: int
    hash: str
    ts_ms: int
    key_id: str
    signature: str


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """``first_bad_seq`` is the lowest record number whose integrity cannot be
    established; every record before it verified.

    ``checkpoints_verified`` is False when no public key was available: then
    checkpoint signatures were not checked, and a rewrite that also rewrote
    the checkpoint rows would go unnoticed.
    """

    ok: bool
    records: int
    checkpoints: int
    first_bad_seq: int | None
    problem: str | None
    checkpoints_verified: bool = False
    #: With an intact chain, how the hub's tables differ from what the log
    #: says they hold (towerctl.audit.tables); ``problem`` is the first.
    tables: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line for an operator (the CLI prints this)."""
        sigs = "signatures verified" if self.checkpoints_verified else "signatures NOT verified (no key)"
        head = f"{self.records} records, {self.checkpoints} checkpoints, {sigs}"
        if self.ok:
            return f"audit log intact: {head}"
        if self.tables:
            return f"audit log intact, but the tables DISAGREE with it: {self.problem} ({head})"
        return f"audit log BROKEN at record {self.first_bad_seq}: {self.problem} ({head})"


def _body_bytes(body: str) -> bytes:
    # surrogateescape round-trips bytes that were not valid UTF-8 on disk, so a
    # tampered body still hashes (to the wrong value) instead of crashing.
    return body.encode("utf-8", "surrogateescape")


def record_hash(seq: int, prev_hash: str, body: bytes) -> str:
    prev = bytes.fromhex(prev_hash)
    if len(prev) != 32:
        raise ValueError("prev_hash must be 32 bytes of hex")
    h = hashlib.sha256(RECORD_TAG)
    h.update(seq.to_bytes(8, "big"))
    h.update(prev)
    h.update(body)
    return h.hexdigest()


class RecordFields(TypedDict):
    """What a caller gives :meth:`ChainHead.append` (see :meth:`ChainHead.seal`)."""

    ts_ms: int
    event: str
    actor: str
    session_id: str | None
    action_id: str | None
    data: Mapping[str, object] | CanonicalJSON
    typed: NotRequired[bool]


@dataclass(frozen=True, slots=True)
class ChainHead:
    """Where the next record attaches. Immutable so that a writer can keep the
    head from before an operation and restore it when the operation rolls back."""

    seq: int = 0
    hash: str = GENESIS_HASH

    def append(self, **fields: Unpack[RecordFields]) -> AuditRow:
        """Seal the next record; the new head is ``ChainHead(row.seq, row.hash)``."""
        seq, text, hash_ = self.seal(**fields)
        return AuditRow(
            seq=seq,
            ts_ms=fields["ts_ms"],
            event=fields["event"],
            actor=fields["actor"],
            session_id=fields["session_id"],
            action_id=fields["action_id"],
            body=text,
            prev_hash=self.hash,
            hash=hash_,
        )

    def seal(
        self,
        *,
        ts_ms: int,
        event: str,
        actor: str,
        session_id: str | None,
        action_id: str | None,
        data: Mapping[str, object] | CanonicalJSON,
        typed: bool = False,
    ) -> tuple[int, str, str]:
        """(seq, canonical body, hash) of the next record: :meth:`append`
        without the AuditRow, for the writer, which stores the fields as they
        are (a frozen dataclass per record was ~5 % of its time).

        ``typed``: ``data`` holds only strings, ints, None and lists and dicts
        of them by construction (the writer's per-action records, built from
        validated rows), so the walk looking for floats is skipped. ``data``
        as :class:`CanonicalJSON` is used as it is: the writer encodes an
        action's body once for its row and its record. Tests re-encode such
        records and compare bytes."""
        if type(ts_ms) is not int:
            raise TypeError("ts_ms must be an int (milliseconds)")
        seq = self.seq + 1
        data_json = data if isinstance(data, CanonicalJSON) else canonical_text(data, checked=not typed)
        text = record_text(seq, ts_ms, event, actor, session_id, action_id, data_json)
        return seq, text, record_hash(seq, self.hash, text.encode("utf-8"))


class CanonicalJSON(str):
    """Text already in canonical form (``canonical_text``'s rules), put into
    a record as it is."""

    __slots__ = ()


def _str_or_null(value: str | None, name: str) -> str:
    if value is None:
        return "null"
    if type(value) is not str:
        raise TypeError(f"{name} must be a string or None")
    return canonical_str(value)


def record_text(
    seq: int,
    ts_ms: int,
    event: str,
    actor: str,
    session_id: str | None,
    action_id: str | None,
    data_json: str,
) -> str:
    """The canonical JSON of a record, assembled in sorted key order instead
    of building and sorting a dict per record (the writer makes two per
    allowed action). Equal to ``canonical_text`` of the record's dict; a table test
    holds it to that."""
    if type(event) is not str or type(actor) is not str:
        raise TypeError("event and actor must be strings")
    return "".join(
        (
            '{"action_id":',
            _str_or_null(action_id, "action_id"),
            ',"actor":',
            canonical_str(actor),
            ',"data":',
            data_json,
            ',"event":',
            canonical_str(event),
            ',"seq":',
            int.__repr__(seq),
            ',"session_id":',
            _str_or_null(session_id, "session_id"),
            ',"ts_ms":',
            int.__repr__(ts_ms),
            "}",
        )
    )


def _parse(body: str) -> dict[str, object] | None:
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _body_seq(body: str) -> int | None:
    parsed = _parse(body)
    seq = parsed.get("seq") if parsed is not None else None
    return seq if type(seq) is int else None


def _hash_ok(seq: int, prev_hash: str, body: str, expected: str) -> bool:
    try:
        return record_hash(seq, prev_hash, _body_bytes(body)) == expected
    except (ValueError, TypeError, OverflowError, UnicodeError):
        return False


def _same(a: object, b: object) -> bool:
    # Strict: JSON true must not pass for the integer 1.
    return type(a) is type(b) and a == b


def _columns_match(row: AuditRow) -> bool:
    parsed = _parse(row.body)
    if parsed is None or set(parsed) != BODY_KEYS:
        return False
    return (
        _same(parsed["seq"], row.seq)
        and _same(parsed["ts_ms"], row.ts_ms)
        and _same(parsed["event"], row.event)
        and _same(parsed["actor"], row.actor)
        and _same(parsed["session_id"], row.session_id)
        and _same(parsed["action_id"], row.action_id)
    )


@dataclass
class _Scan:
    records: int = 0
    last_seq: int = 0
    problem: tuple[int, str] | None = None


def _scan(records: Iterable[AuditRow], checkpoint_hash: Mapping[int, str]) -> _Scan:
    """Walk the chain once, streaming (a log may not fit in memory).

    When the expected record is missing from its place, whether it was deleted
    or moved is only known by looking further on, so the walk goes on to the
    end in that case, only to see whether some later record claims that number.
    """
    out = _Scan()
    expected, prev = 1, GENESIS_HASH
    missing: int | None = None  # the seq whose whereabouts are being looked for
    found_later = False
    for row in records:
        out.records += 1
        out.last_seq = row.seq
        if missing is not None:
            if not found_later and (row.seq == missing or _body_seq(row.body) == missing):
                found_later = True
            continue
        if out.problem is not None:
            continue
        if row.seq != expected:
            if row.seq < expected:
                out.problem = (expected, REORDERED)
            else:
                missing, found_later = expected, _body_seq(row.body) == expected
            continue
        if not _hash_ok(row.seq, row.prev_hash, row.body, row.hash):
            claimed = _body_seq(row.body)
            if (
                claimed is not None
                and claimed != row.seq
                and _hash_ok(claimed, row.prev_hash, row.body, row.hash)
            ):
                # An authentic record, just not the one that belongs here.
                missing, found_later = expected, False
            else:
                out.problem = (row.seq, EDITED)
            continue
        if not _columns_match(row):
            out.problem = (row.seq, BODY_MISMATCH)
        elif row.prev_hash != prev:
            out.problem = (row.seq, UNLINKED)
        elif row.seq in checkpoint_hash and checkpoint_hash[row.seq] != row.hash:
            out.problem = (row.seq, REWRITTEN)
        expected, prev = expected + 1, row.hash
    if missing is not None:
        out.problem = (missing, REORDERED if found_later else DELETED)
    return out


def verify(
    records: Iterable[AuditRow],
    checkpoints: Iterable[CheckpointRow],
    public_key: Ed25519PublicKey | None = None,
) -> VerifyResult:
    """Check the whole log; report the lowest-numbered problem.

    ``records`` must come in the order they are stored (by seq); any other
    order is itself reported. Without ``public_key`` the checkpoints are still
    compared with the records, but their signatures are not checked.
    """
    cps = sorted(checkpoints, key=lambda c: c.seq)
    # (seq, rank, problem): at equal seq the more specific finding wins.
    found: list[tuple[int, int, str]] = []
    if public_key is not None:
        kid = key_id(public_key)
        for cp in cps:
            if cp.key_id != kid or not verify_checkpoint(public_key, cp.seq, cp.hash, cp.signature):
                found.append((cp.seq, 1, BAD_SIGNATURE))
                break
    scan = _scan(records, {cp.seq: cp.hash for cp in cps})
    if scan.problem is not None:
        seq, problem = scan.problem
        found.append((seq, 0 if problem != REWRITTEN else 2, problem))
    if cps and cps[-1].seq > scan.last_seq:
        found.append((scan.last_seq + 1, 3, truncated(scan.last_seq, cps[-1].seq)))
    first = min(found) if found else None
    return VerifyResult(
        ok=first is None,
        records=scan.records,
        checkpoints=len(cps),
        first_bad_seq=first[0] if first else None,
        problem=first[2] if first else None,
        checkpoints_verified=public_key is not None,
    )
