"""The command palette's towerctl commands (ctrl+p).

Generated from the bindings active where the palette was opened, so every
key an operator can press is also a searchable command with the same
enabled/disabled state (a viewer finds no "Approve"); plus one command per
shipped theme.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider

from towerctl.tui.screens.help import key_label
from towerctl.tui.themes import SHIPPED_THEMES

#: Commands Textual's own provider already lists.
_SYSTEM_NAMES = frozenset({"Quit"})


def _declared_here(node: object, binding: Binding) -> bool:
    """A hidden binding counts if a towerctl class declared it (``t``, ``s``, ``4``)."""
    for cls in type(node).__mro__:
        if cls.__module__.startswith("towerctl.") and binding in cls.__dict__.get("BINDINGS", ()):
            return True
    return False


@dataclass(frozen=True, slots=True)
class PaletteCommand:
    name: str
    help: str
    run: Callable[[], Awaitable[bool]]


class TowerCommands(Provider):
    """Every enabled key binding of the current view, and theme switching."""

    def gather(self) -> list[PaletteCommand]:
        commands: list[PaletteCommand] = []
        seen: set[str] = set()
        for key, active in self.screen.active_bindings.items():
            binding = active.binding
            if not active.enabled or not binding.description or binding.system:
                continue
            if not (binding.show or _declared_here(active.node, binding)):
                continue  # a widget's own plumbing (cursor keys...), not a console action
            name = binding.description.rstrip("…")
            if name in seen or name in _SYSTEM_NAMES:
                continue
            seen.add(name)
            help_text = f"key {key_label(key)}" + (f" · {binding.tooltip}" if binding.tooltip else "")
            run = partial(self.app.run_action, binding.action, active.node)
            commands.append(PaletteCommand(name, help_text, run))
        for theme in SHIPPED_THEMES:
            if theme in self.app.available_themes:
                commands.append(
                    PaletteCommand(
                        f"Theme: {theme}",
                        "switch the colour theme (t cycles)",
                        partial(self.app.run_action, f"set_theme({theme!r})"),
                    )
                )
        return commands

    async def startup(self) -> None:
        self._commands = self.gather()

    async def discover(self) -> Hits:
        for cmd in self._commands:
            yield DiscoveryHit(cmd.name, cmd.run, help=cmd.help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for cmd in self._commands:
            score = matcher.match(cmd.name)
            if score > 0:
                yield Hit(score, matcher.highlight(cmd.name), cmd.run, text=cmd.name, help=cmd.help)
