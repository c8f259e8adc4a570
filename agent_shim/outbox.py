"""The shim's outbox: what the hub must hear about, delivered in order.

Reports written while the hub is unreachable must still arrive, so every
message goes through a bounded queue (full means fail closed: nothing runs
that cannot be reported). Messages sent but not yet known to be processed
are kept until an answer confirms them, and re-sent after a reconnect, so a
hub that dies with frames in its socket buffer loses nothing.
"""

from __future__ import annotations

import asyncio
import json

from agent_shim.errors import ActionDenied
from agent_shim.protocol import MAX_MESSAGE_BYTES
from agent_shim.shim_base import ShimBase


class ShimOutbox(ShimBase):
    """Queueing, resend and confirmation bookkeeping of :class:`~agent_shim.client.Shim`."""

    async def _drained(self) -> None:
        while self._outbox:
            self._outbox_ready.set()
            await asyncio.sleep(0.005)

    def _sent(self, data: str) -> None:
        if data.startswith('{"type":"propose"'):
            key: str | None = str(json.loads(data)["action"]["action_id"])
        elif data.startswith(('{"type":"started"', '{"type":"report"')):
            key = None
        else:
            return  # self_paused / decision_refused: not worth a duplicate record
        self._unconfirmed.append((key, data))
        if key is not None:
            self._unconfirmed_keys.add(key)
        while len(self._unconfirmed) > self._outbox_limit:
            old_key, _ = self._unconfirmed.popleft()
            self._unconfirmed_keys.discard(old_key or "")

    def _confirm(self, action_id: str) -> None:
        """The hub answered the proposal of ``action_id``: it has processed
        everything sent before it."""
        if action_id not in self._unconfirmed_keys:
            return
        while self._unconfirmed:
            key, _ = self._unconfirmed.popleft()
            if key is not None:
                self._unconfirmed_keys.discard(key)
            if key == action_id:
                return

    def _enqueue(self, data: str) -> None:
        if len(data) > MAX_MESSAGE_BYTES // 4 and len(data.encode("utf-8")) > MAX_MESSAGE_BYTES:
            raise ActionDenied(
                f"refused: the message would exceed the hub's {MAX_MESSAGE_BYTES // 1024} KiB frame limit "
                "(shorten dry_run or reason)"
            )
        if len(self._outbox) >= self._outbox_limit:
            # Fail closed: we will not run what we cannot report.
            raise ActionDenied(
                f"report queue full ({self._outbox_limit}); the tower has been unreachable "
                "too long for more actions to run unrecorded"
            )
        self._outbox.append(data)
        self._outbox_ready.set()
