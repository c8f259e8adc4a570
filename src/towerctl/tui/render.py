"""How hub data becomes text on screen: clocks, durations, markers, safe cells.

Every piece of agent-supplied text (agent names, commands, reasons, output)
passes through :func:`agent_text` and becomes a ``rich.text.Text`` object:
Textual interprets plain ``str`` cells and labels as markup, so a command
containing ``[bold red]`` or an escape sequence would otherwise restyle or
rewrite the operator's screen. Text objects are shown as they are.

Colours come from the running theme (``$error`` for production and
destructive risk, ``$warning`` for writes...), so that each theme, including
the high-contrast one, decides what "unmistakable" looks like.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Final, Protocol
from weakref import WeakKeyDictionary

from rich.color import Color as RichColor
from rich.color import ColorParseError
from rich.style import Style
from rich.text import Text
from textual.color import Color
from textual.color import ColorParseError as TextualColorParseError
from textual.widget import Widget

from agent_shim.protocol import ActionInfo, SessionInfo
from towerctl.textsafe import safe_text

PROD_MARKER: Final = "▲PROD"
FROZEN_MARKER: Final = "❄"
_PROD_RE: Final = re.compile(r"(^|[-_.])prod(uction)?($|[-_.])", re.IGNORECASE)


def same_text(a: Text, b: Text) -> bool:
    """Whether two texts look the same (``Text.__eq__`` ignores the base style and justify)."""
    return a.plain == b.plain and a.style == b.style and a.spans == b.spans and a.justify == b.justify


_TITLES: WeakKeyDictionary[Widget, object] = WeakKeyDictionary()


def set_border_title(widget: Widget, title: str | Text) -> None:
    """Set ``widget``'s border title if it differs: Textual repaints the whole widget on every set."""
    key = title if isinstance(title, str) else (title.plain, str(title.style), tuple(title.spans))
    if _TITLES.get(widget) != key:
        _TITLES[widget] = key
        widget.border_title = title


class Clock(Protocol):
    """Where "now" comes from, so that tests and snapshots can freeze it."""

    def now_ms(self) -> int: ...

    def wall(self, ms: int) -> str: ...


class SystemClock:
    """Real time, shown in the operator's local time zone."""

    def now_ms(self) -> int:
        return int(time.time() * 1000)

    def wall(self, ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000).strftime("%H:%M:%S")


class FixedClock:
    """A clock that only moves when told to, shown in UTC: snapshots stay byte-identical."""

    def __init__(self, now_ms: int) -> None:
        self.now = now_ms

    def now_ms(self) -> int:
        return self.now

    def wall(self, ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%H:%M:%S")


#: WCAG AA for normal text: every status colour (muted included) must reach it
#: on the background and the surface it is drawn on.
MIN_CONTRAST: Final = 4.5


def contrast_ratio(a: Color, b: Color) -> float:
    """The WCAG 2.x contrast ratio of two colours, from 1 (none) to 21 (black on white)."""

    def luminance(c: Color) -> float:
        def linear(channel: int) -> float:
            v = channel / 255
            return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4

        return 0.2126 * linear(c.r) + 0.7152 * linear(c.g) + 0.0722 * linear(c.b)

    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def muted_colour(fg: Color, grounds: list[Color]) -> Color:
    """The foreground faded toward the first ground, as far as stays readable on every ground.

    Muted text (ended and disconnected sessions, labels) should recede, but
    not below WCAG AA: 45 % of the way to the background at most, less when
    that would fall under ``MIN_CONTRAST`` on any of ``grounds``.
    """
    for step in range(9, -1, -1):  # 45 %, 40 %, ... 0 % (the foreground itself)
        colour = fg.blend(grounds[0], step * 0.05)
        if all(contrast_ratio(colour, ground) >= MIN_CONTRAST for ground in grounds):
            return colour
    return fg


class Palette:
    """Theme colours by role, read once per theme change."""

    def __init__(self, variables: dict[str, str]) -> None:
        def pick(name: str, fallback: str) -> str:
            value = variables.get(name, "")
            try:
                RichColor.parse(value)
            except ColorParseError:
                return fallback  # e.g. an ANSI theme's "ansi_red": let the terminal decide
            return value

        self.error = pick("error", "red")
        self.warning = pick("warning", "yellow")
        self.success = pick("success", "green")
        self.accent = pick("accent", "cyan")
        self.primary = pick("primary", "blue")
        self.surface = pick("surface", "default")
        self.background = pick("background", "default")
        try:
            fg = Color.parse(variables.get("foreground", ""))
            bg = Color.parse(variables.get("background", ""))
            grounds = [bg]
            # Muted text is also drawn on the tables ($surface) and in the header
            # ($panel: the "offline" link state, labels), so it must stay readable there too.
            for ground in (self.surface, pick("panel", "default")):
                if ground != "default":
                    grounds.append(Color.parse(ground))
            self.muted = muted_colour(fg, grounds).hex
        except TextualColorParseError:
            self.muted = "grey50"

    def risk(self, risk: str) -> Style:
        colour = {"destructive": self.error, "write": self.warning}.get(risk, self.success)
        return Style(color=colour, bold=risk == "destructive")

    def state(self, state: str) -> Style:
        colour = {
            "pending": self.warning,
            "denied": self.error,
            "expired": self.error,
            "failed": self.error,
            "cancelled": self.muted,
            "approved": self.success,
            "allowed": self.success,
            "succeeded": self.success,
            "running": self.primary,
        }.get(state, self.muted)
        return Style(color=colour, bold=state in ("pending", "denied", "failed"))

    def status(self, status: str) -> Style:
        colour = {
            "active": self.success,
            "paused": self.warning,
            "killed": self.error,
            "disconnected": self.muted,
            "ended": self.muted,
        }.get(status, self.muted)
        return Style(color=colour, bold=status in ("paused", "killed"))


def is_production(env: str) -> bool:
    """``prod``, ``production``, ``eu-prod``, ``prod.us``...: any name that says production."""
    return _PROD_RE.search(env) is not None


def agent_text(value: str, *, limit: int | None = None, style: Style | str = "") -> Text:
    """Agent-controlled text as one literal line: escapes visible, never markup."""
    shown = safe_text(value, single_line=True)
    if limit is not None and len(shown) > limit:
        shown = shown[: max(1, limit - 1)] + "…"
    return Text(shown, style=style, no_wrap=True, overflow="ellipsis")


def agent_block(value: str, *, style: Style | str = "") -> Text:
    """Agent-controlled multi-line text (dry-run output, rollback plans), literal."""
    return Text(safe_text(value), style=style)


def env_text(env: str, frozen: bool, palette: Palette) -> Text:
    """The environment cell: production in its own colour with a marker, frozen marked too."""
    out = Text(no_wrap=True, overflow="ellipsis")
    # Markers go first, so that a narrow column truncates the name, never the warning.
    if is_production(env):
        out.append(f"{PROD_MARKER} ", Style(color=palette.error, bold=True))
    if frozen:
        out.append(FROZEN_MARKER, Style(color=palette.accent, bold=True))
    out.append(env, Style(color=palette.error, bold=True) if is_production(env) else "")
    if frozen:
        out.append(" frozen", Style(color=palette.accent, bold=True))
    return out


def duration(ms: int) -> str:
    """A compact, stable width duration: ``42s``, ``7m05s``, ``3h12m``, ``2d04h``."""
    secs = max(0, ms // 1000)
    if secs < 60:
        return f"{secs}s"
    if secs < 3600:
        return f"{secs // 60}m{secs % 60:02d}s"
    if secs < 86400:
        return f"{secs // 3600}h{secs % 3600 // 60:02d}m"
    return f"{secs // 86400}d{secs % 86400 // 3600:02d}h"


def countdown(expires_at: int | None, now_ms: int, palette: Palette) -> Text:
    """Time left before an approval expires, louder as it runs out."""
    if expires_at is None:
        return Text("—", no_wrap=True)
    left = expires_at - now_ms
    if left <= 0:
        return Text("expired", Style(color=palette.error, bold=True), no_wrap=True)
    secs = (left + 999) // 1000
    label = f"{secs // 60}:{secs % 60:02d}"
    if secs <= 30:
        return Text(label, Style(color=palette.error, bold=True), no_wrap=True)
    if secs <= 90:
        return Text(label, Style(color=palette.warning, bold=True), no_wrap=True)
    return Text(label, no_wrap=True)


def status_text(session: SessionInfo, palette: Palette) -> Text:
    label: str = session.status
    if not session.connected and session.status in ("active", "paused"):
        label += " (offline)"
    return Text(label, palette.status(session.status), no_wrap=True)


def outcome_text(info: ActionInfo) -> str:
    """What happened when the action ran, in a few words (trusted numbers only)."""
    if info.state not in ("succeeded", "failed"):
        return ""
    parts = []
    if info.exit_code is not None:
        parts.append(f"exit {info.exit_code}")
    if info.duration_ms is not None:
        parts.append(f"{info.duration_ms / 1000:.1f}s")
    return ", ".join(parts)


def lexer_for(kind: str) -> str:
    """Syntax highlighting for an action's command."""
    return "sql" if kind == "sql" else "bash" if kind in ("shell", "k8s", "cloud") else "text"
