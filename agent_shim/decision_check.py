"""Whether the shim may run an action: the binding and approval checks.

The shim is the enforcement point, so it trusts nothing the hub connection
hands it: an approval is used only if the pinned (or first-seen) hub key
signed it, for this session, this action and this digest, before its expiry,
and only once; and what is about to run must be exactly what was judged.
Every refusal is reported to the hub, which audits it.
"""

from __future__ import annotations

import contextlib

from agent_shim import ed25519
from agent_shim.approved import Approved
from agent_shim.errors import ActionDenied, SessionKilled
from agent_shim.outbox import ShimOutbox
from agent_shim.protocol import Action, Decision, DecisionRefused, Started, encode
from agent_shim.shim_base import _now_ms, log


class DecisionAcceptance(ShimOutbox):
    """The hub key the shim trusts and the checks a decision must pass."""

    @property
    def hub_key(self) -> bytes | None:
        """The key approvals are checked against: the pin, else the TOFU key."""
        return self._pinned_key if self._pinned_key is not None else self._tofu_key

    def _learn_key(self, announced: str) -> None:
        if not announced:
            if self.hub_key is None:
                log.warning("towerctl shim: the hub announced no signing key; approvals will be refused")
            return
        key = bytes.fromhex(announced)
        if self._pinned_key is not None:
            if key != self._pinned_key:
                self.last_error = (
                    f"hub announced key {ed25519.key_id(key)} but key {ed25519.key_id(self._pinned_key)} "
                    "is pinned; its approvals will be refused"
                )
                log.error("towerctl shim: %s", self.last_error)
            return
        if self._tofu_key is None:
            self._tofu_key = key
            log.warning(
                "towerctl shim: no hub key pinned (TOWER_HUB_KEY); trusting key %s announced by the hub "
                "on first use",
                ed25519.key_id(key),
            )
        elif key != self._tofu_key:
            self.last_error = (
                f"hub key changed from {ed25519.key_id(self._tofu_key)} to {ed25519.key_id(key)}; "
                "keeping the first one, approvals signed by the new key will be refused"
            )
            log.error("towerctl shim: %s", self.last_error)

    def _start(self, action: Action, digest: str, decision: Decision | None) -> Approved:
        # The binding check: what we are about to run must be what was judged and approved.
        actual = action.digest()
        if actual != digest:
            if decision is not None:
                raise self._refuse(
                    decision, action.action_id, "wrong_digest", "the action changed after it was judged"
                )
            raise ActionDenied(
                "refused: the action's digest differs from the judged one",
                action_id=action.action_id,
                by="shim",
            )
        if decision is not None:
            self._accept_decision(decision, action.action_id, actual)
        if self._killed is not None:
            raise SessionKilled(self._killed.reason, by=self._killed.by)
        if decision is not None:
            # An allowed action needs no `started`: proposing it with verdict
            # allow says it runs now, and the hub records it running at once.
            self._enqueue(encode(Started(action_id=action.action_id, digest=actual, started_at=_now_ms())))
        return Approved(action=action, digest=actual, decision=decision)

    def _refuse(self, decision: Decision, action_id: str, code: str, message: str) -> ActionDenied:
        """Report a refused decision to the hub (which audits it); return the error to raise."""
        with contextlib.suppress(ActionDenied, ValueError):
            self._enqueue(
                encode(
                    DecisionRefused(
                        action_id=action_id,
                        decision_id=decision.decision_id,
                        code=code,  # type: ignore[arg-type]
                        message=message[:4000],
                    )
                )
            )
        log.error("towerctl shim: refused decision %s for %s: %s", decision.decision_id, action_id, message)
        return ActionDenied(f"refused: {message}", action_id=action_id, by="shim")

    def _accept_decision(self, decision: Decision, action_id: str, digest: str) -> None:
        """An approval is used only if the pinned hub key signed it, for this
        session's action and digest, before its expiry, and only once."""
        if decision.digest != digest:
            raise self._refuse(
                decision, action_id, "wrong_digest", "the approval is for another digest than the action's"
            )
        key = self.hub_key
        if not decision.signature or key is None:
            raise self._refuse(
                decision, action_id, "unsigned", "the approval is not signed by a known hub key"
            )
        if not ed25519.verify(key, decision.signing_bytes(), bytes.fromhex(decision.signature)):
            raise self._refuse(decision, action_id, "bad_signature", "the approval's signature is invalid")
        if decision.session_id != self.session_id or decision.action_id != action_id:
            raise self._refuse(
                decision, action_id, "wrong_session", "the approval is for another session's action"
            )
        if decision.expires_at is None or decision.expires_at <= _now_ms():
            raise self._refuse(decision, action_id, "expired", "the approval has expired")
        if decision.decision_id in self._used_decisions:
            raise self._refuse(decision, action_id, "replayed", "the approval was already used")
        self._used_decisions.add(decision.decision_id)
