"""What every view shares: the status bar, state updates pushed down, a 1 s tick.

Views hold no state of their own beyond what is on screen: they render the
app's :class:`TowerState`. A view that is not on screen misses deltas, so it
resynchronises (by key, never clear-and-refill) when it comes back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Protocol, cast

from textual import on
from textual.screen import Screen

from towerctl.tui.messages import HubRequested, Request, RequestFinished, StateUpdated
from towerctl.tui.render import Clock, Palette
from towerctl.tui.state import Delta, TowerState
from towerctl.tui.widgets.status_bar import StatusBar

if TYPE_CHECKING:
    from pathlib import Path


class Host(Protocol):
    """What views need from the app (kept narrow so views do not import the app)."""

    state: TowerState
    palette: Palette
    clock: Clock
    db_path: Path | None
    key_path: Path | None

    def hub_now_ms(self) -> int: ...

    def syntax_theme(self) -> str: ...

    def request_audit_refresh(self) -> None: ...


class TowerScreen(Screen[None]):
    """A full-screen view that renders the shared state."""

    VIEW_NAME: ClassVar[str] = "view"
    #: Actions whose check_action answer follows the state; the footer is
    #: rebuilt only when one of these answers changes (a rebuild is not cheap).
    DYNAMIC_ACTIONS: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        super().__init__()
        self._synced_generation = -1
        self._binding_states: tuple[bool | None, ...] = ()

    def update_bindings(self) -> None:
        """Refresh the footer if an action became enabled or disabled."""
        states = tuple(self.check_action(action, ()) for action in self.DYNAMIC_ACTIONS)
        if states != self._binding_states:
            self._binding_states = states
            self.refresh_bindings()

    @property
    def host(self) -> Host:
        return cast(Host, self.app)

    @property
    def state(self) -> TowerState:
        return self.host.state

    def status_bar(self) -> StatusBar:
        bar = StatusBar(id="status")
        bar.view_name = self.VIEW_NAME
        return bar

    def sync(self, delta: Delta | None) -> None:
        """Apply ``delta``, or bring everything up to date when it is None."""

    def tick(self) -> None:
        """Advance countdowns and durations (once a second)."""

    def _refresh_all(self, delta: Delta | None, generation: int | None = None) -> None:
        self._synced_generation = self.state.generation if generation is None else generation
        self.sync(delta)
        self.query_one(StatusBar).show(self.state, self.host.palette)

    def on_mount(self) -> None:
        self._refresh_all(None)
        self.set_interval(1.0, self.tick, name="tick")

    def on_screen_resume(self) -> None:
        if self._synced_generation != self.state.generation:
            self._refresh_all(None)
        self.update_bindings()

    @on(StateUpdated)
    def _state_updated(self, event: StateUpdated) -> None:
        if event.generation <= self._synced_generation:
            return  # already covered by a full resynchronisation
        if event.generation == self._synced_generation + 1:
            self._refresh_all(event.delta, event.generation)
        else:
            # This view missed a batch (it was off screen): a delta cannot go on top.
            self._refresh_all(None)
        self.update_bindings()

    @on(RequestFinished)
    def _request_finished(self, event: RequestFinished) -> None:
        self.request_finished(event.request, event.ok, event.message)

    def submit(self, request: Request) -> None:
        """Ask the app to send ``request`` to the hub; the answer comes back as RequestFinished."""
        self.post_message(HubRequested(request))

    def request_finished(self, request: Request, ok: bool, message: str) -> None:
        """The hub answered something this view asked for."""
