"""Sending the operator's requests (decisions, session controls, freezes, policies) to the hub.

Each request goes out from its own worker, so a decision leaves on the next
turn of the event loop after its key, whatever else is in flight. The outcome
goes back to the view that asked (as :class:`RequestFinished`) and, for
failures and for controls whose effect is not otherwise visible at once, to
the operator as a toast worded in their terms.
"""

from __future__ import annotations

from typing import Any

from textual.app import App

from towerctl.operator import OperatorError
from towerctl.tui.hub_link import HubLink
from towerctl.tui.messages import Decision, FreezeOp, PolicyOp, Request, RequestFinished, SessionOp
from towerctl.tui.render import agent_text
from towerctl.tui.state import TowerState


class RequestSender:
    """Sends requests over ``link`` for ``app``; ``offline`` consoles refuse every one."""

    def __init__(self, app: App[Any], link: HubLink, state: TowerState, *, offline: bool) -> None:
        self._app = app
        self._link = link
        self._state = state
        self._offline = offline

    def send(self, request: Request) -> None:
        """Send ``request`` from a worker; the view hears back through RequestFinished."""
        self._app.run_worker(self._send(request), group="requests", exit_on_error=False)

    async def _send(self, request: Request) -> None:
        client = self._link.client
        ok, message = False, ""
        try:
            if self._offline:
                raise OperatorError("offline: this console shows a snapshot, not a live hub")
            if client is None or not self._link.connected:
                raise OperatorError("not connected to the hub")
            if isinstance(request, Decision):
                await client.decide(request.action_id, request.approve, request.reason, digest=request.digest)
            elif isinstance(request, SessionOp):
                await client.control(request.session_id, request.op, request.reason)
            elif isinstance(request, FreezeOp):
                await client.freeze(request.env, request.frozen, request.reason)
            elif isinstance(request, PolicyOp):
                await client.set_policy(request.env, request.policy)
            ok = True
        except OperatorError as exc:
            message = str(exc)
        except (TimeoutError, OSError) as exc:
            message = f"connection problem: {exc}"
        if request.origin is not None:
            request.origin.post_message(RequestFinished(request, ok, message))
        what = self.describe(request)
        if ok and isinstance(request, SessionOp | FreezeOp):
            self._app.notify(f"{what}: done", timeout=3, markup=False)
        if not ok:
            self._app.notify(f"{what} failed: {message}", severity="error", markup=False)

    def describe(self, request: Request) -> str:
        """The request in the operator's terms: agent names rather than session ids."""
        if isinstance(request, SessionOp):
            session = self._state.sessions.get(request.session_id)
            if session is not None:
                agent = agent_text(session.agent, limit=40).plain
                return f"{request.op} {agent} ({session.env}, {request.session_id})"
        return request.describe()
