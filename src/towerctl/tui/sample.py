"""A fixed, realistic fleet for running the console without a hub.

Snapshot tests and screenshots need the same pixels on every run: this state
never changes, and with :class:`~towerctl.tui.render.FixedClock` at
:data:`SAMPLE_NOW` countdowns and uptimes are frozen too. Usage::

    TowerApp(url, "", initial_snapshot=sample_snapshot(), operator=("alice", "admin"),
             clock=FixedClock(SAMPLE_NOW))
"""

from __future__ import annotations

from typing import Final

from agent_shim.policy import default_policies
from agent_shim.protocol import Action, ActionInfo, PolicyInfo, SessionInfo, Snapshot
from agent_shim.types import Kind, Risk, Verdict

#: 2026-09-21 12:53:20 UTC: any fixed instant works; this one reads well.
SAMPLE_NOW: Final = 1_790_000_000_000

_PROD_RULE = default_policies().environments["prod"].rules[0]


def _session(
    sid: str,
    agent: str,
    env: str,
    host: str,
    *,
    status: str = "active",
    current: str = "",
    rate: int = 0,
    age_s: int = 600,
    connected: bool = True,
) -> SessionInfo:
    return SessionInfo.model_validate(
        {
            "session_id": sid,
            "agent": agent,
            "env": env,
            "host": host,
            "pid": 4242,
            "status": status,
            "connected": connected,
            "started_at": SAMPLE_NOW - age_s * 1000,
            "last_seen": SAMPLE_NOW - 1000,
            "current_action": current,
            "rate": rate,
        }
    )


def sample_action(
    aid: str,
    sid: str,
    agent: str,
    env: str,
    kind: Kind,
    command: str,
    risk: Risk,
    state: str,
    *,
    verdict: Verdict = "ask",
    age_s: int = 30,
    expires_s: int | None = None,
    reasons: tuple[str, ...] = (),
    reason: str = "",
    rollback: str = "",
    dry_run: str = "",
    target: str = "",
    decided_by: str = "",
    decision_reason: str = "",
    exit_code: int | None = None,
    duration_ms: int | None = None,
) -> ActionInfo:
    """One action as the hub would report it (``state`` is any ActionState)."""
    act = Action(
        action_id=aid,
        kind=kind,
        command=command,
        target=target,
        reason=reason,
        rollback=rollback,
        dry_run=dry_run,
    )
    return ActionInfo.model_validate(
        {
            "action": act,
            "session_id": sid,
            "agent": agent,
            "env": env,
            "digest": act.digest(),
            "risk": risk,
            "reasons": reasons,
            "policy_verdict": verdict,
            "rule": _PROD_RULE if verdict == "deny" and env == "prod" else None,
            "state": state,
            "created_at": SAMPLE_NOW - age_s * 1000,
            "expires_at": None if expires_s is None else SAMPLE_NOW + expires_s * 1000,
            "decided_by": decided_by,
            "decision_reason": decision_reason,
            "exit_code": exit_code,
            "duration_ms": duration_ms,
        }
    )


def sample_snapshot(*, extra_pending: tuple[ActionInfo, ...] = ()) -> Snapshot:
    """Five sessions across prod, staging (frozen) and dev, two approvals waiting."""
    policies = default_policies().environments
    sessions = (
        _session("s-prod-1", "deploy-bot", "prod", "ci-runner-7", current="kubectl delete deployment web",
                 rate=4, age_s=3725),
        _session("s-prod-2", "db-migrator", "prod", "db-admin-1", status="paused", age_s=900),
        _session("s-stg-1", "refactor-agent", "staging", "dev-vm-3", status="paused", current="pytest -q",
                 rate=12, age_s=420),
        _session("s-dev-1", "claude-code", "dev", "laptop-ana", current="git status", rate=30, age_s=75),
        _session("s-dev-2", "codex", "dev", "laptop-raj", status="killed", connected=False, age_s=5000),
    )
    pending = (
        sample_action(
            "a-101", "s-prod-1", "deploy-bot", "prod", "k8s", "kubectl delete deployment web -n shop",
            "destructive", "pending", age_s=95, expires_s=205,
            reasons=("kubectl delete removes cluster resources",),
            reason="web was replaced by web-v2 yesterday; the old deployment still holds 6 replicas",
            rollback="kubectl apply -f k8s/web.yaml", target="prod-eu-1/shop",
            dry_run='deployment.apps "web" deleted (server dry run)\nreplicaset.apps "web-7d9f" deleted',
        ),
        sample_action(
            "a-102", "s-prod-2", "db-migrator", "prod", "sql", "ALTER TABLE orders DROP COLUMN legacy_ref;",
            "destructive", "pending", age_s=40, expires_s=260, reasons=("DROP COLUMN destroys data",),
            reason="column unused since v42", target="orders-db.prod",
        ),
        *extra_pending,
    )
    recent = (
        sample_action("a-090", "s-prod-1", "deploy-bot", "prod", "shell", "kubectl get pods -n shop", "read",
                      "succeeded", verdict="allow", age_s=300, exit_code=0, duration_ms=820),
        sample_action("a-091", "s-prod-1", "deploy-bot", "prod", "shell", "terraform destroy -auto-approve",
                      "destructive", "denied", verdict="deny", age_s=250, decided_by="policy",
                      decision_reason="prod infrastructure is never destroyed by an agent"),
        sample_action("a-092", "s-stg-1", "refactor-agent", "staging", "shell", "rm -rf build/",
                      "destructive", "succeeded", age_s=200, decided_by="alice", decision_reason="fine",
                      exit_code=0, duration_ms=120),
        sample_action("a-093", "s-dev-1", "claude-code", "dev", "shell", "git push --force origin main",
                      "destructive", "denied", age_s=100, decided_by="bob",
                      decision_reason="no force pushes to main"),
    )
    return Snapshot(
        sessions=sessions,
        pending=pending,
        recent=recent,
        policies={env: PolicyInfo(version=n, policy=pol) for n, (env, pol) in enumerate(policies.items(), 1)},
        frozen=("staging",),
        operators=("alice", "bob", "carol"),
        hub_time=SAMPLE_NOW,
    )
