"""Action ids: made by the shim, time-ordered, shown to people by their tail.

Why time-ordered: the hub's store keys every action by its id, and a random
id (uuid4) lands each new action on a random leaf of that index, so every
transaction dirties as many index pages as it holds actions, and the more
the log holds the more distinct pages that is. Measured with
``bench/writer_bench.py --prefill 5000 [--random-ids]`` (hub-shaped batches,
1,000 sessions): with 500,000 actions already in the log, the writer spent
80-90 µs and wrote 17.2-17.5 KiB per allowed action with random ids, 52 µs
and 7.7 KiB with these; with 10,000 in the log, 47-53 µs / 11.2-11.6 KiB
against 43-46 µs / 7.6 KiB. An id that starts with
the time appends to the index instead, and its cost no longer grows with
the log.

The format is UUIDv7 (RFC 9562) written as 32 hex digits, as uuid4().hex was:
48 bits of Unix milliseconds, the version and variant bits, and 74 random
bits, so ids stay unguessable; the time they reveal is in the action's
record anyway. The hub accepts any id matching the protocol's pattern, so
agents with other id schemes still work (they only pay the index cost).

Since ids made in the same second share their first eight digits, people are
shown an id's tail (:func:`short_id`) and may type either end of it
(:func:`id_matches`).
"""

from __future__ import annotations

import os
import time
from typing import Final

#: Characters of an id shown where space is short (``towerctl pending``, the console).
SHORT_ID_CHARS: Final = 12

_RAND_B_BITS: Final = 62
_MS_MASK: Final = (1 << 48) - 1


def new_action_id() -> str:
    """A fresh UUIDv7 as 32 lowercase hex digits (see the module's docstring)."""
    ms = time.time_ns() // 1_000_000 & _MS_MASK
    rand = int.from_bytes(os.urandom(10), "big")  # 80 bits, 74 of them used
    rand_a = rand >> 68 & 0xFFF
    rand_b = rand & ((1 << _RAND_B_BITS) - 1)
    value = ms << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << _RAND_B_BITS | rand_b
    return f"{value:032x}"


def short_id(action_id: str, chars: int = SHORT_ID_CHARS) -> str:
    """The tail of an id: for these ids the random part, for random ids as good as the head."""
    return action_id[-chars:]


def id_matches(action_id: str, typed: str) -> bool:
    """Whether ``typed`` names ``action_id``: the whole id, or either end of it."""
    return bool(typed) and (action_id.startswith(typed) or action_id.endswith(typed))
