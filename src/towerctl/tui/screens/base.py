"""What every view shares: the status bar, state updates pushed down, a 1 s tick.

Views hold no state of their own beyond what is on screen: they render the
app's :class:`TowerState`. A view that is not on screen misses deltas, so it
resynchronises (by key, never clear-and-refill) when it comes back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Protocol, cast

from textual import on
from textual.screen import Screen

from towerctl.tui.messages import Request, RequestFinished, StateUpdated
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

    def send_request(self, request: Request) -> None: ...


def visible_screens(stack: list[Screen[object]]) -> list[Screen[object]]:
    """The screens the operator can see: the top one, and below it while the one above is see-through.

    (Textual's ``Screen.is_current`` also counts the screen under an opaque
    one, which would keep a covered view updating and repainting for nothing.)
    """
    if not stack:
        return []
    visible = [stack[-1]]
    for above, below in zip(reversed(stack), reversed(stack[:-1]), strict=False):
        if above.styles.background.a >= 1:
            break
        visible.append(below)
    return visible


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

    def _resync(self) -> None:
        """Catch up after missed batches: everything, re-rendered in full if a full delta was missed."""
        missed_full = self.state.full_generation > self._synced_generation
        self._refresh_all(Delta(full=True) if missed_full else None)

    def on_mount(self) -> None:
        self._refresh_all(None)
        self.set_interval(1.0, self._tick, name="tick")

    @property
    def is_visible(self) -> bool:
        return self in visible_screens(self.app.screen_stack)

    def _tick(self) -> None:
        if self.is_visible:  # a covered view catches up when it comes back
            self.tick()

    def on_screen_resume(self) -> None:
        if self._synced_generation != self.state.generation:
            self._resync()
        self.update_bindings()

    @on(StateUpdated)
    def _state_updated(self, event: StateUpdated) -> None:
        if event.generation <= self._synced_generation:
            return  # already covered by a full resynchronisation
        if event.generation == self._synced_generation + 1:
            self._refresh_all(event.delta, event.generation)
        else:
            # This view missed a batch (it was off screen): a delta cannot go on top.
            self._resync()
        self.update_bindings()

    @on(RequestFinished)
    def _request_finished(self, event: RequestFinished) -> None:
        self.request_finished(event.request, event.ok, event.message)

    def submit(self, request: Request) -> None:
        """Ask the app to send ``request`` to the hub; the answer comes back as RequestFinished."""
        self.host.send_request(request)

    def request_finished(self, request: Request, ok: bool, message: str) -> None:
        """The hub answered something this view asked for."""
