"""The key footer, rebuilt only when the keys it shows change.

Textual's Footer rebuilds itself (a dozen widgets, each styled) on every
"bindings updated" signal: every focus change, screen change and enabled
or disabled action, often several times in one frame, and mostly to show
the same keys again. Each rebuild costs a few milliseconds, and an approval
(open, decide, back) sent eight or so, which kept the event loop busy right
when the operator's next key arrived. This footer rebuilds at most once per
frame, and only when the keys, labels or enabled states differ from what it
shows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.widgets import Footer

if TYPE_CHECKING:
    from textual.screen import Screen


class TowerFooter(Footer):
    """A compact Footer that skips rebuilds that would show the same keys."""

    def __init__(self) -> None:
        super().__init__(compact=True)
        self._shown: object = None
        self._rebuild_queued = False

    def _signature(self) -> object:
        """What compose() would show: the visible bindings with their enabled state and tooltip."""
        return (
            self.compact,
            self.show_command_palette,
            tuple(
                (key, binding, enabled, tooltip)
                for key, (_node, binding, enabled, tooltip) in self.screen.active_bindings.items()
                if binding.show or key == self.app.COMMAND_PALETTE_BINDING
            ),
        )

    def bindings_changed(self, screen: Screen[object]) -> None:
        self._bindings_ready = True
        if not screen.app.app_focus:
            return
        if self.is_attached and screen is self.screen and not self._rebuild_queued:
            self._rebuild_queued = True
            self.call_after_refresh(self._rebuild)

    async def _rebuild(self) -> None:
        self._rebuild_queued = False
        if not self.is_attached:
            return
        signature = self._signature()
        if signature != self._shown:
            self._shown = signature
            await self.recompose()
