"""The write operations on what operators administer: environment freezes,
policies and tokens.

Rare next to the action operations in :mod:`towerctl.store.ops`, and with no
part in the action state machine; same contract: plain functions over a
``Tx``, one state change plus its audit record, undone together if they raise.
"""

from __future__ import annotations

from towerctl.store.models import NotFound, TokenRow
from towerctl.store.ops import to_json
from towerctl.store.tx import Tx


def env_frozen(tx: Tx, env: str, frozen: bool, *, actor: str, ts_ms: int) -> None:
    tx.conn.execute(
        "INSERT INTO env_state (env, frozen, updated_by, updated_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (env) DO UPDATE SET frozen = excluded.frozen,"
        " updated_by = excluded.updated_by, updated_at = excluded.updated_at",
        (env, int(frozen), actor, ts_ms),
    )
    tx.audit("env.frozen" if frozen else "env.unfrozen", actor=actor, ts_ms=ts_ms, data={"env": env})


def policy_saved(tx: Tx, env: str, doc: dict[str, object], *, actor: str, ts_ms: int) -> int:
    r = tx.one("SELECT COALESCE(MAX(version), 0) FROM policies WHERE env = ?", (env,))
    version = int(r[0] if r else 0) + 1
    tx.conn.execute(
        "INSERT INTO policies (env, version, doc, created_by, created_at) VALUES (?, ?, ?, ?, ?)",
        (env, version, to_json(doc), actor, ts_ms),
    )
    tx.audit(
        "policy.applied",
        actor=actor,
        ts_ms=ts_ms,
        data={"env": env, "version": version, "doc": doc},
    )
    return version


def token_added(tx: Tx, row: TokenRow, *, actor: str, ts_ms: int) -> None:
    tx.conn.execute(
        "INSERT INTO tokens (token_id, name, role, envs, hash, created_at, revoked_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            row.token_id,
            row.name,
            row.role,
            to_json(list(row.envs)),
            row.hash,
            row.created_at,
            row.revoked_at,
        ),
    )
    tx.audit(
        "token.created",
        actor=actor,
        ts_ms=ts_ms,
        data={
            "token_id": row.token_id,
            "name": row.name,
            "role": row.role,
            "envs": list(row.envs),
            "hash": row.hash,
        },
    )


def token_revoked(tx: Tx, token_id: str, *, actor: str, ts_ms: int) -> None:
    row = tx.one("SELECT name, role, revoked_at FROM tokens WHERE token_id = ?", (token_id,))
    if row is None:
        raise NotFound(f"no token {token_id}")
    name, role, revoked_at = row
    if revoked_at is not None:
        return  # already revoked: nothing changes, nothing to record
    tx.conn.execute("UPDATE tokens SET revoked_at = ? WHERE token_id = ?", (ts_ms, token_id))
    tx.audit(
        "token.revoked",
        actor=actor,
        ts_ms=ts_ms,
        data={"token_id": token_id, "name": name, "role": role},
    )
