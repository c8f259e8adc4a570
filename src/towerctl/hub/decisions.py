"""Decisions on pending actions: by an operator, or by the clock when none comes.

A decision is claimed synchronously in memory (``reg.deciding``) before the
first await, so of two operators deciding at once exactly one wins and the
other is told who did. It is recorded before the agent hears of it, and sent
signed, so the shim can check it came from this hub and is still fresh.
"""

from __future__ import annotations

import asyncio
import uuid

from agent_shim.gate import assess
from agent_shim.protocol import Decision, encode
from towerctl.auth import Principal
from towerctl.hub.registry import PendingAction
from towerctl.hub.service_base import Refused, ServiceBase, log, now_ms
from towerctl.store import AlreadyDecided, StoreError
from towerctl.store.models import DecisionRow

#: When recording an expiry fails (store locked or full), try again this much later.
EXPIRY_RETRY_MS = 500


class Decisions(ServiceBase):
    """Signs, records and delivers decisions, and expires actions left undecided."""

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
            again = assess(pol, pending.info.env, pending.info.action)
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
                # Every prod decision is pinned under a signed checkpoint at once
                # (not only every N records), in the same commit as the decision.
                await self.store.action_decided(
                    decision, new_state=verdict, ts_ms=ts, checkpoint=info.env == "prod"
                )
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
        finally:
            self.reg.deciding.pop(aid, None)
        sess = self.reg.sessions.get(info.session_id)
        updated = info.model_copy(
            update={"state": verdict, "decided_by": operator, "decision_reason": reason}
        )
        live = self.reg.live.get(aid)
        if live is not None:
            live.info = updated  # what its started/report events are built from: keep who decided
        self._announce_action(updated)
        if sess is not None:
            sess.pending.discard(aid)
            if verdict == "approved":
                sess.current_action = info.action.command
            await self.send_agent(sess, encode(self.signed_decision(decision, info.session_id)))
            self._announce_session(sess)
