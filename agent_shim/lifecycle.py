"""The action state machine, as data.

``proposed → allowed | denied | pending → approved | denied | expired →
running → succeeded | failed``, plus ``cancelled`` for actions a kill
overtook. The hub and the store consult this table before every change, so
an illegal jump (running an expired action, deciding twice) is refused in
one place.
"""

from __future__ import annotations

from typing import Final, Literal

from agent_shim.types import ActionState

State = Literal["proposed", ActionState]

TRANSITIONS: Final[dict[str, frozenset[str]]] = {
    "proposed": frozenset({"allowed", "denied", "pending"}),
    "pending": frozenset({"approved", "denied", "expired", "cancelled"}),
    # A lost "started" report must not strand an action: allow the outcome directly.
    "allowed": frozenset({"running", "succeeded", "failed", "cancelled"}),
    "approved": frozenset({"running", "succeeded", "failed", "cancelled"}),
    "running": frozenset({"succeeded", "failed"}),
    "denied": frozenset(),
    "expired": frozenset(),
    "succeeded": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
}

TERMINAL: Final = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)
#: States in which the action may execute (the shim may send ``started``).
RUNNABLE: Final = frozenset({"allowed", "approved"})


class IllegalTransition(ValueError):
    def __init__(self, current: str, new: str) -> None:
        super().__init__(f"action cannot go from {current!r} to {new!r}")
        self.current = current
        self.new = new


def can_transition(current: str, new: str) -> bool:
    return new in TRANSITIONS.get(current, frozenset())


def check_transition(current: str, new: str) -> None:
    """Raise ``IllegalTransition`` unless ``current → new`` is in the table."""
    if not can_transition(current, new):
        raise IllegalTransition(current, new)
