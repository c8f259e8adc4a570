"""What every part of the hub service shares: the refusal, the clock, the state.

:class:`~towerctl.hub.service.HubService` is assembled from mixins, one per
concern (agents, outcomes, decisions, session control), so that each module
owns one thing while call sites keep calling one object. The mixins call one
another through ``self`` (a proposal may pause a session; a decision is sent
with the agent announcements); :class:`ServiceBase` declares that shared state
and those cross-module methods once, so each mixin type-checks on its own and
mypy checks every implementation against the same signature. The declarations
exist only for the type checker: at run time the base is empty and every call
resolves exactly as it did in one class.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Literal

from agent_shim.protocol import ActionInfo
from towerctl.hub.registry import Announced, LiveSession

if TYPE_CHECKING:
    from abc import abstractmethod

    from agent_shim.protocol import Decision
    from towerctl.hub.fanout import Fanout
    from towerctl.hub.metrics import HubMetrics
    from towerctl.hub.registry import Registry
    from towerctl.store import Store
    from towerctl.store.models import ActionRow, DecisionRow

log = logging.getLogger("towerctl.hub")


class Refused(Exception):
    """An operator request that cannot be carried out; ``code`` goes on the wire."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _row_to_info(row: ActionRow, sess: LiveSession | None) -> ActionInfo:
    from agent_shim.protocol import Action

    return ActionInfo(
        action=Action.model_validate_json(row.body),
        session_id=row.session_id,
        agent=sess.agent if sess else "unknown",
        env=sess.env if sess else "unknown",
        digest=row.digest,
        risk=row.risk,  # type: ignore[arg-type]
        reasons=tuple(row.reasons),
        policy_verdict=row.policy_verdict,  # type: ignore[arg-type]
        rule=None,
        explanation="",
        state=row.state,  # type: ignore[arg-type]
        created_at=row.created_at,
        expires_at=row.expires_at,
    )


class ServiceBase:
    """The state and the cross-module methods the service's mixins rely on.

    Attributes are set by ``HubService.__init__``; methods are implemented by
    ``HubService`` (announcements) or by one of the mixins.
    """

    store: Store
    reg: Registry
    fanout: Fanout
    decision_ttl_ms: int
    #: Told of each new proposal and decision (``/metrics``); set by the Hub.
    metrics: HubMetrics | None

    if TYPE_CHECKING:
        # Announcements (service.py).

        @abstractmethod
        def _announce_session(self, sess: LiveSession) -> None: ...

        @abstractmethod
        def _touch_session(self, sess: LiveSession) -> None: ...

        @abstractmethod
        def _announce_action(self, entry: Announced, *, routine: bool = False) -> None: ...

        @abstractmethod
        def alert(
            self, level: Literal["info", "warning", "critical"], message: str, session_id: str | None = None
        ) -> None: ...

        @staticmethod
        @abstractmethod
        async def send_agent(sess: LiveSession, data: str) -> None: ...

        # Decisions (decisions.py).

        @abstractmethod
        def signed_decision(self, row: DecisionRow, session_id: str) -> Decision: ...

        @abstractmethod
        def _schedule_expiry(self, action_id: str, expires_at: int) -> None: ...

        # Session control (control.py).

        @abstractmethod
        async def _pause_for(
            self, sess: LiveSession, why: str, reason: str, *, by: str, notify_agent: bool = True
        ) -> None: ...
