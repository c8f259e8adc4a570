"""The agent side of the hub: connections, proposals and the shim's own reports.

An agent says hello (starting or resuming a session), proposes actions, and
tells the hub when it refused a decision or paused itself. Every proposal is
judged again here by the hub's own policy: what operators see never rests on
the shim's word alone. What the agent later says about running an action
lives in :mod:`towerctl.hub.outcomes`.
"""

from __future__ import annotations

import functools
import time
import uuid
from typing import Final

from websockets.asyncio.server import ServerConnection

from agent_shim.agent_messages import AckState
from agent_shim.policy import RateWindow
from agent_shim.protocol import (
    PROTOCOL_VERSION,
    Ack,
    ActionInfo,
    AgentHello,
    DecisionRefused,
    PolicyUpdate,
    Propose,
    Welcome,
    encode,
)
from agent_shim.types import Verdict, strictest_verdict, worst_risk
from towerctl.auth import Principal
from towerctl.hub.registry import LiveSession, PendingAction, ProposedAction
from towerctl.hub.service_base import Refused, ServiceBase, now_ms
from towerctl.store import Conflict
from towerctl.store.models import ActionRow, SessionRow

_STATE_FOR: dict[str, AckState] = {"allow": "allowed", "ask": "pending", "deny": "denied"}
#: States of an approved action that has started: its approval has been used.
_USED: Final = frozenset({"running", "succeeded", "failed"})
#: Stands in for the action id in a cached ack (a valid Id).
_ACK_ID_MARK: Final = "ack-template-action-id"


@functools.lru_cache(maxsize=256)
def _ack_template(state: AckState, reason: str) -> tuple[str, str] | None:
    parts = encode(Ack(action_id=_ACK_ID_MARK, state=state, reason=reason)).split(_ACK_ID_MARK)
    return (parts[0], parts[1]) if len(parts) == 2 else None


def ack_json(action_id: str, state: AckState, reason: str, expires_at: int | None) -> str:
    """``encode(Ack(...))`` for an action id that already passed validation.

    Every proposal gets an ack, and most acks differ only in their id: building
    and dumping the model was ~3 % of the serve loop. Acks without a deadline are
    cut from one encoded per (state, reason) and joined around the id, which
    needs no JSON escaping (``Id``: letters, digits and ``_.:-``). A test holds
    the result byte-equal to encoding the model."""
    if expires_at is None:
        template = _ack_template(state, reason)
        if template is not None:
            return template[0] + action_id + template[1]
    return encode(Ack(action_id=action_id, state=state, reason=reason, expires_at=expires_at))


class AgentSide(ServiceBase):
    """Handles what an agent's shim sends, except the outcome of its actions."""

    async def agent_hello(
        self, conn: ServerConnection, principal: Principal, hello: AgentHello
    ) -> LiveSession:
        ts = now_ms()
        sid = hello.session_id or f"s-{uuid.uuid4().hex[:16]}"
        sess = self.reg.sessions.get(sid)
        resumed = sess is not None or (await self.store.session(sid)) is not None
        if sess is not None and (sess.env != hello.env or sess.agent != hello.agent):
            raise Refused("session_conflict", "session id belongs to another agent or environment")
        if sess is None:
            stored = await self.store.session(sid)
            if stored is not None and (stored.env != hello.env or stored.agent != hello.agent):
                raise Refused("session_conflict", "session id belongs to another agent or environment")
            status = stored.status if stored is not None else "active"
            sess = LiveSession(
                session_id=sid,
                agent=hello.agent,
                env=hello.env,
                host=hello.host,
                pid=hello.pid,
                status="killed" if status == "killed" else "active",
                started_at=stored.started_at if stored is not None else ts,
                last_seen=ts,
            )
            if status == "paused":
                sess.pause_reasons.add("operator")
            self.reg.sessions[sid] = sess
        old = sess.conn
        sess.conn = conn
        sess.token_id = principal.token_id
        sess.host, sess.pid, sess.last_seen = hello.host, hello.pid, ts
        version, pol = self.reg.policy(hello.env)
        sess.rate = RateWindow(pol.max_actions_per_minute)
        if hello.env in self.reg.frozen:
            sess.pause_reasons.add("freeze")
        if sess.status != "killed":
            sess.status = "paused" if sess.pause_reasons else "active"
        await self.store.session_started(
            SessionRow(
                session_id=sid,
                agent=hello.agent,
                env=hello.env,
                host=hello.host,
                pid=hello.pid,
                status=sess.status,
                started_at=sess.started_at,
                last_seen=ts,
                ended_at=None,
            ),
            resumed=resumed,
            ts_ms=ts,
        )
        if old is not None and old is not conn:
            await old.close(1000, "session resumed on a new connection")
        await conn.send(
            encode(
                Welcome(
                    protocol=PROTOCOL_VERSION,
                    session_id=sid,
                    policy=pol,
                    policy_version=version,
                    paused=sess.status == "paused",
                    killed=sess.status == "killed",
                    hub_key=self.store.public_key_raw.hex(),
                )
            )
        )
        self._announce_session(sess)
        return sess

    async def agent_gone(self, sess: LiveSession, conn: ServerConnection) -> None:
        """The agent's connection closed: a clean close ends the session, anything else
        leaves it ``disconnected`` so that it can resume (with its pending actions)."""
        if sess.conn is not conn:
            return  # already replaced by a newer connection
        sess.conn = None
        sess.last_seen = now_ms()
        graceful = conn.close_code == 1000 and not sess.pending
        if sess.status in ("active", "paused"):
            status = "ended" if graceful else "disconnected"
            await self.store.session_status(
                sess.session_id,
                status,
                actor=f"agent:{sess.agent}",
                reason="agent closed the session" if graceful else "connection lost",
                ts_ms=sess.last_seen,
            )
            if graceful:
                sess.status = "ended"
                self.reg.sessions.pop(sess.session_id, None)
                self.reg.forget_session(sess.session_id)
        self._announce_session(sess)

    async def propose(self, sess: LiveSession, msg: Propose) -> None:
        action = msg.action
        body, digest = action.text_and_digest()  # one encoding for the digest and the store
        if digest != msg.digest:
            raise Refused("digest_mismatch", "digest does not match the action")
        known = self.reg.live.get(action.action_id)
        if known is not None:
            if known.info.session_id != sess.session_id:
                raise Refused("conflict", "action id already used by another session")
            await self._answer_again(sess, action.action_id, known.info.digest, digest, known.state)
            return
        ts = now_ms()
        version, pol = self.reg.policy(sess.env)
        ev = self.reg.assess(pol, sess.env, action)
        if msg.verdict == "allow":
            # The shim has already run it: record the truth (the alarm is
            # raised below, once the record is durable).
            verdict: Verdict = "allow"
        elif sess.status == "killed":
            verdict = "deny"
        else:
            verdict = strictest_verdict(msg.verdict, ev.verdict)
        # What operators see comes from the hub's own judgement, never from
        # agent-supplied text, unless the shim was the stricter of the two.
        if sess.status == "killed" and verdict == "deny":
            explanation, rule = "session killed", None
        elif verdict == ev.verdict:
            explanation, rule = ev.explanation, ev.rule
        else:
            explanation, rule = f"shim: {msg.explanation}"[:4000], None
        risk = worst_risk(msg.risk, ev.risk)
        reasons = tuple(dict.fromkeys((*ev.reasons, *msg.reasons)))[:32]
        state = _STATE_FOR[verdict]
        expires_at = ts + pol.approval_timeout_s * 1000 if state == "pending" else None
        row = ActionRow(
            action_id=action.action_id,
            session_id=sess.session_id,
            kind=action.kind,
            command=action.command,
            target=action.target or None,
            digest=digest,
            risk=risk,
            reasons=reasons,
            policy_verdict=verdict,
            rule=rule.model_dump(mode="json") if rule is not None else None,
            state=state,
            body=body,
            created_at=ts,
            updated_at=ts,
            expires_at=expires_at,
        )
        # The shim runs an action it proposes with verdict allow at once and sends
        # no `started` for it: record allowed -> running in the same write.
        runs_now = state == "allowed" and msg.verdict == "allow"
        try:
            earlier = await self.store.action_proposed(
                row, actor=f"agent:{sess.agent}", ts_ms=ts, started=runs_now
            )
        except Conflict as exc:
            raise Refused("conflict", str(exc)) from None
        if earlier is not None:  # proposed before, already forgotten here
            await self._answer_again(sess, action.action_id, digest, digest, earlier)
            return
        if msg.verdict == "allow" and ev.verdict != "allow":
            self.alert(
                "critical",
                f"{sess.agent}@{sess.env} ran an action the hub's policy says {ev.verdict}: "
                f"{action.command[:200]} (shim policy out of date or tampered)",
                sess.session_id,
            )
            await self.send_agent(sess, encode(PolicyUpdate(env=sess.env, policy=pol, version=version)))
        proposed = ProposedAction(
            action=action,
            session_id=sess.session_id,
            agent=sess.agent,
            env=sess.env,
            digest=digest,
            risk=risk,
            reasons=row.reasons,
            policy_verdict=verdict,
            rule=rule,
            explanation=explanation,
            state=state,
            created_at=ts,
            expires_at=expires_at,
        )
        if self.metrics is not None:
            self.metrics.on_proposed(proposed)
        info: ActionInfo | ProposedAction = proposed
        if state == "pending":
            # An action that waits is shown to operators at once, and its model
            # is what decisions check: built now. Any other is built when asked for.
            info = proposed.action_info()
            self.reg.pending[action.action_id] = PendingAction(info)
            sess.pending.add(action.action_id)
            self._schedule_expiry(action.action_id, expires_at or ts)
        elif state == "allowed":
            sess.current_action = action.command
        if state != "denied":
            self.reg.track(info, "running" if runs_now else state)
        sess.last_seen = ts
        self._announce_action(info, routine=state == "allowed")
        await self.send_agent(sess, ack_json(action.action_id, state, explanation[:4000], expires_at))
        if sess.rate.hit(time.monotonic()) and "rate" not in sess.pause_reasons:
            await self._pause_for(
                sess, "rate", f"more than {pol.max_actions_per_minute} actions/min", by="hub"
            )
            self.alert("warning", f"{sess.agent}@{sess.env} paused: rate limit exceeded", sess.session_id)
        if state == "pending":
            self._announce_session(sess)  # the pending count changed: at once
        else:
            self._touch_session(sess)

    async def _answer_again(
        self, sess: LiveSession, action_id: str, stored_digest: str, digest: str, state: str
    ) -> None:
        """A re-sent proposal (after a reconnect): answer with what we already know."""
        if stored_digest != digest:
            raise Refused("conflict", "action id already used for a different action")
        decision = await self.store.decision(action_id)
        if decision is not None and decision.verdict == "approved" and state in _USED:
            await self._refuse_reuse(sess, action_id, decision.decision_id, state)
            # And a strike: each replay writes a record and alarms the operators,
            # so a client repeating one is disconnected after max_strikes.
            raise Refused("approval_used", f"action {action_id} already ran on its approval")
        if decision is not None:
            await self.send_agent(sess, encode(self.signed_decision(decision, sess.session_id)))
            return
        pending = self.reg.pending.get(action_id)
        ack_state = state if state in ("allowed", "denied", "pending", "cancelled") else "allowed"
        await self.send_agent(
            sess,
            encode(
                Ack(
                    action_id=action_id,
                    state=ack_state,  # type: ignore[arg-type]
                    expires_at=pending.info.expires_at if pending else None,
                )
            ),
        )

    async def _refuse_reuse(self, sess: LiveSession, action_id: str, decision_id: str, state: str) -> None:
        """An approved action proposed again after it started: its approval is never sent twice.

        A shim re-sends only proposals still waiting for their decision, and it
        runs an approval only after the decision arrives, so an action the hub
        knows as started cannot be waiting. What does propose it again is a
        replay: a shim restarted with the same session and action ids (its
        record of used decision ids died with it) or a client that is not a
        shim. Sending the stored decision would let it run the action a second
        time within the decision's TTL; it is denied, recorded and alarmed
        (the denial first, so that the shim stops waiting at once)."""
        await self.store.audit_note(
            "decision.reuse_refused",
            actor="hub",
            data={
                "decision_id": decision_id,
                "state": state,
                "code": "approval_used",
                "message": f"proposed again when it was already {state}",
            },
            ts_ms=now_ms(),
            session_id=sess.session_id,
            action_id=action_id,
        )
        self.alert(
            "critical",
            f"{sess.agent}@{sess.env} proposed action {action_id} again after its approval was used "
            f"(it is {state}): refused, a replay or a shim restarted with reused ids",
            sess.session_id,
        )
        reason = f"the approval of this action was already used (it is {state}); propose it as a new action"
        await self.send_agent(sess, encode(Ack(action_id=action_id, state="denied", reason=reason)))

    async def decision_refused(self, sess: LiveSession, msg: DecisionRefused) -> None:
        """The shim would not use a decision: record it and raise the alarm.

        Only for an action of this session: an agent cannot fill the log with
        refusals of things it never proposed (each such attempt is a strike).
        """
        row = await self.store.action(msg.action_id)
        if row is None or row.session_id != sess.session_id:
            raise Refused("unknown_action", "no such action in this session")
        await self.store.audit_note(
            "decision.refused_by_shim",
            actor=f"agent:{sess.agent}",
            data={"decision_id": msg.decision_id, "code": msg.code, "message": msg.message},
            ts_ms=now_ms(),
            session_id=sess.session_id,
            action_id=msg.action_id,
        )
        self.alert(
            "critical",
            f"{sess.agent}@{sess.env} refused decision {msg.decision_id or '?'} for action "
            f"{msg.action_id}: {msg.code} {msg.message}"[:4000],
            sess.session_id,
        )

    async def self_paused(self, sess: LiveSession, reason: str) -> None:
        await self._pause_for(sess, "rate", reason, by=f"agent:{sess.agent}", notify_agent=False)
        self.alert("warning", f"{sess.agent}@{sess.env} paused itself: {reason}", sess.session_id)
