"""What the hub does with each message, independent of the socket plumbing.

Every state change goes to the store first (with its audit record, in one
transaction) and only then to agents and operators: nothing is announced
that is not durable. Decisions are claimed synchronously in memory before the
first await, so of two operators deciding at once exactly one wins and the
other is told who did.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from typing import TYPE_CHECKING, Literal

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from agent_shim.gate import judge
from agent_shim.policy import EnvPolicy, RateWindow
from agent_shim.protocol import (
    PROTOCOL_VERSION,
    Ack,
    ActionEvent,
    ActionInfo,
    AgentHello,
    Alert,
    Control,
    Decision,
    DecisionRefused,
    FreezeEvent,
    PolicyEvent,
    PolicyInfo,
    PolicyUpdate,
    Propose,
    Report,
    SessionEvent,
    Snapshot,
    Started,
    Welcome,
    encode,
)
from agent_shim.types import Verdict, strictest_verdict, worst_risk
from towerctl.auth import Principal
from towerctl.hub.fanout import Fanout
from towerctl.hub.registry import LIVE_LIMIT, LiveSession, PendingAction, Registry
from towerctl.store import AlreadyDecided, Conflict, InvalidTransition, NotFound, Store, StoreError
from towerctl.store.models import ActionRow, DecisionRow, OutcomeRow, SessionRow
from towerctl.store.ops import FINISHABLE

if TYPE_CHECKING:
    from towerctl.hub.metrics import HubMetrics

log = logging.getLogger("towerctl.hub")

_STATE_FOR = {"allow": "allowed", "ask": "pending", "deny": "denied"}


class Refused(Exception):
    """An operator request that cannot be carried out; ``code`` goes on the wire."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _row_to_info(row: ActionRow, sess: LiveSession | None) -> ActionInfo:
    from agent_shim.protocol import Action

    body = row.body
    return ActionInfo(
        action=Action.model_validate_json(json.dumps(body)),
        session_id=row.session_id,
        agent=sess.agent if sess else "unknown",
        env=sess.env if sess else "unknown",
        digest=row.digest,
        risk=row.risk,  # type: ignore[arg-type]
        reasons=tuple(row.reasons),
        policy_verdict=row.policy_verdict,  # type: ignore[arg-type]
        rule=None,
        explanation="",
        state=row.state,  # type: ignore[arg-type]
        created_at=row.created_at,
        expires_at=row.expires_at,
    )


#: How long a signed decision stays valid for the shim (from when it was made).
DEFAULT_DECISION_TTL_S = 120.0
#: Operators see a busy session's activity at most this often (status changes at once).
SESSION_COALESCE_S = 0.05
#: When recording an expiry fails (store locked or full), try again this much later.
EXPIRY_RETRY_MS = 500


class HubService:
    def __init__(self, store: Store, *, decision_ttl_s: float = DEFAULT_DECISION_TTL_S) -> None:
        self.store = store
        self.reg = Registry()
        self.fanout = Fanout()
        self.decision_ttl_ms = int(decision_ttl_s * 1000)
        #: Told of each new proposal and decision (``/metrics``); set by the Hub.
        self.metrics: HubMetrics | None = None
        self._dirty_sessions: set[str] = set()
        self._flush_handle: asyncio.TimerHandle | None = None

    def signed_decision(self, row: DecisionRow, session_id: str) -> Decision:
        """The wire form of a stored decision, signed by the hub key.

        ``expires_at`` is derived from ``decided_at``, and Ed25519 signatures
        are deterministic, so re-sending a stored decision after a restart
        yields the very same message (same id, same expiry, same signature).
        """
        unsigned = Decision(
            decision_id=row.decision_id,
            action_id=row.action_id,
            digest=row.digest,
            verdict=row.verdict,  # type: ignore[arg-type]
            operator=row.operator,
            reason=row.reason[:4000],
            session_id=session_id,
            expires_at=row.decided_at + self.decision_ttl_ms,
            key_id=self.store.key_id,
        )
        sig = self.store.sign_decision(unsigned.signing_bytes())
        return unsigned.model_copy(update={"signature": sig})

    # ------------------------------------------------------------ start-up

    async def load(self) -> None:
        """Rebuild the working set from the store (after a restart too)."""
        for env, (version, doc) in (await self.store.latest_policies()).items():
            self.reg.policies[env] = (version, EnvPolicy.model_validate_json(json.dumps(doc)))
        self.reg.frozen = set(await self.store.frozen_envs())
        for srow in await self.store.sessions(statuses={"active", "paused", "disconnected"}):
            sess = LiveSession(
                session_id=srow.session_id,
                agent=srow.agent,
                env=srow.env,
                host=srow.host,
                pid=srow.pid,
                status="disconnected" if srow.status == "active" else srow.status,  # type: ignore[arg-type]
                started_at=srow.started_at,
                last_seen=srow.last_seen,
            )
            if srow.status == "paused":
                sess.pause_reasons.add("operator")
            self.reg.sessions[sess.session_id] = sess
        # Actions that may still start or finish, for sessions that may come
        # back (a late report for any other is checked against the store).
        for arow in await self.store.actions(states={"allowed", "approved", "running"}, limit=20_000):
            owner = self.reg.sessions.get(arow.session_id)
            if owner is not None:
                self.reg.track(_row_to_info(arow, owner), arow.state)
        for arow in await self.store.actions(states={"pending"}, limit=LIVE_LIMIT):
            owner = self.reg.sessions.get(arow.session_id)
            info = _row_to_info(arow, owner)
            self.reg.track(info, "pending")
            self.reg.pending[arow.action_id] = PendingAction(info)
            if owner is not None:
                owner.pending.add(arow.action_id)
            self._schedule_expiry(arow.action_id, arow.expires_at or now_ms())

    def snapshot(self) -> Snapshot:
        now = time.monotonic()
        return Snapshot(
            sessions=tuple(s.info(s.rate.rate(now)) for s in self.reg.sessions.values()),
            pending=tuple(sorted((p.info for p in self.reg.pending.values()), key=lambda i: i.created_at)),
            recent=tuple(self.reg.recent)[-200:],
            policies=self.reg.policy_infos(),
            frozen=tuple(sorted(self.reg.frozen)),
            operators=self.fanout.names(),
            hub_time=now_ms(),
        )

    def snapshot_json(self) -> str:
        return encode(self.snapshot())

    # -------------------------------------------------------------- helpers

    def _announce_session(self, sess: LiveSession) -> None:
        self._dirty_sessions.discard(sess.session_id)
        if self.fanout.operators:
            self.fanout.send(encode(SessionEvent(session=sess.info(sess.rate.rate(time.monotonic())))))

    def _touch_session(self, sess: LiveSession) -> None:
        """A session's activity changed (current action, rate): operators hear
        of it within SESSION_COALESCE_S, once, however many actions it ran.
        Status changes go out at once through _announce_session."""
        if not self.fanout.operators:
            return
        self._dirty_sessions.add(sess.session_id)
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(
                SESSION_COALESCE_S, self._flush_sessions
            )

    def _flush_sessions(self) -> None:
        self._flush_handle = None
        dirty, self._dirty_sessions = self._dirty_sessions, set()
        for sid in dirty:
            sess = self.reg.sessions.get(sid)
            if sess is not None:
                self._announce_session(sess)

    def _announce_action(self, info: ActionInfo) -> None:
        self.reg.remember(info)
        if self.fanout.operators:
            self.fanout.send(encode(ActionEvent(action=info)))

    def alert(
        self, level: Literal["info", "warning", "critical"], message: str, session_id: str | None = None
    ) -> None:
        self.fanout.send(encode(Alert(level=level, message=message[:4000], session_id=session_id)))

    @staticmethod
    async def send_agent(sess: LiveSession, data: str) -> None:
        if sess.conn is None:
            return
        with contextlib.suppress(ConnectionClosed):
            await sess.conn.send(data)

    # --------------------------------------------------------------- agents

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
        digest = action.digest()
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
        hub = judge(pol, sess.env, action)
        ev = hub.evaluation
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
            body=action.model_dump(mode="json"),
            created_at=ts,
            updated_at=ts,
            expires_at=expires_at,
        )
        try:
            earlier = await self.store.action_proposed(row, actor=f"agent:{sess.agent}", ts_ms=ts)
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
        info = ActionInfo(
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
            state=state,  # type: ignore[arg-type]
            created_at=ts,
            expires_at=expires_at,
        )
        if self.metrics is not None:
            self.metrics.on_proposed(info)
        if state != "denied":
            self.reg.track(info, state)
        if state == "pending":
            self.reg.pending[action.action_id] = PendingAction(info)
            sess.pending.add(action.action_id)
            self._schedule_expiry(action.action_id, expires_at or ts)
        elif state == "allowed":
            sess.current_action = action.command
        sess.last_seen = ts
        self._announce_action(info)
        await self.send_agent(
            sess,
            encode(
                Ack(
                    action_id=action.action_id,
                    state=state,  # type: ignore[arg-type]
                    reason=explanation[:4000],
                    expires_at=expires_at,
                )
            ),
        )
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

    @staticmethod
    def _own(sess: LiveSession, session_id: str, digest: str, given: str, what: str) -> None:
        if session_id != sess.session_id:
            raise Refused("unknown_action", "no such action in this session")
        if digest != given:
            raise Refused("digest_mismatch", f"{what} digest differs from the proposed action")

    def started_queued(self, sess: LiveSession, msg: Started) -> asyncio.Future[None] | None:
        """``started`` for an action the hub has in memory: checked without a
        read and queued for the next commit, in order with this agent's other
        writes; the caller need not wait for the commit (nothing is sent back).
        None when the action is not in memory: use :meth:`started`."""
        live = self.reg.live.get(msg.action_id)
        if live is None:
            return None
        self._own(sess, live.info.session_id, live.info.digest, msg.digest, "started")
        if live.state in ("running", "succeeded", "failed"):
            return None  # a re-sent started (after a reconnect): started() answers it
        if live.state not in ("allowed", "approved"):
            raise Refused(
                "illegal_transition", f"action {msg.action_id} is {live.state}; it cannot become running"
            )
        fut = self.store.queue_action_state(
            msg.action_id, "running", actor=f"agent:{sess.agent}", ts_ms=now_ms()
        )
        live.state = "running"

        def committed(f: asyncio.Future[None]) -> None:
            if not f.cancelled() and f.exception() is None:
                sess.current_action = live.info.action.command
                self._touch_session(sess)

        fut.add_done_callback(committed)
        return fut

    async def started(self, sess: LiveSession, msg: Started) -> None:
        fut = self.started_queued(sess, msg)
        if fut is not None:
            try:
                await fut
            except (InvalidTransition, NotFound) as exc:
                raise Refused("illegal_transition", str(exc)) from None
            return
        row = await self.store.action(msg.action_id)
        if row is None:
            raise Refused("unknown_action", "no such action in this session")
        self._own(sess, row.session_id, row.digest, msg.digest, "started")
        if row.state in ("running", "succeeded", "failed"):
            return  # a re-sent started (after a reconnect)
        try:
            await self.store.action_state(
                msg.action_id, "running", actor=f"agent:{sess.agent}", ts_ms=now_ms()
            )
        except (InvalidTransition, NotFound) as exc:
            raise Refused("illegal_transition", str(exc)) from None
        sess.current_action = row.command
        self._touch_session(sess)

    def report_queued(self, sess: LiveSession, msg: Report) -> asyncio.Future[None] | None:
        """``report`` for an action the hub has in memory (see :meth:`started_queued`)."""
        live = self.reg.live.get(msg.action_id)
        if live is None:
            return None
        self._own(sess, live.info.session_id, live.info.digest, msg.digest, "report")
        if live.state in ("succeeded", "failed"):
            return None
        if live.state not in FINISHABLE:
            raise Refused(
                "illegal_transition", f"action {msg.action_id} is {live.state}; it cannot have {msg.status}"
            )
        fut = self.store.queue_action_finished(
            self._outcome(msg), actor=f"agent:{sess.agent}", ts_ms=now_ms()
        )
        live.state = msg.status

        def committed(f: asyncio.Future[None]) -> None:
            if self.reg.live.get(msg.action_id) is live:
                del self.reg.live[msg.action_id]
            if not f.cancelled() and f.exception() is None:
                self._finished(sess, live.info, msg)

        fut.add_done_callback(committed)
        return fut

    async def report(self, sess: LiveSession, msg: Report) -> None:
        fut = self.report_queued(sess, msg)
        if fut is not None:
            try:
                await fut
            except (InvalidTransition, NotFound) as exc:
                raise Refused("illegal_transition", str(exc)) from None
            return
        row = await self.store.action(msg.action_id)
        if row is None:
            raise Refused("unknown_action", "no such action in this session")
        self._own(sess, row.session_id, row.digest, msg.digest, "report")
        if row.state in ("succeeded", "failed"):
            return  # a re-sent report after a reconnect
        try:
            await self.store.action_finished(self._outcome(msg), actor=f"agent:{sess.agent}", ts_ms=now_ms())
        except (InvalidTransition, NotFound) as exc:
            raise Refused("illegal_transition", str(exc)) from None
        self._finished(sess, _row_to_info(row, sess), msg)

    @staticmethod
    def _outcome(msg: Report) -> OutcomeRow:
        return OutcomeRow(
            action_id=msg.action_id,
            status=msg.status,
            exit_code=msg.exit_code,
            duration_ms=msg.duration_ms,
            output_digest=msg.output_digest,
            output_tail=msg.output_tail if not msg.error else f"{msg.output_tail}\n{msg.error}"[-4000:],
            reported_at=now_ms(),
        )

    def _finished(self, sess: LiveSession, info: ActionInfo, msg: Report) -> None:
        if sess.current_action == info.action.command:
            sess.current_action = ""
        self._announce_action(
            info.model_copy(
                update={
                    "state": msg.status,
                    "exit_code": msg.exit_code,
                    "duration_ms": msg.duration_ms,
                    "output_tail": msg.output_tail[-2000:],
                }
            )
        )
        self._touch_session(sess)

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

    # ------------------------------------------------------------ decisions

    def _schedule_expiry(self, action_id: str, expires_at: int) -> None:
        loop = asyncio.get_running_loop()
        delay = max(0.0, (expires_at - now_ms()) / 1000)
        pending = self.reg.pending.get(action_id)
        if pending is None:
            return
        pending.timer = loop.call_later(
            delay, lambda: loop.create_task(self._expire(action_id), name=f"expire-{action_id}")
        )

    async def _expire(self, action_id: str) -> None:
        pending = self.reg.pending.get(action_id)
        if pending is None or action_id in self.reg.deciding:
            return
        timeout_s = ((pending.info.expires_at or 0) - pending.info.created_at) // 1000
        try:
            await self._decide(pending, "expired", "hub", f"no decision within {timeout_s}s")
        except Refused:
            return  # an operator decided in the meantime
        except StoreError as exc:
            # Not recorded (database locked or full): it stays pending here, where
            # decide() refuses it as expired, and the expiry is tried again.
            log.error("could not record the expiry of %s (%s); retrying", action_id, exc)
            self._schedule_expiry(action_id, now_ms() + EXPIRY_RETRY_MS)

    async def decide(
        self, principal: Principal, action_id: str, digest: str, approve: bool, reason: str
    ) -> None:
        if not principal.at_least("approver"):
            raise Refused("forbidden", f"role {principal.role} may not decide actions")
        pending = self.reg.pending.get(action_id)
        if pending is None:
            by = self.reg.deciding.get(action_id)
            if by is not None:
                raise Refused("already_decided", f"already being decided by {by}")
            decision = await self.store.decision(action_id)
            if decision is not None:
                raise Refused("already_decided", f"already {decision.verdict} by {decision.operator}")
            raise Refused("not_pending", f"no pending action {action_id}")
        if digest != pending.info.digest:
            raise Refused("digest_mismatch", "the action differs from the one you were shown")
        if pending.info.expires_at is not None and now_ms() > pending.info.expires_at:
            raise Refused("expired", "the approval window has closed; the action is being expired")
        if not principal.may_use_env(pending.info.env):
            raise Refused("forbidden", f"token not valid for environment {pending.info.env}")
        if approve:
            _, pol = self.reg.policy(pending.info.env)
            again = judge(pol, pending.info.env, pending.info.action)
            if again.verdict == "deny":
                raise Refused("policy_denies", f"policy denies this action: {again.explanation}")
        await self._decide(pending, "approved" if approve else "denied", principal.name, reason)

    async def _decide(self, pending: PendingAction, verdict: str, operator: str, reason: str) -> None:
        info = pending.info
        aid = info.action.action_id
        if aid in self.reg.deciding:
            raise Refused("already_decided", f"already being decided by {self.reg.deciding[aid]}")
        self.reg.deciding[aid] = operator
        try:
            ts = now_ms()
            decision = DecisionRow(
                decision_id=f"d-{uuid.uuid4().hex}",
                action_id=aid,
                verdict=verdict,
                operator=operator,
                reason=reason,
                digest=info.digest,
                decided_at=ts,
            )
            try:
                await self.store.action_decided(decision, new_state=verdict, ts_ms=ts)
            except AlreadyDecided as exc:
                self.reg.pending.pop(aid, None)
                raise Refused(
                    "already_decided", f"already {exc.existing.verdict} by {exc.existing.operator}"
                ) from None
            if pending.timer is not None:
                pending.timer.cancel()
            self.reg.pending.pop(aid, None)
            live = self.reg.live.get(aid)
            if live is not None:
                if verdict == "approved":
                    live.state = verdict
                else:
                    del self.reg.live[aid]
            if self.metrics is not None:
                self.metrics.on_decided(info, verdict, ts)
            if info.env == "prod":
                # Pin every prod decision under a signed checkpoint at once,
                # not only every N records.
                await self.store.checkpoint()
        finally:
            self.reg.deciding.pop(aid, None)
        sess = self.reg.sessions.get(info.session_id)
        updated = info.model_copy(
            update={"state": verdict, "decided_by": operator, "decision_reason": reason}
        )
        self._announce_action(updated)
        if sess is not None:
            sess.pending.discard(aid)
            if verdict == "approved":
                sess.current_action = info.action.command
            await self.send_agent(sess, encode(self.signed_decision(decision, info.session_id)))
            self._announce_session(sess)

    # ------------------------------------------------------ session control

    def _session(self, session_id: str) -> LiveSession:
        sess = self.reg.sessions.get(session_id)
        if sess is None:
            matches = [s for sid, s in self.reg.sessions.items() if sid.startswith(session_id)]
            if len(matches) != 1:
                raise Refused("not_found", f"no session {session_id}")
            sess = matches[0]
        return sess

    async def _pause_for(
        self, sess: LiveSession, why: str, reason: str, *, by: str, notify_agent: bool = True
    ) -> None:
        sess.pause_reasons.add(why)
        if sess.status in ("killed",):
            return
        if sess.status != "paused":
            sess.status = "paused"
            await self.store.session_status(
                sess.session_id, "paused", actor=by, reason=reason, ts_ms=now_ms()
            )
        if notify_agent:
            await self.send_agent(sess, encode(Control(op="pause", by=by, reason=reason)))
        self._announce_session(sess)

    async def _resume(self, sess: LiveSession, *, by: str, reason: str, only: str | None = None) -> None:
        if only is None:
            sess.pause_reasons.clear()
        else:
            sess.pause_reasons.discard(only)
        if sess.pause_reasons or sess.status != "paused":
            return
        sess.status = "active"
        sess.rate.reset()
        await self.store.session_status(sess.session_id, "resumed", actor=by, reason=reason, ts_ms=now_ms())
        await self.send_agent(sess, encode(Control(op="resume", by=by, reason=reason)))
        self._announce_session(sess)

    async def control(self, principal: Principal, session_id: str, op: str, reason: str) -> str:
        if not principal.at_least("approver"):
            raise Refused("forbidden", f"role {principal.role} may not {op} sessions")
        sess = self._session(session_id)
        if not principal.may_use_env(sess.env):
            raise Refused("forbidden", f"token not valid for environment {sess.env}")
        if sess.status == "killed":
            raise Refused("killed", "session already killed")
        if op == "pause":
            await self._pause_for(sess, "operator", reason, by=principal.name)
        elif op == "resume":
            if sess.env in self.reg.frozen:
                raise Refused("frozen", f"environment {sess.env} is frozen; unfreeze it first")
            await self._resume(sess, by=principal.name, reason=reason)
        else:
            await self._kill(sess, by=principal.name, reason=reason)
        return sess.session_id

    async def _kill(self, sess: LiveSession, *, by: str, reason: str) -> None:
        ts = now_ms()
        sess.status = "killed"
        await self.store.session_status(sess.session_id, "killed", actor=by, reason=reason, ts_ms=ts)
        for aid in list(sess.pending):
            pending = self.reg.pending.pop(aid, None)
            if pending is None:
                continue
            if pending.timer is not None:
                pending.timer.cancel()
            self.reg.live.pop(aid, None)
            try:
                await self.store.action_state(
                    aid, "cancelled", actor=by, ts_ms=ts, data={"reason": "session killed"}
                )
            except StoreError as exc:
                log.error("cancel %s failed: %s", aid, exc)
            self._announce_action(pending.info.model_copy(update={"state": "cancelled", "decided_by": by}))
        sess.pending.clear()
        await self.send_agent(sess, encode(Control(op="kill", by=by, reason=reason or "killed by operator")))
        self._announce_session(sess)

    async def freeze(self, principal: Principal, env: str, frozen: bool, reason: str) -> None:
        if not principal.at_least("approver"):
            raise Refused("forbidden", f"role {principal.role} may not freeze environments")
        if not principal.may_use_env(env):
            raise Refused("forbidden", f"token not valid for environment {env}")
        if (env in self.reg.frozen) == frozen:
            return
        await self.store.env_frozen(env, frozen, actor=principal.name, ts_ms=now_ms())
        if frozen:
            self.reg.frozen.add(env)
        else:
            self.reg.frozen.discard(env)
        for sess in self.reg.sessions_in(env):
            if sess.status == "killed":
                continue
            if frozen:
                await self._pause_for(sess, "freeze", reason or f"{env} frozen", by=principal.name)
            else:
                await self._resume(sess, by=principal.name, reason=f"{env} unfrozen", only="freeze")
        self.fanout.send(encode(FreezeEvent(env=env, frozen=frozen, by=principal.name)))

    async def set_policy(self, principal: Principal, env: str, policy: EnvPolicy) -> int:
        if not principal.at_least("admin"):
            raise Refused("forbidden", "only admins may change policy")
        version = await self.apply_policy(env, policy, actor=principal.name)
        return version

    async def apply_policy(self, env: str, policy: EnvPolicy, *, actor: str) -> int:
        version = await self.store.policy_saved(
            env, policy.model_dump(mode="json"), actor=actor, ts_ms=now_ms()
        )
        self.reg.policies[env] = (version, policy)
        update = encode(PolicyUpdate(env=env, policy=policy, version=version))
        for sess in self.reg.sessions_in(env):
            sess.rate = RateWindow(policy.max_actions_per_minute)
            await self.send_agent(sess, update)
        self.fanout.send(
            encode(PolicyEvent(env=env, info=PolicyInfo(version=version, policy=policy), by=actor))
        )
        return version
