"""The one-line header every view shares: link, who I am, who else is on, approvals, audit.

It is the first thing an operator checks when something looks wrong ("am I
even connected?"), so it leads with the connection state and keeps the most
important items to the left, where an 80-column terminal still shows them.
"""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from towerctl.tui.render import Palette, agent_text, same_text
from towerctl.tui.state import TowerState

_LINK_ICON = {
    "connected": "●",
    "connecting": "◌",
    "reconnecting": "◌",
    "refused": "✖",
    "offline": "○",
}


def audit_summary(state: TowerState, palette: Palette) -> Text:
    """The audit log in a few words: its verdict and how many records it holds.

    The count follows the log (read cheaply and often), the verdict is only as
    recent as the last verification, so while new records wait for theirs the
    header says how far "intact" goes: ``✓ intact to #120 of 135``.
    """
    if not state.audit_short:
        return Text("run `towerctl audit verify`", Style(color=palette.muted))
    if not state.audit_ok:
        return Text(state.audit_short, Style(color=palette.error, bold=True))
    good = Style(color=palette.success)
    behind = state.audit_unverified()
    if behind:
        return Text(f"✓ intact to #{state.audit_verified} of {state.audit_count}", good)
    return Text(f"✓ intact ({state.audit_verified})", good)


class StatusBar(Static):
    """Connection state, operator, other operators online, pending count and audit status."""

    view_name: reactive[str] = reactive("fleet")
    """Which view this bar sits on, shown first so keyboard users know where they are."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._last: tuple[TowerState, Palette] | None = None
        self._shown: Text | None = None

    def on_resize(self) -> None:
        if self._last is not None:
            self.show(*self._last)

    def show(self, state: TowerState, palette: Palette) -> None:
        """Render ``state``; items that do not fit the width are dropped least important first."""
        self._last = (state, palette)
        link = state.link
        colour = {
            "connected": palette.success,
            "refused": palette.error,
            "offline": palette.muted,
        }.get(link.status, palette.warning)
        dim = Style(color=palette.muted)

        view = Text(f" {self.view_name.upper()} ", Style(bold=True, reverse=True))
        status = Text(f"{_LINK_ICON.get(link.status, '?')} {link.status}", Style(color=colour, bold=True))
        where = Text()
        if link.status == "connected" and link.url:
            where.append(link.url.removeprefix("ws://").removeprefix("wss://"), dim)
        problem = Text()
        if link.detail:
            problem.append_text(agent_text(link.detail, limit=70, style=Style(color=colour)))
        me = Text()
        if state.name:
            me.append_text(agent_text(state.name, limit=24, style=Style(bold=True)))
            me.append(f"·{state.role}", dim)
        else:
            me.append("not signed in", dim)
        count = len(state.pending)
        pending = Text(
            f"{count} pending", Style(color=palette.warning, bold=True) if count else dim
        )
        others = state.others_online()
        online = Text("also on: ", dim) if others else Text("no other operator", dim)
        if others:
            online.append_text(agent_text(", ".join(others), limit=40))
        audit = Text("audit: ", dim)
        audit.append_text(audit_summary(state, palette))
        # The audit item's width comes and goes as verification catches up with
        # the count; laying out for its longest form keeps the other items from
        # appearing and vanishing with it.
        audit_room = audit.cell_len
        if state.audit_ok and state.audit_count is not None:
            most = state.audit_count
            audit_room = max(audit_room, len(f"audit: ✓ intact to #{most} of {most}"))

        # (display order, priority: lower survives longer)
        items = [(0, 0, view), (1, 1, status), (2, 2, problem), (3, 7, where), (4, 4, me)]
        items += [(5, 3, pending), (6, 6, online), (7, 5, audit)]
        width = max(self.size.width, 40)
        kept: list[tuple[int, Text]] = []
        used = 0
        for order, _prio, text in sorted(items, key=lambda item: item[1]):
            if not text.plain:
                continue
            cost = (audit_room if text is audit else text.cell_len) + 3
            if used + cost > width and kept:
                continue
            kept.append((order, text))
            used += cost
        out = Text(no_wrap=True, overflow="ellipsis")
        for i, (_order, text) in enumerate(sorted(kept, key=lambda item: item[0])):
            if i == 1:
                out.append(" ")
            elif i > 1:
                out.append(" │ ", dim)
            out.append_text(text)
        if self._shown is not None and same_text(self._shown, out):
            return  # unchanged: an update would cost a layout pass, on every batch of events
        self._shown = out
        self.update(out)
