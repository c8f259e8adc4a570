"""Operator control of sessions and environments: pause, resume, kill, freeze, policy.

A session may be paused for several reasons at once (an operator, a freeze of
its environment, its own rate limit); it resumes only when the last reason is
lifted, so unfreezing an environment does not resume a session an operator
paused. Each change is recorded before the agent and operators hear of it.
"""

from __future__ import annotations

from agent_shim.policy import EnvPolicy, RateWindow
from agent_shim.protocol import Control, FreezeEvent, PolicyEvent, PolicyInfo, PolicyUpdate, encode
from towerctl.auth import Principal
from towerctl.hub.registry import LiveSession
from towerctl.hub.service_base import Refused, ServiceBase, log, now_ms
from towerctl.store import StoreError


class SessionControl(ServiceBase):
    """Carries out operators' control requests on sessions and environments."""

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
