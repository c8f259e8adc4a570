"""The control path end to end: real shim → real hub → real operator client."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from agent_shim import Action, ActionDenied, SessionKilled, Shim, new_action_id
from agent_shim.policy import EnvPolicy, Rule
from agent_shim.protocol import ActionEvent, SessionEvent
from towerctl.audit.verify import verify_database
from towerctl.operator import OperatorError

from .conftest import Tower, next_event, wait_for


def shell(command: str, **kw: str) -> Action:
    return Action(action_id=new_action_id(), kind="shell", command=command, **kw)


def proposal_states(db: Path, action_id: str) -> list[str]:
    """The states an action's proposal moved it through, from its audit record."""
    con = sqlite3.connect(db)
    try:
        (body,) = con.execute(
            "SELECT body FROM audit WHERE action_id = ? AND event = 'action.proposed'", (action_id,)
        ).fetchone()
    finally:
        con.close()
    states: list[str] = json.loads(body)["data"]["states"]
    return states


def audit_events(db: Path, action_id: str) -> list[str]:
    con = sqlite3.connect(db)
    try:
        return [
            r[0]
            for r in con.execute("SELECT event FROM audit WHERE action_id = ? ORDER BY seq", (action_id,))
        ]
    finally:
        con.close()


def decisions(db: Path, action_id: str) -> list[tuple[str, str]]:
    con = sqlite3.connect(db)
    try:
        return list(con.execute("SELECT verdict, operator FROM decisions WHERE action_id = ?", (action_id,)))
    finally:
        con.close()


async def test_allowed_action_runs_and_is_audited(tower: Tower, tmp_path: Path) -> None:
    async with tower.operator() as op, Shim(tower.url, tower.tokens["agent"], agent="a1", env="dev") as shim:
        assert shim.connected
        out = tmp_path / "out.txt"
        approved = await shim.run_shell(f"echo hello > {out}")
        assert approved.exit_code == 0
        assert out.read_text() == "hello\n"
        aid = approved.action.action_id
        await next_event(
            op,
            lambda m: (
                isinstance(m, ActionEvent)
                and m.action.action.action_id == aid
                and m.action.state == "succeeded"
            ),
        )
    assert audit_events(tower.db, aid) == ["action.proposed", "action.succeeded"]
    assert proposal_states(tower.db, aid) == ["allowed", "running"]
    await tower.hub.stop()
    result = verify_database(tower.db, tower.key)
    assert result.ok, result.problem
    await tower.hub.start()


async def test_destructive_prod_action_waits_for_approval(tower: Tower, tmp_path: Path) -> None:
    victim = tmp_path / "data"
    victim.mkdir()
    async with (
        tower.operator("alice") as op,
        Shim(tower.url, tower.tokens["agent"], agent="a1", env="prod") as shim,
    ):
        task = asyncio.create_task(shim.run_shell(f"rm -rf {victim}", reason="cleanup"))
        ev = await next_event(op, lambda m: isinstance(m, ActionEvent) and m.action.state == "pending")
        info = ev.action
        assert info.risk == "destructive"
        assert info.reasons and any("rm" in r for r in info.reasons)
        assert victim.exists() and not task.done()
        await op.decide(info.action.action_id, approve=True, reason="ok")
        approved = await asyncio.wait_for(task, 5)
        assert approved.decision is not None and approved.decision.operator == "alice"
        assert not victim.exists()
        done = await next_event(op, lambda m: isinstance(m, ActionEvent) and m.action.state == "succeeded")
        # The outcome still says who approved it (the console shows "by alice").
        assert done.action.decided_by == "alice" and done.action.decision_reason == "ok"
    assert proposal_states(tower.db, info.action.action_id) == ["pending"]
    assert audit_events(tower.db, info.action.action_id) == [
        "action.proposed",
        "action.approved",
        "action.running",
        "action.succeeded",
    ]


async def test_denied_with_reason_reaches_the_agent(tower: Tower, tmp_path: Path) -> None:
    victim = tmp_path / "keep"
    victim.mkdir()
    async with (
        tower.operator("bob") as op,
        Shim(tower.url, tower.tokens["agent"], agent="a1", env="prod") as shim,
    ):
        task = asyncio.create_task(shim.run_shell(f"rm -rf {victim}"))
        ev = await next_event(op, lambda m: isinstance(m, ActionEvent) and m.action.state == "pending")
        await op.decide(ev.action.action.action_id, approve=False, reason="use the runbook")
        with pytest.raises(ActionDenied) as err:
            await asyncio.wait_for(task, 5)
    assert err.value.reason == "use the runbook"
    assert err.value.by == "bob"
    assert victim.exists()


async def test_two_operators_first_decision_wins(tower: Tower) -> None:
    async with (
        tower.operator("alice") as alice,
        tower.operator("bob") as bob,
        Shim(tower.url, tower.tokens["agent"], agent="a1", env="prod") as shim,
    ):
        task = asyncio.create_task(shim.admit(shell("kubectl delete deployment web")))
        ev = await next_event(alice, lambda m: isinstance(m, ActionEvent) and m.action.state == "pending")
        aid = ev.action.action.action_id
        await wait_for(lambda: aid in bob.pending)
        results = await asyncio.gather(
            alice.decide(aid, approve=True),
            bob.decide(aid, approve=False, reason="no"),
            return_exceptions=True,
        )
        oks = [r for r in results if not isinstance(r, BaseException)]
        errs = [r for r in results if isinstance(r, OperatorError)]
        assert len(oks) == 1 and len(errs) == 1
        assert errs[0].code == "already_decided"
        winner = "alice" if not isinstance(results[0], BaseException) else "bob"
        assert winner in str(errs[0])
        # the loser's console learns who decided
        loser = bob if winner == "alice" else alice
        await wait_for(lambda: loser.actions[aid].decided_by == winner)
        if winner == "alice":
            await asyncio.wait_for(task, 5)
        else:
            with pytest.raises(ActionDenied):
                await asyncio.wait_for(task, 5)
    assert len(decisions(tower.db, aid)) == 1


async def test_pause_blocks_until_resume(tower: Tower) -> None:
    async with (
        tower.operator("alice") as op,
        Shim(tower.url, tower.tokens["agent"], agent="a1", env="dev") as shim,
    ):
        await op.control(shim.session_id, "pause", "investigating")
        await wait_for(lambda: shim.paused)
        task = asyncio.create_task(shim.admit(shell("ls -la")))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), 0.3)
        await op.control(shim.session_id, "resume")
        approved = await asyncio.wait_for(task, 5)
        assert approved.action.command == "ls -la"
        shim.report(approved)


async def test_kill_raises_session_killed(tower: Tower) -> None:
    async with (
        tower.operator("alice") as op,
        Shim(tower.url, tower.tokens["agent"], agent="a1", env="prod") as shim,
    ):
        waiting = asyncio.create_task(shim.admit(shell("terraform apply -auto-approve")))
        await next_event(op, lambda m: isinstance(m, ActionEvent) and m.action.state == "pending")
        await op.control(shim.session_id, "kill", "rogue")
        with pytest.raises(SessionKilled) as err:
            await asyncio.wait_for(waiting, 5)
        assert err.value.by == "alice"
        with pytest.raises(SessionKilled):
            await shim.admit(shell("ls"))
        await next_event(op, lambda m: isinstance(m, SessionEvent) and m.session.status == "killed")
        assert op.pending == {}


async def test_hub_down_ask_is_denied_after_timeout_and_nothing_runs(tower: Tower, tmp_path: Path) -> None:
    await tower.set_policy(
        "prod", EnvPolicy(read="allow", write="ask", destructive="ask", approval_timeout_s=1)
    )
    victim = tmp_path / "precious"
    victim.mkdir()
    async with Shim(tower.url, tower.tokens["agent"], agent="a1", env="prod") as shim:
        assert shim.policy.approval_timeout_s == 1
        await tower.hub.stop()
        await wait_for(lambda: not shim.connected)
        with pytest.raises(ActionDenied) as err:
            await asyncio.wait_for(shim.run_shell(f"rm -rf {victim}"), 10)
        assert "timeout" in err.value.reason
        assert victim.exists()
        # an allowed read still runs while the hub is away; its report is queued
        approved = await shim.run_shell("true")
        assert approved.exit_code == 0
        assert shim.pending_reports > 0
    await tower.hub.start()


async def test_agent_token_cannot_operate(tower: Tower) -> None:
    client = tower.operator("agent")
    with pytest.raises(OperatorError) as err:
        await client.connect()
    assert "403" in str(err.value)


async def test_viewer_cannot_approve(tower: Tower) -> None:
    async with (
        tower.operator("viewer") as viewer,
        Shim(tower.url, tower.tokens["agent"], agent="a1", env="prod") as shim,
    ):
        task = asyncio.create_task(shim.admit(shell("kubectl delete deployment api")))
        ev = await next_event(viewer, lambda m: isinstance(m, ActionEvent) and m.action.state == "pending")
        with pytest.raises(OperatorError) as err:
            await viewer.decide(ev.action.action.action_id, approve=True)
        assert err.value.code == "forbidden"
        assert not task.done()
        task.cancel()


async def test_agent_token_for_other_env_is_refused(tower: Tower) -> None:
    shim = Shim(tower.url, tower.tokens["agent_dev"], agent="a1", env="prod", connect_timeout=2)
    await shim.start()
    try:
        assert not shim.connected
        assert "not valid for environment" in shim.last_error
    finally:
        await shim.close()


async def test_policy_denies_cannot_be_approved(tower: Tower) -> None:
    async with (
        tower.operator("admin") as op,
        Shim(tower.url, tower.tokens["agent"], agent="a1", env="prod") as shim,
    ):
        task = asyncio.create_task(shim.admit(shell("helm uninstall payments")))
        ev = await next_event(op, lambda m: isinstance(m, ActionEvent) and m.action.state == "pending")
        strict = EnvPolicy(rules=(Rule(match="helm uninstall*", verdict="deny", reason="no uninstalls"),))
        await op.set_policy("prod", strict)
        await wait_for(lambda: shim.policy == strict)
        with pytest.raises(OperatorError) as err:
            await op.decide(ev.action.action.action_id, approve=True)
        assert err.value.code == "policy_denies"
        task.cancel()


async def test_policy_rule_denies_locally(tower: Tower) -> None:
    async with Shim(tower.url, tower.tokens["agent"], agent="a1", env="prod") as shim:
        with pytest.raises(ActionDenied) as err:
            await shim.admit(shell("cd infra && terraform destroy -auto-approve"))
        assert err.value.by == "policy"


async def test_shim_refuses_a_decision_for_another_digest(tower: Tower) -> None:
    from agent_shim.protocol import Decision

    async with Shim(tower.url, tower.tokens["agent"], agent="a1", env="dev") as shim:
        action = shell("ls")
        forged = Decision(
            decision_id="d-x",
            action_id=action.action_id,
            digest="0" * 64,
            verdict="approved",
            operator="mallory",
        )
        with pytest.raises(ActionDenied) as err:
            shim._start(action, action.digest(), forged)
        assert "digest" in err.value.reason
