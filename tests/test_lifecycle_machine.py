"""A Hypothesis state machine over the pure parts of the action lifecycle:
the transition table, the store's operations (real SQLite, in memory) with
their audit chain, and the shim's acceptance of signed decisions.

Rules: propose (allowed or asked), approve, deny, expire, restart (with or
without a shutdown checkpoint), run (the shim
admits and the store records it), replay a used decision, run a mutated
action, use another session's decision, run something that was not approved.
After every step: no action ran without one matching approval (or policy
allow), at most one decision per action, nothing ran twice, and the audit
chain verifies with the hub key.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from agent_shim import Action, ActionDenied, Shim
from agent_shim.lifecycle import TRANSITIONS, can_transition
from agent_shim.protocol import Decision
from towerctl.audit.chain import AuditRow, CheckpointRow, verify
from towerctl.store import ops, ops_sessions
from towerctl.store.models import ActionRow, DecisionRow, OutcomeRow, SessionRow, StoreError
from towerctl.store.schema import migrate
from towerctl.store.tx import Tx

KEY = Ed25519PrivateKey.generate()
RAW = KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
SESSIONS = ("s-one", "s-two")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def sign(row: DecisionRow, session_id: str) -> Decision:
    d = Decision(
        decision_id=row.decision_id,
        action_id=row.action_id,
        digest=row.digest,
        verdict=row.verdict,  # type: ignore[arg-type]
        operator=row.operator,
        session_id=session_id,
        expires_at=row.decided_at + 60_000,
    )
    return d.model_copy(update={"signature": KEY.sign(d.signing_bytes()).hex()})


class Lifecycle(RuleBasedStateMachine):
    pending = Bundle("pending")
    approved = Bundle("approved")
    allowed = Bundle("allowed")
    used = Bundle("used")
    closed = Bundle("closed")

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="lifecycle-")
        self.path = os.path.join(self.dir, "tower.db")
        self._open()
        self.n = 0
        self.runs: dict[str, int] = {}
        self.shims = {
            sid: Shim("ws://127.0.0.1:9", "t", agent="a", env="prod", session_id=sid, hub_key=RAW)
            for sid in SESSIONS
        }
        for sid in SESSIONS:
            self._write(
                lambda tx, sid=sid: ops_sessions.session_started(
                    tx,
                    SessionRow(sid, "a", "prod", "h", None, "active", now_ms(), now_ms()),
                    resumed=False,
                    ts_ms=now_ms(),
                )
            )

    def _open(self) -> None:
        self.conn = sqlite3.connect(self.path, isolation_level=None)
        self.conn.execute("PRAGMA foreign_keys = ON")
        migrate(self.conn)
        self.tx = Tx(self.conn, KEY)
        self.tx.load_head()

    def teardown(self) -> None:
        self.conn.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(checkpoint=st.booleans())
    def restart(self, checkpoint: bool) -> None:
        """The hub stops (signing a checkpoint, or not: a crash) and starts
        again on the same file: the chain continues where it was."""
        if checkpoint:
            self._write(lambda tx: tx.checkpoint())
        head = self.tx.head
        self.conn.close()
        self._open()
        assert self.tx.head == head

    def _write(self, op: Any) -> Any:
        """One transaction per operation, rolled back (chain head too) on error."""
        head = self.tx.head
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            result = op(self.tx)
        except BaseException:
            self.conn.execute("ROLLBACK")
            self.tx.head = head
            raise
        self.conn.execute("COMMIT")
        return result

    def _state(self, action_id: str) -> str:
        return str(
            self.conn.execute("SELECT state FROM actions WHERE action_id = ?", (action_id,)).fetchone()[0]
        )

    def _propose(self, session_id: str, command: str, verdict: str) -> Action:
        self.n += 1
        action = Action(action_id=f"a{self.n}", kind="shell", command=command)
        state = "allowed" if verdict == "allow" else "pending"
        ts = now_ms()
        row = ActionRow(
            action_id=action.action_id,
            session_id=session_id,
            kind="shell",
            command=command,
            target=None,
            digest=action.digest(),
            risk="destructive" if verdict == "ask" else "read",
            reasons=(),
            policy_verdict=verdict,
            rule=None,
            state=state,
            body=action.text_and_digest()[0],
            created_at=ts,
            updated_at=ts,
            expires_at=ts + 300_000 if state == "pending" else None,
        )
        self._write(lambda tx: ops.action_proposed(tx, row, actor="agent:a", ts_ms=ts))
        return action

    def _execute(self, session_id: str, action: Action) -> None:
        """The store's half of running: started, then the outcome."""
        self._write(
            lambda tx: ops.action_state(
                tx, action.action_id, "running", actor="agent:a", ts_ms=now_ms(), data=None
            )
        )
        self.runs[action.action_id] = self.runs.get(action.action_id, 0) + 1
        outcome = OutcomeRow(action.action_id, "succeeded", 0, 1, None, "", now_ms())
        self._write(lambda tx: ops.action_finished(tx, outcome, actor="agent:a", ts_ms=now_ms()))

    def _decide(self, action: Action, verdict: str, who: str = "alice") -> DecisionRow:
        row = DecisionRow(
            f"d-{action.action_id}", action.action_id, verdict, who, "", action.digest(), now_ms()
        )
        self._write(lambda tx: ops.action_decided(tx, row, new_state=verdict, ts_ms=now_ms()))
        return row

    # ------------------------------------------------------------------ rules

    @rule(
        target=pending,
        session=st.sampled_from(SESSIONS),
        command=st.sampled_from(["rm -rf /srv", "kubectl delete ns x", "terraform apply"]),
    )
    def propose_ask(self, session: str, command: str) -> tuple[str, Action]:
        return session, self._propose(session, command, "ask")

    @rule(target=allowed, session=st.sampled_from(SESSIONS))
    def propose_allow(self, session: str) -> tuple[str, Action]:
        return session, self._propose(session, "ls -l", "allow")

    @rule(target=approved, item=consumes(pending))
    def approve(self, item: tuple[str, Action]) -> tuple[str, Action, Decision]:
        session, action = item
        row = self._decide(action, "approved")
        assert self._state(action.action_id) == "approved"
        return session, action, sign(row, session)

    @rule(target=closed, item=consumes(pending), verdict=st.sampled_from(["denied", "expired"]))
    def deny_or_expire(self, item: tuple[str, Action], verdict: str) -> tuple[str, Action]:
        session, action = item
        self._decide(action, verdict, "hub" if verdict == "expired" else "bob")
        return session, action

    @rule(item=closed)
    def closed_action_cannot_run_or_be_decided_again(self, item: tuple[str, Action]) -> None:
        _, action = item
        with pytest.raises(StoreError):
            self._write(
                lambda tx: ops.action_state(
                    tx, action.action_id, "running", actor="x", ts_ms=now_ms(), data=None
                )
            )
        with pytest.raises(StoreError):
            self._decide(action, "approved", "mallory")

    @rule(item=approved)
    def second_decision_is_refused(self, item: tuple[str, Action, Decision]) -> None:
        _, action, _ = item
        with pytest.raises(StoreError):
            self._decide(action, "denied", "bob")

    @rule(target=used, item=consumes(approved))
    def run_approved(self, item: tuple[str, Action, Decision]) -> tuple[str, Action, Decision]:
        session, action, decision = item
        ticket = self.shims[session]._start(action, action.digest(), decision)
        assert ticket.decision == decision
        self._execute(session, action)
        return session, action, decision

    @rule(item=allowed)
    def run_allowed(self, item: tuple[str, Action]) -> None:
        session, action = item
        if self._state(action.action_id) != "allowed":
            return  # already ran
        self.shims[session]._start(action, action.digest(), None)
        self._execute(session, action)

    @rule(item=used)
    def replay(self, item: tuple[str, Action, Decision]) -> None:
        session, action, decision = item
        with pytest.raises(ActionDenied):
            self.shims[session]._start(action, action.digest(), decision)

    @rule(item=approved, command=st.text(min_size=1, max_size=20))
    def mutate(self, item: tuple[str, Action, Decision], command: str) -> None:
        session, action, decision = item
        changed = action.model_copy(update={"command": action.command + " " + command})
        with pytest.raises(ActionDenied):
            self.shims[session]._start(changed, action.digest(), decision)
        with pytest.raises(ActionDenied):
            self.shims[session]._start(changed, changed.digest(), decision)

    @rule(item=approved)
    def other_session(self, item: tuple[str, Action, Decision]) -> None:
        session, action, decision = item
        other = next(s for s in SESSIONS if s != session)
        with pytest.raises(ActionDenied):
            self.shims[other]._start(action, action.digest(), decision)

    @rule(item=pending)
    def pending_cannot_run(self, item: tuple[str, Action]) -> None:
        _, action = item
        with pytest.raises(StoreError):
            self._write(
                lambda tx: ops.action_state(
                    tx, action.action_id, "running", actor="x", ts_ms=now_ms(), data=None
                )
            )

    # ------------------------------------------------------------- invariants

    @invariant()
    def executed_actions_were_approved_once_or_allowed(self) -> None:
        rows = self.conn.execute(
            "SELECT action_id, digest, policy_verdict FROM actions"
            " WHERE state IN ('running', 'succeeded', 'failed')"
        ).fetchall()
        for action_id, digest, verdict in rows:
            decisions = self.conn.execute(
                "SELECT verdict, digest FROM decisions WHERE action_id = ?", (action_id,)
            ).fetchall()
            if verdict == "allow":
                assert decisions == []
            else:
                assert decisions == [("approved", digest)]
            assert self.runs.get(action_id) == 1

    @invariant()
    def nothing_ran_twice(self) -> None:
        assert all(n == 1 for n in self.runs.values())

    @invariant()
    def states_follow_the_table(self) -> None:
        for (state,) in self.conn.execute("SELECT state FROM actions"):
            assert state in TRANSITIONS
        # every recorded transition of each action is legal (a proposal's
        # record names each state it moved the action through), and the log
        # ends each action in the state its row is in
        rows = self.conn.execute(
            "SELECT action_id, event, body ->> '$.data.states' FROM audit"
            " WHERE action_id IS NOT NULL ORDER BY seq"
        ).fetchall()
        last: dict[str, str] = {}
        for action_id, event, states in rows:
            new = event.split(".", 1)[1]
            if new == "proposed":
                last[action_id] = "proposed"
                steps = json.loads(states)
                assert steps, (action_id, "a proposal's record names the state it left the action in")
            else:
                steps = [new] if new in TRANSITIONS else []
            for step in steps:
                assert can_transition(last[action_id], step), (action_id, last[action_id], step)
                last[action_id] = step
        assert dict(self.conn.execute("SELECT action_id, state FROM actions").fetchall()) == last

    @invariant()
    def audit_chain_verifies(self) -> None:
        records = [
            AuditRow(*r)
            for r in self.conn.execute(
                "SELECT seq, ts_ms, event, actor, session_id, action_id, body, prev_hash, hash"
                " FROM audit ORDER BY seq"
            )
        ]
        cps = [
            CheckpointRow(*r)
            for r in self.conn.execute("SELECT seq, hash, ts_ms, key_id, signature FROM checkpoints")
        ]
        result = verify(records, cps, KEY.public_key())
        assert result.ok, result.problem


TestLifecycle = Lifecycle.TestCase
TestLifecycle.settings = settings(
    max_examples=40, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
