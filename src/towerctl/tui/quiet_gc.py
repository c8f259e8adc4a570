"""Garbage collection settings for a long-running, latency-sensitive console."""

from __future__ import annotations

import gc
from typing import Final


class QuietGC:
    """Keep Python's garbage collections short and rare while a console runs.

    A collection stops the event loop while it walks the objects of its
    generations, and keys wait behind it. With the default thresholds a busy
    console (500 sessions, 1,000 events/s) ran a full collection every few
    seconds, 100-330 ms each, the longest pauses it had. Two changes:

    * Everything alive when the first console mounts (modules, classes, the
      app) lives as long as the process: it is frozen out of the collector's
      way (``gc.freeze``), which halves what a full collection walks.
    * Larger young generations (``THRESHOLDS``): most objects a busy console
      makes (events, session updates, rendered lines) live well under a
      second; with room to die young they are no longer promoted to the old
      generation, whose growth is what triggers full collections. Young
      collections take ~5-20 ms, middle ones ~30-70 ms every few seconds, and
      full ones become rare (a minute or more apart) instead of constant.

    Thresholds are restored and nothing is left frozen once the last console
    has exited (tests run many consoles in one process).
    """

    THRESHOLDS: Final = (20_000, 4, 10)
    _holders = 0
    _saved: tuple[int, int, int] = gc.get_threshold()

    @classmethod
    def hold(cls) -> None:
        if cls._holders == 0:
            cls._saved = gc.get_threshold()
            gc.freeze()
            gc.set_threshold(*cls.THRESHOLDS)
        cls._holders += 1

    @classmethod
    def release(cls) -> None:
        cls._holders = max(0, cls._holders - 1)
        if cls._holders == 0:
            gc.set_threshold(*cls._saved)
            gc.unfreeze()
