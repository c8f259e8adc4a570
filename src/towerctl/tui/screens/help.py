"""Every key, generated from the views' own BINDINGS so it can never drift.

Operators reach for help mid-incident; a help page written by hand would list
keys that no longer exist. This one reads the same binding tables Textual
dispatches from.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Group, RenderableType
from rich.style import Style
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import Static

from towerctl.tui.screens.approval import ApprovalScreen
from towerctl.tui.screens.audit import AuditScreen
from towerctl.tui.screens.base import TowerScreen
from towerctl.tui.screens.fleet import FleetScreen
from towerctl.tui.screens.modals import ConfirmScreen, ReasonScreen
from towerctl.tui.screens.policy import PolicyScreen
from towerctl.tui.screens.policy_edit import PolicyEditScreen
from towerctl.tui.state import Delta
from towerctl.tui.widgets.fleet_table import FleetTable
from towerctl.tui.widgets.footer import TowerFooter
from towerctl.tui.widgets.pending_queue import PendingQueue

_INTRO = (
    "towerctl watches every agent session through the hub. Agents propose actions; policy allows, "
    "denies or asks you. Production is marked ▲PROD in its own colour; frozen environments ❄.\n"
    "Everything works from the keyboard (tab / shift+tab move between panes, arrows move in a table) "
    "and with the mouse. ctrl+p opens the command palette, which lists every action below."
)

_NAMED_KEYS = {
    "question_mark": "?",
    "slash": "/",
    "escape": "esc",
    "enter": "enter",
    "ctrl+s": "ctrl+s",
    "ctrl+p": "ctrl+p",
}


def key_label(key: str) -> str:
    return ", ".join(_NAMED_KEYS.get(k, k) for k in key.split(","))


def _bindings(items: Iterable[BindingType]) -> list[Binding]:
    seen: set[str] = set()
    out = []
    for b in items:
        if isinstance(b, Binding) and b.description and b.key not in seen:
            seen.add(b.key)
            out.append(b)
    return out


def section(title: str, items: Iterable[BindingType]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.title = Text(title, Style(bold=True))
    table.title_justify = "left"
    table.add_column(width=12, style=Style(bold=True))
    table.add_column(width=14)
    table.add_column()
    for b in _bindings(items):
        table.add_row(key_label(b.key), b.description, Text(b.tooltip, Style(dim=True)))
    return table


class HelpScreen(TowerScreen):
    """Keys per view, read from the bindings themselves."""

    VIEW_NAME = "help"
    AUTO_FOCUS = "#help-body"
    BINDINGS = [
        Binding("escape", "app.switch_view('fleet')", "Fleet", show=False, tooltip="Back to the fleet"),
    ]

    def compose(self) -> ComposeResult:
        yield self.status_bar()
        with VerticalScroll(id="help-body"):
            yield Static(id="help-text")
        yield TowerFooter()

    def sync(self, delta: Delta | None) -> None:
        if delta is not None:
            return
        app_bindings: list[BindingType] = list(type(self.app).BINDINGS)
        app_bindings.append(Binding("ctrl+p", "command_palette", "Palette", tooltip="Search every command"))
        parts: list[RenderableType] = [
            Text(_INTRO),
            Text(""),
            section("Everywhere", app_bindings),
            Text(""),
            section("Fleet", [*FleetScreen.BINDINGS, *FleetTable.BINDINGS, *PendingQueue.BINDINGS]),
            Text(""),
            section("Approval", ApprovalScreen.BINDINGS),
            Text(""),
            section("Policy", PolicyScreen.BINDINGS),
            Text(""),
            section("Policy editor", PolicyEditScreen.BINDINGS),
            Text(""),
            section("Audit", AuditScreen.BINDINGS),
            Text(""),
            section("Questions (confirm, reason)", [*ConfirmScreen.BINDINGS, *ReasonScreen.BINDINGS]),
        ]
        self.query_one("#help-text", Static).update(Group(*parts))

