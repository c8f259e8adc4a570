"""The operator and admin commands a script would run, against a real `towerctl serve`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from agent_shim import Action, ActionDenied, SessionKilled, Shim, new_action_id
from agent_shim.protocol import SessionEvent

from .conftest import next_event, wait_for
from .test_cli_e2e import Served, served, towerctl

__all__ = ["served"]  # the fixture, re-exported for pytest


def agent_token(s: Served) -> str:
    return (s.home / "tokens" / "agent.token").read_text().strip()


async def test_sessions_pause_resume_kill_from_the_cli(served: Served) -> None:
    async with (
        served.operator() as op,
        Shim(served.url, agent_token(served), agent="cli-a", env="dev") as shim,
    ):
        await wait_for(lambda: shim.session_id in op.sessions)
        code, out, err = await towerctl(served.home, "sessions", "--json")
        assert code == 0, err
        rows = {r["session_id"]: r for r in json.loads(out)}
        assert rows[shim.session_id]["agent"] == "cli-a" and rows[shim.session_id]["connected"]

        code, _, err = await towerctl(served.home, "pause", shim.session_id[:8], "--reason", "look")
        assert code == 0, err
        await wait_for(lambda: shim.paused)
        code, _, err = await towerctl(served.home, "resume", shim.session_id)
        assert code == 0, err
        await wait_for(lambda: not shim.paused)

        code, _, err = await towerctl(served.home, "kill", shim.session_id, "--reason", "enough")
        assert code == 0, err
        await next_event(op, lambda m: isinstance(m, SessionEvent) and m.session.status == "killed")
        try:
            await shim.admit(Action(action_id=new_action_id(), kind="shell", command="ls"))
        except SessionKilled as exc:
            assert exc.reason == "enough"
        else:
            raise AssertionError("killed session still admits actions")
        code, _, err = await towerctl(served.home, "resume", shim.session_id)
        assert code == 1 and "killed" in err


async def test_freeze_pauses_the_environment(served: Served) -> None:
    async with Shim(served.url, agent_token(served), agent="f", env="staging") as shim:
        code, out, err = await towerctl(served.home, "freeze", "staging", "--reason", "incident 42")
        assert code == 0 and out == "staging: frozen\n", err
        await wait_for(lambda: shim.paused)
        code, out, err = await towerctl(served.home, "unfreeze", "staging")
        assert code == 0 and out == "staging: unfrozen\n", err
        await wait_for(lambda: not shim.paused)


async def test_policy_apply_is_pushed_and_shown(served: Served, tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(
        '[environments.dev]\nread = "allow"\nwrite = "allow"\ndestructive = "deny"\n'
        'approval_timeout = "1m"\n\n[[environments.dev.rules]]\nkind = "shell"\n'
        'match = "curl *"\nverdict = "deny"\nreason = "no network from dev agents"\n'
    )
    async with Shim(served.url, agent_token(served), agent="p", env="dev") as shim:
        code, out, err = await towerctl(served.home, "policy", "apply", str(policy))
        assert code == 0, err
        assert "dev: version 1" in out
        await wait_for(lambda: shim.policy.destructive == "deny")
        try:
            await shim.admit(
                Action(action_id=new_action_id(), kind="shell", command="curl https://example.com")
            )
        except ActionDenied as exc:
            assert exc.reason == "no network from dev agents"
        else:
            raise AssertionError("policy rule not enforced by the shim")
    code, out, err = await towerctl(served.home, "policy", "show", "--env", "dev")
    assert code == 0, err
    assert 'destructive = "deny"' in out and "no network from dev agents" in out
    bad = tmp_path / "bad.toml"
    bad.write_text('[environments.dev]\nreed = "allow"\n')
    code, _, err = await towerctl(served.home, "policy", "apply", str(bad))
    assert code == 2 and "reed" in err


async def test_tokens_and_audit_commands(served: Served) -> None:
    db = str(served.home / "tower.db")
    code, out, err = await towerctl(
        served.home, "token", "create", "--role", "viewer", "--name", "dash", "--db", db
    )
    assert code == 0, err
    viewer = out.strip()
    assert viewer.startswith("twr_")
    code, out, err = await towerctl(served.home, "token", "list", "--json", "--db", db)
    assert code == 0, err
    tokens = json.loads(out)
    assert any(t["name"] == "dash" for t in tokens), tokens
    assert viewer not in out  # never printed again
    tid = next(t["id"] for t in tokens if t["name"] == "dash")
    code, out, err = await towerctl(served.home, "sessions", "--token", viewer)
    assert code == 0, err
    code, _, err = await towerctl(served.home, "token", "revoke", tid, "--db", db)
    assert code == 0, err
    code, _, err = await towerctl(served.home, "sessions", "--token", viewer)
    assert code == 2 and "401" in err

    code, out, err = await towerctl(served.home, "exec", "--env", "dev", "--", "true")
    assert code == 0, err
    code, out, _ = await towerctl(served.home, "audit", "export", "--db", db)
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    proposed = next(r for r in records if r["event"] == "action.proposed")
    code, out, err = await towerctl(served.home, "audit", "show", proposed["action_id"], "--db", db)
    assert code == 0, err
    assert "action.proposed" in out and "action.succeeded" in out
    # The proposal's line says where it left the action, and what it was.
    proposal_line = next(line for line in out.splitlines() if "action.proposed" in line)
    assert proposal_line.endswith("→ allowed → running · true"), proposal_line
    outcome_line = next(line for line in out.splitlines() if "action.succeeded" in line)
    assert outcome_line.endswith("exit 0"), outcome_line
    # Its end names it too (what `pending` and the console show), matched literally.
    code, by_end, err = await towerctl(served.home, "audit", "show", proposed["action_id"][-12:], "--db", db)
    assert code == 0, err
    assert by_end == out
    code, _, err = await towerctl(served.home, "audit", "show", "%", "--db", db)
    assert code != 0 and "no audit records" in err


async def test_operator_commands_fail_clearly_without_a_hub(tmp_path: Path) -> None:
    code, _, err = await towerctl(tmp_path, "pending", "--url", "ws://127.0.0.1:9", "--token", "x")
    assert code == 2
    assert "cannot reach the hub" in err


async def test_exec_without_token_is_denied(tmp_path: Path) -> None:
    code, _, err = await asyncio.wait_for(towerctl(tmp_path, "exec", "--", "true"), 30)
    assert code == 126 and "no agent token" in err


async def test_policy_apply_of_a_file_with_no_environment_fails(tmp_path: Path) -> None:
    """An emptied file would change nothing: it is an error, not a silent success."""
    empty = tmp_path / "policy.toml"
    empty.write_text("# prod's rules: to be written\n")
    code, out, err = await towerctl(tmp_path / "home", "policy", "apply", str(empty))
    assert code == 2 and out == ""
    assert "defines no [environments.NAME] table: nothing to apply" in err
