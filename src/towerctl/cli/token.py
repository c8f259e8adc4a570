"""``towerctl token``: credentials are created here and shown exactly once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import click

from towerctl.cli.common import db_option, emit_json, fail, json_option
from towerctl.config import default_db, default_key


def _paths(db: str | None) -> tuple[Path, Path]:
    db_path = Path(db) if db else default_db()
    db_path.parent.mkdir(parents=True, exist_ok=True)
    return db_path, default_key(db_path)


@click.group()
def token() -> None:
    """Create, list and revoke bearer tokens (only hashes are stored)."""


@token.command("create")
@click.option("--role", type=click.Choice(["agent", "viewer", "approver", "admin"]), required=True)
@click.option("--env", "envs", multiple=True, help="Environment scope (repeatable); none means all.")
@click.option("--name", default=None, help="Who or what holds it (shown in the audit log).")
@db_option
@json_option
def create(role: str, envs: tuple[str, ...], name: str | None, db: str | None, as_json: bool) -> None:
    """Print a new token once."""
    from towerctl.store import Store
    from towerctl.tokens import create_token

    db_path, key_path = _paths(db)

    async def go() -> str:
        store = await Store.open(db_path, key_path=key_path)
        try:
            return await create_token(
                store, role=role, name=name or f"{role}-{int(time.time())}", envs=envs, actor="cli"
            )
        finally:
            await store.close()

    value = asyncio.run(go())
    if as_json:
        emit_json({"token": value, "role": role, "envs": list(envs)})
    else:
        click.echo(value)


@token.command("list")
@db_option
@json_option
def list_(db: str | None, as_json: bool) -> None:
    """List tokens (never their values)."""
    from towerctl.store import Store

    db_path, key_path = _paths(db)

    async def go() -> list[dict[str, object]]:
        store = await Store.open(db_path, key_path=key_path)
        try:
            return [
                {
                    "id": t.token_id,
                    "name": t.name,
                    "role": t.role,
                    "envs": list(t.envs),
                    "created_at": t.created_at,
                    "revoked": t.revoked_at is not None,
                }
                for t in await store.tokens()
            ]
        finally:
            await store.close()

    rows = asyncio.run(go())
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        envs = ",".join(r["envs"]) or "*"  # type: ignore[arg-type]
        click.echo(
            f"{r['id']:<16} {r['role']:<9} {envs:<16} {r['name']}{'  (revoked)' if r['revoked'] else ''}"
        )


@token.command("revoke")
@click.argument("token_id")
@db_option
def revoke(token_id: str, db: str | None) -> None:
    """Revoke TOKEN_ID: new connections with it are refused."""
    from towerctl.store import Store, StoreError

    db_path, key_path = _paths(db)

    async def go() -> None:
        store = await Store.open(db_path, key_path=key_path)
        try:
            await store.token_revoked(token_id, actor="cli", ts_ms=time.time_ns() // 1_000_000)
        finally:
            await store.close()

    try:
        asyncio.run(go())
    except StoreError as exc:
        fail(str(exc))
    click.echo(f"revoked {token_id}")
