"""A sliding one-minute action counter for ``max_actions_per_minute``.

Pure on purpose: the caller passes the time (monotonic seconds), so the shim
and the hub can share it and tests never sleep. A sliding window rather than
fixed minute buckets, because a bucket lets an agent fire twice the limit
across a bucket boundary, and a runaway agent is exactly what this is for.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Final

WINDOW_S: Final = 60.0

#: How many timestamps a window keeps at most (never fewer than limit + 1, which
#: is all that "exceeds the limit" needs). Without a cap, an agent in a tight
#: loop could grow the deque without bound inside one minute; past the cap
#: ``rate()`` saturates, which only understates a rate already absurd.
MAX_TRACKED: Final = 10_000


class RateWindow:
    """Actions seen in the last 60 s, and whether one more is too many.

    Every hit is recorded, including the one that exceeds the limit: the
    shim pauses the session on that hit and lets the action run once an
    operator resumes, so it is a real action and must count.
    """

    __slots__ = ("_cap", "_hits", "limit")

    def __init__(self, limit: int | None) -> None:
        # bool is an int; a policy saying ``True`` actions per minute is a bug.
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
            raise TypeError(f"limit must be an int or None, got {type(limit).__name__}")
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be >= 1 or None (unlimited), got {limit}")
        self.limit: Final[int | None] = limit
        self._cap = MAX_TRACKED if limit is None else max(MAX_TRACKED, limit + 1)
        self._hits: deque[float] = deque()

    def _prune(self, now: float) -> None:
        if not math.isfinite(now):
            # NaN compares false with everything and would freeze the window.
            raise ValueError(f"now must be a finite number of seconds, got {now!r}")
        horizon = now - WINDOW_S
        hits = self._hits
        while hits and hits[0] <= horizon:
            hits.popleft()

    def hit(self, now: float) -> bool:
        """Record one action at ``now``; True when it takes the window over the limit."""
        self._prune(now)
        self._hits.append(now)
        while len(self._hits) > self._cap:
            self._hits.popleft()
        return self.limit is not None and len(self._hits) > self.limit

    def rate(self, now: float) -> int:
        """Actions in the 60 s ending at ``now`` (an action exactly 60 s old has aged out)."""
        self._prune(now)
        return len(self._hits)

    def reset(self) -> None:
        """Forget every hit.

        For when an operator resumes a session paused for its rate: without
        it, the very next action would still see a full window and pause the
        session again.
        """
        self._hits.clear()
