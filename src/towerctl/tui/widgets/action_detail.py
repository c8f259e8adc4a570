"""Everything an operator needs to decide on one action, rendered literally.

The command is syntax-highlighted (bash for shell, k8s and cloud, SQL for
sql) from its escaped form: highlighting colours tokens but never interprets
them, and :func:`safe_text` has already made every control character a
visible ``\\x..`` escape, so what the operator reads is exactly what the agent
sent. Every other agent-supplied field goes through :func:`agent_text` /
:func:`agent_block`.
"""

from __future__ import annotations

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.measure import Measurement
from rich.panel import Panel
from rich.segment import Segment
from rich.style import Style
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from agent_shim.protocol import ActionInfo
from towerctl.textsafe import safe_text
from towerctl.tui.render import (
    PROD_MARKER,
    Palette,
    agent_block,
    agent_text,
    env_text,
    is_production,
    lexer_for,
)
from towerctl.tui.state import TowerState

_MAX_BLOCK_LINES = 40


def _clip_lines(text: Text, limit: int = _MAX_BLOCK_LINES) -> Text:
    lines = text.split("\n", allow_blank=True)
    if len(lines) <= limit:
        return text
    out = Text("\n").join(lines[:limit])
    out.append(f"\n… {len(lines) - limit} more lines", Style(dim=True, italic=True))
    return out


def command_view(info: ActionInfo, palette: Palette, syntax_theme: str) -> RenderableType:
    """The exact command, highlighted, in a panel titled with its kind."""
    code = Syntax(
        safe_text(info.action.command),
        lexer_for(info.action.kind),
        theme=syntax_theme,
        word_wrap=True,
        # Rich's "default" renders as the terminal's own background, not the view's.
        background_color=palette.background,
    )
    prod = is_production(info.env)
    return Panel(
        code,
        title=Text(f" {info.action.kind} command ", Style(bold=True)),
        title_align="left",
        border_style=Style(color=palette.error if prod else palette.primary),
        padding=(0, 1),
    )


def fields_view(info: ActionInfo, state: TowerState, palette: Palette) -> RenderableType:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style=Style(bold=True), no_wrap=True, justify="right")
    grid.add_column(ratio=1)
    session = state.sessions.get(info.session_id)

    who = agent_text(info.agent, limit=60, style=Style(bold=True))
    if session is not None and session.host:
        who.append(" on ")
        who.append_text(agent_text(session.host, limit=60))
    who.append(f"  (session {info.session_id})", Style(dim=True))
    grid.add_row("agent", who)
    grid.add_row("environment", env_text(info.env, info.env in state.frozen, palette))
    grid.add_row("kind", Text(info.action.kind))
    grid.add_row("target", agent_text(info.action.target or "—"))
    if info.action.cwd:
        grid.add_row("cwd", agent_text(info.action.cwd))

    risk = Text(info.risk.upper(), palette.risk(info.risk))
    if info.action.declared_risk is not None and info.action.declared_risk != info.risk:
        risk.append(f"  (agent declared {info.action.declared_risk})", Style(dim=True))
    grid.add_row("risk", risk)
    if info.reasons:
        reasons = Text()
        for i, reason in enumerate(info.reasons):
            if i:
                reasons.append("\n")
            reasons.append("• ")
            reasons.append_text(agent_text(reason))
        grid.add_row("why this risk", reasons)

    policy = Text(f"{info.policy_verdict}", Style(bold=True))
    if info.rule is not None:
        policy.append(f"  rule: {info.rule.kind} ", Style(dim=True))
        policy.append_text(agent_text(info.rule.match))
        policy.append(f" → {info.rule.verdict}")
        if info.rule.reason:
            policy.append(" — ")
            policy.append_text(agent_text(info.rule.reason, style=Style(italic=True)))
    else:
        policy.append(f"  (the {info.env} default for {info.risk} actions)", Style(dim=True))
    grid.add_row("policy", policy)
    if info.explanation:
        grid.add_row("", agent_block(info.explanation, style=Style(dim=True)))

    grid.add_row("agent's reason", agent_block(info.action.reason) if info.action.reason else _none())
    grid.add_row("rollback plan", agent_block(info.action.rollback) if info.action.rollback else _none())
    grid.add_row("digest", Text(info.digest[:16] + "…", Style(dim=True)))
    others = state.others_online()
    grid.add_row(
        "also online",
        agent_text(", ".join(others)) if others else Text("no other operator", Style(dim=True)),
    )
    parts: list[RenderableType] = [grid]
    if info.action.dry_run:
        parts.append(
            Panel(
                _clip_lines(agent_block(info.action.dry_run)),
                title=Text(" dry run ", Style(bold=True)),
                title_align="left",
                border_style=Style(dim=True),
                padding=(0, 1),
            )
        )
    return Group(*parts)


def _none() -> Text:
    return Text("none given", Style(dim=True, italic=True))


def banner_view(info: ActionInfo, me: str, palette: Palette) -> Text:
    """Where the action stands: waiting, or decided (by whom, why)."""
    if info.state == "pending":
        out = Text("WAITING FOR A DECISION", Style(color=palette.warning, bold=True))
        if is_production(info.env):
            out.append(f"  {PROD_MARKER}", Style(color=palette.error, bold=True))
        return out
    word = info.state.upper()
    out = Text(word, palette.state(info.state) + Style(bold=True, reverse=True))
    if info.decided_by:
        by = "you" if info.decided_by == me else info.decided_by
        out.append(" by ")
        out.append_text(agent_text(by, limit=40, style=Style(bold=True)))
        if info.decided_by != me:
            out.append(" — decided first; your keys are disabled", Style(italic=True))
        if info.decision_reason:
            out.append(": ")
            out.append_text(agent_text(info.decision_reason, limit=200))
    return out


class RenderedOnce:
    """A renderable that renders its content once per set of console options.

    Textual renders a Rich renderable in full to measure its height on every
    layout pass and again to paint it, and opening the approval view takes
    several layout passes: the highlighted command, panels and grid were
    rendered a dozen times (~100 ms) while the operator's keys waited. The
    output is exactly the content's; only repeats are served from memory.
    """

    def __init__(self, content: RenderableType) -> None:
        self.content = content
        self._lines: dict[tuple[object, ...], list[list[Segment]]] = {}
        self._measures: dict[tuple[int, int], Measurement] = {}

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        key = (
            options.min_width,
            options.max_width,
            options.height,
            options.justify,
            options.overflow,
            options.no_wrap,
            options.highlight,
            options.markup,
        )
        lines = self._lines.get(key)
        if lines is None:
            lines = self._lines[key] = console.render_lines(self.content, options, pad=False, new_lines=True)
        for line in lines:
            yield from line

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        key = (options.min_width, options.max_width)
        measured = self._measures.get(key)
        if measured is None:
            measured = self._measures[key] = Measurement.get(console, options, self.content)
        return measured


class ActionDetail(Static):
    """The command and the facts around it; re-rendered only when the action changes."""

    def show(self, info: ActionInfo, state: TowerState, palette: Palette, syntax_theme: str) -> None:
        view = Group(command_view(info, palette, syntax_theme), fields_view(info, state, palette))
        self.update(RenderedOnce(view))
