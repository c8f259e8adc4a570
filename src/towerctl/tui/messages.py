"""Messages between the app and its views.

Data flows down and requests flow up. The app owns the hub connection and the
state; it tells views what changed with :class:`StateUpdated` and, for the
approval view, :class:`ActionDecided`. Views never call the hub: they hand a
:class:`Request` to the app (``send_request``), which sends it in a worker and
answers the requester with :class:`RequestFinished`, so that no keypress ever
waits on the network. (A direct call rather than a message that bubbles up:
under load each message hop waits a turn of the event loop, and a decision
should not.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from textual.message import Message
from textual.message_pump import MessagePump

from agent_shim.policy import EnvPolicy
from agent_shim.protocol import ActionInfo
from towerctl.tui.state import Delta

ControlOp = Literal["pause", "resume", "kill"]


class StateUpdated(Message, bubble=False):
    """A batch of hub events was applied; ``delta`` names what changed.

    ``generation`` numbers the batches, so that a view that missed one knows
    to resynchronise instead of applying a delta on top of a gap.
    """

    def __init__(self, delta: Delta, generation: int) -> None:
        super().__init__()
        self.delta = delta
        self.generation = generation


class ActionDecided(Message, bubble=False):
    """An action left the pending state (approved, denied, expired or cancelled)."""

    def __init__(self, info: ActionInfo) -> None:
        super().__init__()
        self.info = info


class ApprovalOpened(Message):
    """The operator asked to look at a pending action (enter on the queue)."""

    def __init__(self, action_id: str) -> None:
        super().__init__()
        self.action_id = action_id


class SessionHighlighted(Message):
    """The fleet table's cursor moved to another session."""

    def __init__(self, session_id: str | None) -> None:
        super().__init__()
        self.session_id = session_id


@dataclass
class Request:
    """Something to send to the hub, and who to tell how it went."""

    origin: MessagePump | None

    def describe(self) -> str:
        raise NotImplementedError


@dataclass
class Decision(Request):
    action_id: str
    digest: str
    approve: bool
    reason: str = ""

    def describe(self) -> str:
        return f"{'approve' if self.approve else 'deny'} {self.action_id}"


@dataclass
class SessionOp(Request):
    session_id: str
    op: ControlOp
    reason: str = ""

    def describe(self) -> str:
        return f"{self.op} {self.session_id}"


@dataclass
class FreezeOp(Request):
    env: str
    frozen: bool
    reason: str = ""

    def describe(self) -> str:
        return f"{'freeze' if self.frozen else 'unfreeze'} {self.env}"


@dataclass
class PolicyOp(Request):
    env: str
    policy: EnvPolicy

    def describe(self) -> str:
        return f"apply policy for {self.env}"


class RequestFinished(Message, bubble=False):
    """The hub answered a request (``ok``) or refused it, with the hub's message."""

    def __init__(self, request: Request, ok: bool, message: str) -> None:
        super().__init__()
        self.request = request
        self.ok = ok
        self.message = message
