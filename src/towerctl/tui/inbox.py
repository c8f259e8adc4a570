"""Hub events received by the console and not yet applied to its state.

The hub link appends every event as it arrives; the app's flush folds them
into the state in batches (see :mod:`towerctl.tui.app`). Between the two, the
inbox keeps the batch small without losing anything shown: the state needs
only the latest update of a session, so a session's updates replace each
other while they wait.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Final

from agent_shim.protocol import ActionEvent, HubToOperator, SessionEvent, Snapshot

#: Past this many queued events, updates of one action are coalesced as well
#: (the feed then skips intermediate states of an action, e.g. "running").
BACKLOG_COALESCE_ACTIONS: Final = 2000


class Inbox:
    """Hub events waiting for the next flush, oldest first, one update per session.

    A session event replaces the queued one of the same session when the two
    agree on status and connection (only the latest rate, current action and
    last-seen matter, and the feed notes only status changes, so nothing shown
    is lost); one that changes status is queued after it. When the backlog
    passes ``coalesce_actions_at`` (the console is falling behind), action
    events are coalesced by action too, keeping the backlog bounded by what is
    live rather than by how long the console was busy. ``activity`` messages
    (one per hub flush, ~20/s, for every session that acted) queue as they come.
    """

    def __init__(self, coalesce_actions_at: int = BACKLOG_COALESCE_ACTIONS) -> None:
        self._items: list[HubToOperator] = []
        self._base = 0  # absolute index of _items[0]
        self._sessions: dict[str, int] = {}  # session id -> absolute index of its queued event
        self._actions: dict[str, int] = {}
        self._coalesce_actions_at = coalesce_actions_at

    def __len__(self) -> int:
        return len(self._items)

    def put(self, msg: HubToOperator) -> None:
        if isinstance(msg, Snapshot):
            # It replaces everything before it: later events must queue after it.
            self._sessions.clear()
            self._actions.clear()
        elif isinstance(msg, SessionEvent):
            key = msg.session.session_id
            at = self._sessions.get(key, -1) - self._base
            if at >= 0:
                queued = self._items[at]
                if (
                    isinstance(queued, SessionEvent)
                    and queued.session.status == msg.session.status
                    and queued.session.connected == msg.session.connected
                ):
                    self._items[at] = msg
                    return
            self._sessions[key] = self._base + len(self._items)
        elif isinstance(msg, ActionEvent) and len(self._items) >= self._coalesce_actions_at:
            key = msg.action.action.action_id
            at = self._actions.get(key, -1) - self._base
            if at >= 0 and isinstance(self._items[at], ActionEvent):
                self._items[at] = msg
                return
            self._actions[key] = self._base + len(self._items)
        self._items.append(msg)

    def drain(self, budget_s: float) -> Iterator[HubToOperator]:
        """Yield queued events, oldest first, until about ``budget_s`` has passed."""
        deadline = time.perf_counter() + budget_s
        taken = 0
        try:
            for msg in self._items:
                taken += 1
                yield msg
                if taken % 16 == 0 and time.perf_counter() > deadline:
                    return
        finally:
            self._consume(taken)

    def _consume(self, count: int) -> None:
        if count >= len(self._items):
            self._items.clear()
            self._sessions.clear()
            self._actions.clear()
            self._base = 0
        else:
            del self._items[:count]
            self._base += count
