"""Operator commands for scripts: list, decide, pause, resume, kill, freeze."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from agent_shim.action_ids import short_id
from towerctl.cli.common import emit_json, fail, json_option, run, token_option, url_option
from towerctl.config import resolve
from towerctl.textsafe import safe_text

_T = TypeVar("_T")


async def _with_client(url: str | None, token: str | None, fn: Callable[[Any], Awaitable[_T]]) -> _T:
    from towerctl.operator import OperatorClient, OperatorError

    settings = resolve(url=url, token=token, role="admin")
    if not settings.token:
        fail("no token: set TOWER_TOKEN, pass --token, or run `towerctl serve` once to create one")
    try:
        async with OperatorClient(settings.url, settings.token, client="towerctl-cli") as client:
            return await fn(client)
    except OperatorError as exc:
        fail(str(exc), 2 if exc.code in ("unreachable", "http") else 1)
        raise AssertionError from exc  # unreachable: fail exits


def _age(ms: int) -> str:
    secs = max(0, int(time.time() - ms / 1000))
    if secs < 120:
        return f"{secs}s"
    if secs < 7200:
        return f"{secs // 60}m"
    return f"{secs // 3600}h"


@click.command()
@url_option
@token_option
@json_option
def sessions(url: str | None, token: str | None, as_json: bool) -> None:
    """List agent sessions known to the hub."""

    async def go(client: Any) -> None:
        rows = sorted(client.sessions.values(), key=lambda s: (s.env, s.agent))
        if as_json:
            emit_json([s.model_dump(mode="json") for s in rows])
            return
        click.echo(f"{'SESSION':<20} {'AGENT':<18} {'ENV':<10} {'STATUS':<13} {'PEND':>4} {'UP':>5}  CURRENT")
        for s in rows:
            status = s.status if s.connected or s.status == "killed" else f"{s.status}*"
            click.echo(
                f"{s.session_id:<20} {safe_text(s.agent, single_line=True)[:18]:<18} {s.env:<10} "
                f"{status:<13} {s.pending:>4} {_age(s.started_at):>5}  "
                f"{safe_text(s.current_action, single_line=True)[:60]}"
            )

    run(_with_client(url, token, go))


@click.command()
@url_option
@token_option
@json_option
def pending(url: str | None, token: str | None, as_json: bool) -> None:
    """List actions waiting for a decision, oldest first."""

    async def go(client: Any) -> None:
        rows = sorted(client.pending.values(), key=lambda a: a.created_at)
        if as_json:
            emit_json(
                [
                    {
                        "id": a.action.action_id,
                        "session_id": a.session_id,
                        "agent": a.agent,
                        "env": a.env,
                        "kind": a.action.kind,
                        "command": a.action.command,
                        "target": a.action.target,
                        "reason": a.action.reason,
                        "risk": a.risk,
                        "reasons": list(a.reasons),
                        "rule": a.rule.model_dump(mode="json") if a.rule else None,
                        "explanation": a.explanation,
                        "digest": a.digest,
                        "created_at": a.created_at,
                        "expires_at": a.expires_at,
                    }
                    for a in rows
                ]
            )
            return
        if not rows:
            click.echo("no pending actions")
        for a in rows:
            left = max(0, ((a.expires_at or 0) - int(time.time() * 1000)) // 1000)
            click.echo(
                f"{short_id(a.action.action_id)}  {a.env:<8} {a.agent:<16} {a.risk:<11} {left:>4}s  "
                f"{safe_text(a.action.command, single_line=True)[:80]}"
            )
            for r in a.reasons:
                click.echo(f"{'':14}- {safe_text(r, single_line=True)}")

    run(_with_client(url, token, go))


def _decide(
    url: str | None, token: str | None, action_id: str, approve: bool, reason: str, as_json: bool
) -> None:
    async def go(client: Any) -> None:
        info = client.resolve_action(action_id)
        await client.decide(info.action.action_id, approve, reason)
        verb = "approved" if approve else "denied"
        if as_json:
            emit_json({"id": info.action.action_id, "decision": verb, "operator": client.name})
        else:
            click.echo(
                f"{verb} {info.action.action_id}: {safe_text(info.action.command, single_line=True)[:80]}"
            )

    run(_with_client(url, token, go))


@click.command()
@click.argument("action_id")
@click.option("--reason", default="", help="Why (kept in the audit log).")
@url_option
@token_option
@json_option
def approve(action_id: str, reason: str, url: str | None, token: str | None, as_json: bool) -> None:
    """Approve pending action ACTION_ID (its unique start or end, as `pending` shows it, is enough)."""
    _decide(url, token, action_id, True, reason, as_json)


@click.command()
@click.argument("action_id")
@click.option("--reason", required=True, help="Sent back to the agent and kept in the audit log.")
@url_option
@token_option
@json_option
def deny(action_id: str, reason: str, url: str | None, token: str | None, as_json: bool) -> None:
    """Deny pending action ACTION_ID (or its unique start or end) with a reason."""
    _decide(url, token, action_id, False, reason, as_json)


def _control_command(op: str, doc: str) -> click.Command:
    @click.command(name=op, help=doc)
    @click.argument("session_id")
    @click.option("--reason", default="", help="Kept in the audit log and shown to the agent.")
    @url_option
    @token_option
    @json_option
    def command(session_id: str, reason: str, url: str | None, token: str | None, as_json: bool) -> None:
        async def go(client: Any) -> None:
            result = await client.control(session_id, op, reason)
            if as_json:
                emit_json({"session_id": result.message, "op": op, "ok": True})
            else:
                click.echo(f"{op}: {result.message}")

        run(_with_client(url, token, go))

    return command


pause = _control_command("pause", "Pause SESSION_ID: its next action blocks until resumed.")
resume = _control_command("resume", "Resume paused SESSION_ID.")
kill = _control_command("kill", "Kill SESSION_ID: pending and later actions fail with SessionKilled.")


def _freeze_command(frozen: bool) -> click.Command:
    name = "freeze" if frozen else "unfreeze"

    @click.command(
        name=name,
        help=f"{name.capitalize()} ENV: every session in it is {'paused' if frozen else 'resumed'}.",
    )
    @click.argument("env")
    @click.option("--reason", default="")
    @url_option
    @token_option
    @json_option
    def command(env: str, reason: str, url: str | None, token: str | None, as_json: bool) -> None:
        async def go(client: Any) -> None:
            await client.freeze(env, frozen, reason)
            if as_json:
                emit_json({"env": env, "frozen": frozen})
            else:
                click.echo(f"{env}: {'frozen' if frozen else 'unfrozen'}")

        run(_with_client(url, token, go))

    return command


freeze = _freeze_command(True)
unfreeze = _freeze_command(False)
