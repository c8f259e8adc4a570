"""``towerctl policy``: show, apply and check per-environment policy."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import click

from towerctl.cli.common import db_option, emit_json, fail, json_option, token_option, url_option


@click.group()
def policy() -> None:
    """Show, apply and check per-environment policy."""


def _load_file(path: str) -> Any:
    from agent_shim.policy import PolicyError, parse_policy_toml

    try:
        return parse_policy_toml(Path(path).read_text(encoding="utf-8"))
    except PolicyError as exc:
        fail(f"{path}: {exc}", 2)
    except OSError as exc:
        fail(f"{path}: {exc.strerror}", 2)


async def _db_policies(db: Path) -> dict[str, Any]:
    from agent_shim.policy import EnvPolicy
    from towerctl.config import default_key
    from towerctl.store import Store

    store = await Store.open(db, key_path=default_key(db))
    try:
        return {
            env: EnvPolicy.model_validate_json(json.dumps(doc))
            for env, (_, doc) in (await store.latest_policies()).items()
        }
    finally:
        await store.close()


@policy.command()
@click.option("--env", "env", default=None, help="Only this environment.")
@db_option
@url_option
@token_option
@json_option
def show(env: str | None, db: str | None, url: str | None, token: str | None, as_json: bool) -> None:
    """Print the policy in force (from the hub, or from --db offline) as TOML."""
    from agent_shim.policy import PolicyDoc, default_policies, dump_policy_toml

    envs = dict(default_policies().environments)
    if db:
        envs.update(asyncio.run(_db_policies(Path(db))))
    else:
        from towerctl.cli.ops import _with_client

        async def go(client: Any) -> dict[str, Any]:
            return {e: info.policy for e, info in client.policies.items()}

        envs.update(asyncio.run(_with_client(url, token, go)))
    if env is not None:
        from agent_shim.policy import policy_for

        envs = {env: envs.get(env) or policy_for(None, env)}
    doc = PolicyDoc(environments=envs)
    if as_json:
        emit_json(doc.model_dump(mode="json"))
    else:
        click.echo(dump_policy_toml(doc), nl=False)


@policy.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@db_option
@url_option
@token_option
def apply(file: str, db: str | None, url: str | None, token: str | None) -> None:
    """Apply FILE: through the running hub (pushed to shims at once), or to --db offline."""
    doc = _load_file(file)
    if not doc.environments:
        # Valid (every environment keeps its built-in), but applying it changes
        # nothing: a wrong or emptied file must not look like a success.
        fail(f"{file} defines no [environments.NAME] table: nothing to apply", 2)
    if db:
        import time

        from towerctl.config import default_key
        from towerctl.store import Store

        async def offline() -> list[str]:
            store = await Store.open(Path(db), key_path=default_key(Path(db)))
            try:
                out = []
                for env, pol in doc.environments.items():
                    v = await store.policy_saved(
                        env, pol.model_dump(mode="json"), actor="cli", ts_ms=time.time_ns() // 1_000_000
                    )
                    out.append(f"{env}: version {v}")
                return out
            finally:
                await store.close()

        lines = asyncio.run(offline())
    else:
        from towerctl.cli.ops import _with_client

        async def go(client: Any) -> list[str]:
            out = []
            for env, pol in doc.environments.items():
                result = await client.set_policy(env, pol)
                out.append(f"{env}: {result.message}")
            return out

        lines = asyncio.run(_with_client(url, token, go))
    for line in lines:
        click.echo(line)


def _check_one(doc: Any, env: str, kind: str, command: str) -> dict[str, Any]:
    from agent_shim.gate import judge
    from agent_shim.policy import policy_for
    from agent_shim.protocol import Action

    pol = policy_for(doc, env)
    ruling = judge(pol, env, Action(action_id="check", kind=kind, command=command))  # type: ignore[arg-type]
    ev = ruling.evaluation
    return {
        "env": env,
        "kind": kind,
        "command": command,
        "verdict": ev.verdict,
        "risk": ev.risk,
        "reasons": list(ev.reasons),
        "rule": ev.rule.model_dump(mode="json") if ev.rule else None,
        "explanation": ev.explanation,
        "approval_timeout_s": pol.approval_timeout_s,
    }


@policy.command()
@click.option("--env", "env", default="prod", show_default=True)
@click.option(
    "--kind",
    default="shell",
    show_default=True,
    type=click.Choice(["shell", "sql", "k8s", "cloud", "file", "http", "tool"]),
)
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Policy TOML to check against (default: built-in).",
)
@click.option(
    "--jsonl",
    is_flag=True,
    help='Read {"env","kind","command"} lines on stdin; write one JSON verdict per line.',
)
@json_option
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def check(
    env: str, kind: str, policy_file: str | None, jsonl: bool, as_json: bool, command: tuple[str, ...]
) -> None:
    """Print the verdict, risk, reasons and rule for COMMAND, without running anything."""
    doc = _load_file(policy_file) if policy_file else None
    if jsonl:
        bad = 0
        for lineno, line in enumerate(sys.stdin, 1):
            if not line.strip():
                continue
            try:
                req = json.loads(line)
                if not isinstance(req, dict) or not isinstance(req.get("command"), str):
                    raise ValueError('expected an object with a string "command"')
                out = _check_one(doc, str(req.get("env", env)), str(req.get("kind", kind)), req["command"])
            except Exception as exc:
                bad += 1
                out = {"line": lineno, "error": str(exc).splitlines()[0][:300]}
            click.echo(json.dumps(out, sort_keys=True))
        sys.exit(1 if bad else 0)
    if not command:
        fail("give a command after --, or use --jsonl", 2)
    text = " ".join(command) if len(command) > 1 else command[0]
    result = _check_one(doc, env, kind, text)
    if as_json:
        emit_json(result)
        return
    from towerctl.textsafe import safe_text

    click.echo(f"verdict: {result['verdict']}")
    click.echo(f"risk:    {result['risk']}")
    for r in result["reasons"]:
        click.echo(f"  - {safe_text(r, single_line=True)}")
    if result["rule"]:
        rule = result["rule"]
        click.echo(f"rule:    {rule['kind']} {rule['match']!r} -> {rule['verdict']} ({rule['reason']})")
    click.echo(f"why:     {result['explanation']}")
