"""What agents say about running their actions: ``started`` and ``report``.

These are the hot path of a busy fleet, so an action the hub still has in
memory is checked without a read and its write is queued for the next commit
(the ``*_queued`` variants); only an action the hub has forgotten (after a
restart or beyond the live limit) is checked against the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from agent_shim.protocol import ActionInfo, Report, Started
from towerctl.hub.registry import FinishedAction, LiveSession, ProposedAction
from towerctl.hub.service_base import Refused, ServiceBase, _row_to_info, now_ms
from towerctl.store import InvalidTransition, NotFound
from towerctl.store.models import ActionRow, OutcomeRow
from towerctl.store.ops import FINISHABLE


async def _committed(write: Awaitable[None]) -> None:
    """Wait for a write; a transition the stored state does not allow is the agent's error."""
    try:
        await write
    except (InvalidTransition, NotFound) as exc:
        raise Refused("illegal_transition", str(exc)) from None


def _done() -> asyncio.Future[None]:
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    fut.set_result(None)
    return fut


class ActionOutcomes(ServiceBase):
    """Moves an action to running and then to its outcome, as the agent reports."""

    @staticmethod
    def _own(sess: LiveSession, session_id: str, digest: str, given: str, what: str) -> None:
        if session_id != sess.session_id:
            raise Refused("unknown_action", "no such action in this session")
        if digest != given:
            raise Refused("digest_mismatch", f"{what} digest differs from the proposed action")

    def started_queued(
        self, sess: LiveSession, msg: Started, *, lazy: bool = False
    ) -> asyncio.Future[None] | None:
        """``started`` for an action the hub has in memory: checked without a
        read and queued for the next commit, in order with this agent's other
        writes; the caller need not wait for the commit (nothing is sent back).
        None when the action is not in memory: use :meth:`started`."""
        live = self.reg.live.get(msg.action_id)
        if live is None:
            return None
        self._own(sess, live.info.session_id, live.info.digest, msg.digest, "started")
        if live.state == "running":
            return _done()  # recorded with the proposal (allowed), or a re-sent started
        if live.state in ("succeeded", "failed"):
            return None  # a re-sent started (after a reconnect): started() answers it
        if live.state not in ("allowed", "approved"):
            raise Refused(
                "illegal_transition", f"action {msg.action_id} is {live.state}; it cannot become running"
            )
        fut = self.store.queue_action_state(
            msg.action_id, "running", actor=f"agent:{sess.agent}", ts_ms=now_ms(), lazy=lazy
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
            await _committed(fut)
            return
        row = await self._stored(sess, msg.action_id, msg.digest, "started")
        if row.state in ("running", "succeeded", "failed"):
            return  # a re-sent started (after a reconnect)
        await _committed(
            self.store.action_state(msg.action_id, "running", actor=f"agent:{sess.agent}", ts_ms=now_ms())
        )
        sess.current_action = row.command
        self._touch_session(sess)

    async def _stored(self, sess: LiveSession, action_id: str, digest: str, what: str) -> ActionRow:
        """The action as stored, for one the hub no longer has in memory."""
        row = await self.store.action(action_id)
        if row is None:
            raise Refused("unknown_action", "no such action in this session")
        self._own(sess, row.session_id, row.digest, digest, what)
        return row

    def report_queued(
        self, sess: LiveSession, msg: Report, *, lazy: bool = False
    ) -> asyncio.Future[None] | None:
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
            self._outcome(msg),
            actor=f"agent:{sess.agent}",
            ts_ms=now_ms(),
            expect=(live.info.session_id, live.state),
            lazy=lazy,
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
            await _committed(fut)
            return
        row = await self._stored(sess, msg.action_id, msg.digest, "report")
        if row.state in ("succeeded", "failed"):
            return  # a re-sent report after a reconnect
        await _committed(
            self.store.action_finished(self._outcome(msg), actor=f"agent:{sess.agent}", ts_ms=now_ms())
        )
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

    def _finished(self, sess: LiveSession, info: ActionInfo | ProposedAction, msg: Report) -> None:
        if sess.current_action == info.action.command:
            sess.current_action = ""
        self._announce_action(
            FinishedAction(info, msg.status, msg.exit_code, msg.duration_ms, msg.output_tail[-2000:]),
            routine=True,
        )
        self._touch_session(sess)
